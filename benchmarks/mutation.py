"""Mutation score: plant one plausible bug at a time and count how many the test suite notices.

Two halves, printed as one table (a figure, not a pass/fail):

1. **Python modules**, mutated by cosmic-ray (from the registry) in a scratch copy of the repo: the
   adapters, the gated ingest, the table layer, the quality gates and the catalog. cosmic-ray lists
   every mutation; we drop the ones inside type annotations (never evaluated under
   `from __future__ import annotations`, so equivalent by construction), keep one random operator
   per source position, and sample `--sample` positions per module with a fixed seed. Each
   mutant runs the module's own tests (TESTS below) with `-x`; a timeout counts as killed.
2. **Data files** cosmic-ray cannot mutate (`sql/`, `expectations/`, `warehouse/vocab/`): the
   hand-written mutations in DATA_MUTATIONS, each a plausible slip in that file, applied one at a
   time to the scratch copy.

Score = killed / (killed + survived). Run: python benchmarks/mutation.py [--sample N] [--quick].
Results go to benchmarks/results/mutation.json; survivors are listed with their diff. `--recheck FILE`
applies a saved run's survivors again, one at a time, and runs today's tests against each (after new
tests were written for them: a follow-up, not a fresh score).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PYTEST = [PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header"]

# module -> the tests that should catch its bugs (fast ones first: -x stops at the first failure)
TESTS: dict[str, list[str]] = {
    "warehouse/sources/nih_cxr14.py": [
        "tests/test_bad_input_corpus.py",
        "tests/test_emitted_columns.py -k nih",
        "tests/test_longitudinal.py -k nih",
        "tests/test_public_real.py",
    ],
    "warehouse/sources/chexpert.py": ["tests/test_bad_input_corpus.py", "tests/test_emitted_columns.py -k chexpert"],
    "warehouse/sources/padchest.py": [
        "tests/test_padchest.py",
        "tests/test_bad_input_corpus_more.py -k padchest",
        "tests/test_emitted_columns.py -k padchest",
    ],
    "warehouse/sources/iu_xray.py": [
        "tests/test_iu_xray.py",
        "tests/test_bad_archives.py",
        "tests/test_emitted_columns.py -k iu",
    ],
    "warehouse/sources/mimic_qba.py": [
        "tests/test_mimic_qba.py",
        "tests/test_bad_input_corpus_more.py -k qba",
        "tests/test_emitted_columns.py -k qba",
    ],
    "warehouse/sources/rexgradient.py": [
        "tests/test_rexgradient.py",
        "tests/test_bad_input_corpus_more.py -k rex",
    ],
    "warehouse/sources/csvread.py": [
        "tests/test_csv_scan.py",
        "tests/test_bad_input_corpus.py",
        "tests/test_bad_input.py",
        "tests/test_bad_input_corpus_more.py -k padchest",
    ],
    "warehouse/gated.py": [
        "tests/test_volume.py",
        "tests/test_gates.py tests/test_gates_planted.py",
        "tests/test_kills.py",
        "tests/test_tables.py",
    ],
    # QBA's tables are the only subpartitioned ones, and S3 the only remote root
    "warehouse/store.py": [
        "tests/test_store_files.py",
        "tests/test_tables.py",
        "tests/test_kills.py",
        "tests/test_mimic_qba.py",
        "tests/s3/test_s3.py",
    ],
    "warehouse/publish_log.py": ["tests/test_publish_log.py", "tests/test_tables.py"],
    "warehouse/quality.py": [
        "tests/test_gx_batches.py",
        "tests/test_gates.py tests/test_gates_planted.py",
        "tests/test_volume.py",
    ],
    "warehouse/catalog.py": ["tests/test_catalog.py", "tests/test_tables.py"],
    "warehouse/views.py": [
        "tests/test_store_files.py -k duckdb_reads",
        "tests/test_catalog.py",
        "tests/test_tables.py",
        "tests/s3/test_s3.py",
    ],
}
QUICK_MODULES = ["warehouse/publish_log.py", "warehouse/views.py"]


@dataclass(frozen=True)
class DataMutation:
    file: str
    old: str
    new: str
    tests: str  # pytest arguments; " | " separates runs (each may have its own -k)
    slip: str


# Plausible slips in the files the tools cannot mutate; `old` must occur in the file exactly once.
DATA_MUTATIONS = [
    DataMutation(
        "expectations/integrity.sql",
        "HAVING count(DISTINCT split) > 1",
        "HAVING count(DISTINCT split) > 2",
        "tests/test_gates.py tests/test_gates_planted.py",
        "a patient in two splits is no longer found",
    ),
    DataMutation(
        "expectations/integrity.sql",
        "-- check: patient_in_one_split\n-- requires: studies\n-- severity: critical",
        "-- check: patient_in_one_split\n-- requires: studies\n-- severity: warning",
        "tests/test_gates.py tests/test_gates_planted.py",
        "the split-leak gate stops blocking",
    ),
    DataMutation(
        "expectations/integrity.sql",
        "-- check: quarantine_share\n-- requires: quarantine, images\n-- severity: warning",
        "-- check: quarantine_share\n-- requires: quarantine, images\n-- severity: critical",
        "tests/test_gates.py tests/test_gates_planted.py",
        "a warning starts blocking",
    ),
    DataMutation(
        "expectations/studies.json",
        '"min_value": 0,\n        "max_value": 120',
        '"min_value": 0,\n        "max_value": 150',
        "tests/test_gates.py -k studies__age",
        "ages up to 150 pass the gate",
    ),
    DataMutation(
        "expectations/studies.json",
        '"column_list": [\n          "dataset",\n          "study_id"\n        ]',
        '"column_list": [\n          "dataset",\n          "patient_id"\n        ]',
        "tests/test_gates.py -k studies__key | tests/test_tables.py -k reingest",
        "the study key checked on the wrong column",
    ),
    DataMutation(
        "expectations/integrity.sql",
        "FROM reports r JOIN studies s USING (study_id) WHERE r.patient_id IS DISTINCT FROM s.patient_id;",
        "FROM reports r JOIN studies s USING (study_id) WHERE r.patient_id IS DISTINCT FROM r.patient_id;",
        "tests/test_gates.py tests/test_gates_planted.py -k report_patient",
        "a report's patient compared with itself",
    ),
    DataMutation(
        "expectations/images.json",
        '"column": "width",',
        '"column": "height",',
        "tests/test_gates.py tests/test_gates_planted.py -k images__width",
        "the width check reads the height",
    ),
    DataMutation(
        "sql/vocab/unmapped_labels.sql",
        "count(DISTINCT study_id) AS studies",
        "count(study_id) AS studies",
        "tests/test_vocabulary.py",
        "unmapped labels' studies counted per row",
    ),
    DataMutation(
        "warehouse/vocab/findings.csv",
        "endotracheal_tube,support_devices,",
        "endotracheal_tube,,",
        "tests/test_vocabulary.py",
        "a tube lost from under support devices",
    ),
    DataMutation(
        "sql/stats/demographics.sql",
        "WHEN age_years IS NULL THEN 'unknown' WHEN",
        "WHEN age_years IS NULL THEN '80+' WHEN",
        "tests/test_derived_recount.py",
        "unknown ages counted as 80+",
    ),
    DataMutation(
        "sql/stats/demographics.sql",
        "WHEN age_years < 20 THEN '0-20'",
        "WHEN age_years <= 20 THEN '0-20'",
        "tests/test_derived_recount.py",
        "age 20 in the wrong bucket",
    ),
    DataMutation(
        "sql/stats/split_stats.sql",
        "count(DISTINCT patient_id)",
        "count(patient_id)",
        "tests/test_derived_recount.py",
        "patients counted per row",
    ),
    DataMutation(
        "sql/stats/image_labels.sql",
        "WHERE l.dataset = $dataset AND l.image_id IS NULL",
        "WHERE l.dataset = $dataset AND l.image_id IS NULL AND false",
        "tests/test_derived_recount.py tests/test_image_labels.py",
        "study-level labels lost",
    ),
    DataMutation(
        "sql/stats/image_labels.sql",
        "ORDER BY sex <> 'U' DESC",
        "ORDER BY sex <> 'U' ASC",
        "tests/test_derived_recount.py tests/test_image_labels.py",
        "an unknown sex wins over a known one",
    ),
    DataMutation(
        "warehouse/vocab/finding_map.csv",
        "*,Effusion,,pleural_effusion,",
        "*,Effusion,,edema,",
        "tests/test_vocabulary.py -k nih_labels_are_published | tests/test_derived_recount.py -k nih",
        "NIH effusion mapped to edema",
    ),
    DataMutation(
        "warehouse/vocab/finding_map.csv",
        "*,Pneumothorax,C2073565,pneumothorax,",
        "*,Pneumothorax,C2073565,pneumonia,",
        "tests/test_vocabulary.py -k nih_labels_are_published | tests/test_derived_recount.py -k nih",
        "pneumothorax mapped to pneumonia",
    ),
]


def scratch_copy() -> Path:
    """The tracked files of the working tree, in a temp folder the mutations may change."""
    work = Path(tempfile.mkdtemp(prefix="cxr-mutation-"))
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    return work


def run_tests(work: Path, tests: list[str], timeout: float) -> str:
    """'killed', 'survived' or 'timeout' for the suite subset, run against the scratch copy."""
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    deadline = time.monotonic() + timeout
    for spec in tests:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        try:
            proc = subprocess.run([*PYTEST, *spec.split()], cwd=work, env=env, capture_output=True, timeout=left)
        except subprocess.TimeoutExpired:
            return "timeout"
        if proc.returncode not in (0, 5):  # 5: -k selected nothing
            return "killed"
    return "survived"


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every type annotation in the module."""
    spans = []
    for node in ast.walk(ast.parse(path.read_text())):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
            args = node.args
            annotations += [
                a.annotation
                for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                if a is not None
            ]
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations if a is not None]
    return spans


def sample_mutants(session: Path, module: Path, n: int, rng: random.Random) -> int:
    """Keep n mutants: none inside an annotation, one random operator per position; returns how many exist."""
    spans = annotation_spans(module)
    con = sqlite3.connect(session)
    rows = con.execute("SELECT job_id, start_pos_row, start_pos_col, operator_name FROM mutation_specs").fetchall()
    by_position: dict[tuple[int, int], list[str]] = {}
    for job, row, col, _ in rows:
        if not any(start <= (row, col) < end for start, end in spans):
            by_position.setdefault((row, col), []).append(job)
    positions = sorted(by_position)
    chosen = {rng.choice(by_position[p]) for p in rng.sample(positions, min(n, len(positions)))}
    drop = [(job,) for job, *_ in rows if job not in chosen]
    con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
    con.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
    con.commit()
    con.close()
    return len(positions)


def mutate_module(work: Path, module: str, n: int, rng: random.Random, timeout: float, say) -> dict:
    cosmic = Path(PYTHON).with_name("cosmic-ray")
    folder = Path(tempfile.mkdtemp(prefix="cr-", dir=work.parent))
    runner = folder / "run_tests.py"
    runner.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'benchmarks')!r})\nfrom mutation import run_tests\n"
        f"from pathlib import Path\n"
        f"sys.exit(0 if run_tests(Path({str(work)!r}), {TESTS[module]!r}, {timeout!r}) == 'survived'"
        f" else 1)\n"
    )
    config = folder / "config.toml"
    config.write_text(
        f'[cosmic-ray]\nmodule-path = "{work / module}"\ntimeout = {timeout * 1.5}\n'
        f'excluded-modules = []\ntest-command = "{PYTHON} {runner}"\n'
        f'[cosmic-ray.distributor]\nname = "local"\n'
    )
    session = folder / "session.sqlite"
    subprocess.run([str(cosmic), "init", str(config), str(session)], check=True, capture_output=True)
    positions = sample_mutants(session, work / module, n, rng)
    say(f"{module}: {positions} mutable positions, running {min(n, positions)} mutants")
    subprocess.run([str(cosmic), "exec", str(config), str(session)], check=True, capture_output=True)
    con = sqlite3.connect(session)
    results = con.execute(
        "SELECT s.start_pos_row, s.operator_name, r.worker_outcome, r.test_outcome, r.diff "
        "FROM work_results r JOIN mutation_specs s USING (job_id)"
    ).fetchall()
    con.close()
    shutil.rmtree(folder, ignore_errors=True)
    results = [(line, op, (w or "").lower(), (t or "").lower(), diff) for line, op, w, t, diff in results]
    killed = sum(t == "killed" or w == "timeout" for _, _, w, t, _ in results)
    survivors = [
        {"line": line, "operator": op, "diff": diff}
        for line, op, w, t, diff in results
        if t == "survived" and w != "timeout"
    ]
    # an incompetent mutant (one that cannot even be imported) is neither killed nor survived
    return {
        "module": module,
        "positions": positions,
        "run": killed + len(survivors),
        "killed": killed,
        "timeouts": sum(w == "timeout" for _, _, w, _, _ in results),  # counted as killed, shown apart
        "survived": len(survivors),
        "survivors": survivors,
    }


def mutate_data(work: Path, mutation: DataMutation, timeout: float) -> str:
    path = work / mutation.file
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return "stale"  # the file changed: this mutation needs rewriting
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        return run_tests(work, mutation.tests.split(" | "), timeout)
    finally:
        path.write_text(original)


def _diff_change(diff: str) -> tuple[str, str]:
    """(old text, new text) of a one-hunk unified diff, as cosmic-ray records a mutant."""
    old, new = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++", "@@")):
            continue
        if line.startswith("-"):
            old.append(line[1:])
        elif line.startswith("+"):
            new.append(line[1:])
        else:
            text = line[1:] if line.startswith(" ") else line
            old.append(text)
            new.append(text)
    return "\n".join(old), "\n".join(new)


def recheck(path: Path, timeout: float, say) -> int:
    """Run a saved run's surviving mutants again against today's tests: is each still alive?"""
    saved = json.loads(path.read_text())
    work = scratch_copy()
    outcomes = []
    try:
        for module in saved["python"]:
            for s in module["survivors"]:
                file = work / module["module"]
                original = file.read_text()
                old, new = _diff_change(s["diff"])
                if original.count(old) != 1:
                    outcome = "stale"  # the code changed since the run
                else:
                    file.write_text(original.replace(old, new))
                    try:
                        outcome = run_tests(work, TESTS[module["module"]], timeout)
                    finally:
                        file.write_text(original)
                say(f"{module['module']}:{s['line']} {s['operator']} -> {outcome}")
                outcomes.append(
                    {"module": module["module"], "line": s["line"], "operator": s["operator"], "outcome": outcome}
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for o in outcomes:
        print(f"{o['outcome']:<9} {o['module']}:{o['line']} {o['operator']}")
    killed = sum(o["outcome"] in ("killed", "timeout") for o in outcomes)
    print(f"{killed} of {len(outcomes)} survivors of {saved.get('commit')} are killed by today's tests")
    out = REPO / "benchmarks" / "results" / "mutation-recheck.json"
    out.write_text(json.dumps({"of": saved.get("commit"), "outcomes": outcomes}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=12, help="mutants per Python module (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's tests")
    parser.add_argument("--quick", action="store_true", help="CI size: 2 mutants of 2 modules, 2 data mutations")
    parser.add_argument("--module", action="append", help="only these modules (repeatable)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each module's tests")
    parser.add_argument("--data-only", action="store_true", help="only the data-file mutations")
    parser.add_argument("--python-only", action="store_true", help="only the Python modules' mutants")
    parser.add_argument("--recheck", type=Path, help="re-run the survivors saved in this JSON against today's tests")
    args = parser.parse_args()
    if args.recheck:
        return recheck(args.recheck, args.timeout, lambda m: print(m, file=sys.stderr, flush=True))
    rng = random.Random(args.seed)
    modules = [] if args.data_only else args.module or (QUICK_MODULES if args.quick else list(TESTS))
    sample = 2 if args.quick else args.sample
    data = [] if args.python_only else DATA_MUTATIONS[:2] if args.quick else DATA_MUTATIONS
    say = lambda m: print(m, file=sys.stderr, flush=True)
    started = time.perf_counter()
    work = scratch_copy()
    try:
        say(f"scratch copy {work}; baseline run of each module's tests first")
        broken = (
            [] if args.no_baseline else [m for m in modules if run_tests(work, TESTS[m], args.timeout) != "survived"]
        )
        if broken:
            say(f"tests fail without any mutation for {broken}: fix those first")
            return 1
        python: list[dict] = []
        files: list[dict] = []
        for m in modules:  # the JSON is rewritten after each step, so a stopped run keeps what it measured
            python.append(mutate_module(work, m, sample, rng, args.timeout, say))
            save(python, files, time.perf_counter() - started, args, complete=False)
        for mutation in data:
            outcome = mutate_data(work, mutation, args.timeout)
            say(f"{mutation.file}: {mutation.slip} -> {outcome}")
            files.append({"file": mutation.file, "slip": mutation.slip, "outcome": outcome})
            save(python, files, time.perf_counter() - started, args, complete=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(python, files, time.perf_counter() - started, args)
    return 0


def _score(killed: int, total: int) -> str:
    return f"{100 * killed / total:.0f} %" if total else "n/a"


def report(python: list[dict], files: list[dict], seconds: float, args) -> None:
    print(f"{'module':<34} {'positions':>9} {'run':>4} {'killed':>6} {'survived':>8} {'score':>6}")
    for r in python:
        print(
            f"{r['module']:<34} {r['positions']:>9} {r['run']:>4} {r['killed']:>6} {r['survived']:>8} "
            f"{_score(r['killed'], r['run']):>6}"
        )
    killed, run = sum(r["killed"] for r in python), sum(r["run"] for r in python)
    print(f"{'Python modules':<34} {'':>9} {run:>4} {killed:>6} {run - killed:>8} {_score(killed, run):>6}")
    counted = [f for f in files if f["outcome"] != "stale"]
    data_killed = sum(f["outcome"] != "survived" for f in counted)
    print(
        f"{'data files (sql, expectations, vocab)':<34} {'':>9} {len(counted):>4} {data_killed:>6} "
        f"{len(counted) - data_killed:>8} {_score(data_killed, len(counted)):>6}"
    )
    for r in python:
        for s in r["survivors"]:
            print(f"\nSURVIVED {r['module']}:{s['line']} {s['operator']}\n{s['diff']}")
    for f in files:
        if f["outcome"] in ("survived", "stale"):
            print(f"{f['outcome'].upper()} {f['file']}: {f['slip']}")
    timeouts = sum(r.get("timeouts", 0) for r in python) + sum(f["outcome"] == "timeout" for f in files)
    print(f"\n{timeouts} of the killed mutants timed out ({args.timeout:.0f} s) rather than failing a test")
    print(f"{seconds:.0f} s, seed {args.seed}, {args.sample if not args.quick else 2} mutants per module")
    save(python, files, seconds, args, complete=True)


def save(python: list[dict], files: list[dict], seconds: float, args, *, complete: bool) -> None:
    out = REPO / "benchmarks" / "results" / ("mutation-quick.json" if args.quick else "mutation.json")
    out.parent.mkdir(exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    out.write_text(
        json.dumps(
            {
                "commit": commit,
                "python": python,
                "data": files,
                "seconds": round(seconds),
                "seed": args.seed,
                "sample": args.sample,
                "complete": complete,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())

"""MIMIC-Ext-CXR-QBA ingestion at scale: throughput and peak memory against a pandas baseline.

For each size (a fraction of the full dataset's 227,239 studies / 42.2M questions) it generates
the native files, ingests them with the warehouse (read, stream, stage, re-sort, publish, catalog)
in a child process, and measures rows per second and the child's peak RSS. The baseline, measured in
the same run and also in a child process, is the straightforward approach: json.load each qa.json
member, flatten questions, answers and boxes into Python rows, the same for the scene graphs'
labels, build pandas frames, write Parquet. Both sides count the same rows (QA tables + labels).
It runs on the first --baseline-studies members only (its memory grows with the data, so the full
size would not fit); rows per second are comparable, its RSS is reported at that size.
Finally a query for one question type and one grade runs warm against the largest warehouse.

Targets: peak RSS < 4 GiB at 10 % and flat across sizes; throughput >= 5x the baseline; the warm
query well under a second. Exits 1 if one is missed.

Run: python benchmarks/qba.py [--sizes 0.05,0.10] [--baseline-studies 1500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL_STUDIES = 227_239  # and 42,172,827 questions: a size is a fraction of the studies
QUERY = (
    "SELECT study_id, question_id, question FROM qa_questions "
    "WHERE question_type = 'D02_has_finding' AND quality_grade = 'A'"
)
RSS_TARGET_GIB, SPEEDUP_TARGET, QUERY_TARGET_S = 4.0, 5.0, 1.0


def patients_for(studies: int, seed: int = 0) -> int:
    """Patients whose planned cohort has about `studies` studies (the plan's studies per patient)."""
    from warehouse.samples.cohort import plan_mimic_cohort

    per_patient = len(plan_mimic_cohort(2000, seed)) / 2000
    return max(1, round(studies / per_patient))


def generate(root: Path, patients: int, seed: int = 0) -> dict:
    from warehouse.samples import mimic_cxr, mimic_qba
    from warehouse.samples.cohort import plan_mimic_cohort

    cohort = plan_mimic_cohort(patients, seed)
    mimic_cxr.write_samples(root / "mimic_cxr", cohort=cohort, seed=seed)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 15 or done == total:
            last[0] = time.monotonic()
            print(f"    generated {done:,}/{total:,} studies", flush=True)

    return mimic_qba.write_samples(root / "mimic_qba", cohort=cohort, seed=seed, exports=False, progress=progress)


def run_child(args: list[str]) -> tuple[dict, float]:
    """Run this script as a child; its JSON result and its own peak RSS in GiB (from wait4)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {args[0]} failed")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 2**20  # KiB -> GiB


# --- children ------------------------------------------------------------------------------


def child_ingest(src: Path, target: Path) -> dict:
    from warehouse import Warehouse
    from warehouse.config import Settings

    settings = Settings.load(
        env={
            "CXR_WAREHOUSE": str(target / "warehouse"),
            "CXR_CATALOG": str(target / "catalog.duckdb"),
            "CXR_CACHE": str(target / "cache"),
            "CXR_SOURCE_MIMIC_QBA": str(src / "mimic_qba"),
            "CXR_SOURCE_MIMIC_CXR": str(src / "mimic_cxr"),
        },
        cwd=target,
    )
    wh = Warehouse(settings)
    started = time.perf_counter()
    wh.ingest(["mimic_qba"], say=lambda m: None)
    seconds = time.perf_counter() - started
    rows = {
        t: wh.sql(f"SELECT count(*) FROM {t} WHERE dataset = 'mimic_qba'").column(0)[0].as_py()
        for t in ("qa_questions", "qa_answers", "qa_answer_boxes", "labels")
    }
    return {"seconds": seconds, "rows": rows}


def child_baseline(src: Path, members: int, target: Path) -> dict:
    import zipfile

    import pandas as pd

    started = time.perf_counter()
    questions, answers, boxes = [], [], []
    with zipfile.ZipFile(src / "mimic_qba" / "qa.zip") as archive:
        for name in [n for n in archive.namelist() if n.endswith(".qa.json")][:members]:
            doc = json.loads(archive.read(name))
            study = doc["study_id"]
            for q in doc["questions"]:
                questions.append(
                    {
                        "study_id": study,
                        "question_id": q["question_id"],
                        "question_type": q["question_type"],
                        "question": q["question"],
                        "rating": q["question_quality"]["rating"],
                    }
                )
                stack = [(a, None) for a in q["answers"]]
                while stack:
                    a, parent = stack.pop()
                    answers.append(
                        {
                            "study_id": study,
                            "question_id": q["question_id"],
                            "answer_id": a["answer_id"],
                            "parent_answer_id": parent,
                            "answer_level": a["answer_level"],
                            "answer_type": a["answer_type"],
                            "text": a["text"],
                            "positiveness": a["positiveness"],
                            "entities": a["obs_entities"],
                            "regions": a["regions"],
                        }
                    )
                    for image, loc in a["localization"].items():
                        for i, (x1, y1, x2, y2) in enumerate(loc["bboxes"]):
                            boxes.append(
                                {
                                    "study_id": study,
                                    "question_id": q["question_id"],
                                    "answer_id": a["answer_id"],
                                    "image_id": image,
                                    "box_index": i,
                                    "x1": x1,
                                    "y1": y1,
                                    "x2": x2,
                                    "y2": y2,
                                }
                            )
                    stack += [(s, a["answer_id"]) for s in a["sub_answers"]]
    studies = {f"s{r['study_id'].removeprefix('s')}" for r in questions}
    labels = {}
    with zipfile.ZipFile(src / "mimic_qba" / "scene_data.zip") as archive:
        for name in archive.namelist():
            if name.endswith(".scene_graph.json") and name.rsplit("/", 1)[-1].split(".")[0] in studies:
                doc = json.loads(archive.read(name))
                for obs in doc["observations"].values():
                    value = 0 if obs["positiveness"] == "neg" else 1 if obs["probability"] == "positive" else -1
                    for entity in obs["obs_entities"]:
                        key = (doc["study_id"], entity)
                        labels[key] = max(labels.get(key, value), value, key=lambda v: {1: 2, -1: 1, 0: 0}[v])
    labels = [{"study_id": s, "raw_label": e, "value": v} for (s, e), v in labels.items()]
    for name, rows in (("questions", questions), ("answers", answers), ("boxes", boxes), ("labels", labels)):
        pd.DataFrame(rows).to_parquet(target / f"{name}.parquet")
    return {
        "seconds": time.perf_counter() - started,
        "rows": {
            "qa_questions": len(questions),
            "qa_answers": len(answers),
            "qa_answer_boxes": len(boxes),
            "labels": len(labels),
        },
    }


# --- parent --------------------------------------------------------------------------------


def warm_query(target: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(target / "catalog.duckdb"), read_only=True)
    started = time.perf_counter()
    rows = len(con.sql(QUERY).fetchall())
    cold = time.perf_counter() - started
    times = []
    for _ in range(5):
        started = time.perf_counter()
        con.sql(QUERY).fetchall()
        times.append(time.perf_counter() - started)
    files = con.sql(
        "SELECT count(*) FROM glob($g)",
        params={"g": str(target / "warehouse" / "qa_questions" / "dataset=mimic_qba" / "*" / "*.parquet")},
    ).fetchall()[0][0]
    con.close()
    return {"rows": rows, "first_s": cold, "warm_s": statistics.median(times), "files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.05,0.10", help="fractions of the full dataset (studies)")
    parser.add_argument("--baseline-studies", type=int, default=1500)
    parser.add_argument("--keep", type=Path, help="keep generated data and warehouses in this folder")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (
            child_ingest(Path(rest[0]), Path(rest[1]))
            if kind == "ingest"
            else child_baseline(Path(rest[0]), int(rest[1]), Path(rest[2]))
        )
        print(json.dumps(result))
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="cxr-qba-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",")]
    results = {"sizes": [], "query_sql": QUERY}
    try:
        for fraction in sizes:
            patients = patients_for(round(FULL_STUDIES * fraction))
            src, target = work / f"src-{fraction}", work / f"wh-{fraction}"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            print(f"{fraction:.0%} of the dataset: {patients:,} patients", flush=True)
            started = time.perf_counter()
            truth = (
                generate(src, patients)
                if not (src / "truth.json").exists()
                else json.loads((src / "truth.json").read_text())
            )
            (src / "truth.json").write_text(json.dumps(truth))
            print(
                f"  generated {truth['studies']:,} studies, {truth['questions']['total']:,} questions in "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )
            ingest, rss = run_child(["ingest", str(src), str(target)])
            total = sum(ingest["rows"].values())
            assert ingest["rows"]["qa_questions"] == truth["questions"]["total"], ingest["rows"]
            entry = {
                "fraction": fraction,
                "patients": patients,
                "studies": truth["studies"],
                "rows": ingest["rows"],
                "seconds": ingest["seconds"],
                "rows_per_s": total / ingest["seconds"],
                "peak_rss_gib": rss,
            }
            print(
                f"  warehouse: {total:,} rows in {ingest['seconds']:.1f}s = {entry['rows_per_s']:,.0f} rows/s, "
                f"peak RSS {rss:.2f} GiB",
                flush=True,
            )
            results["sizes"].append(entry)
        largest = results["sizes"][-1]
        src = work / f"src-{largest['fraction']}"
        base_dir = work / "baseline"
        base_dir.mkdir(exist_ok=True)
        base, base_rss = run_child(["baseline", str(src), str(args.baseline_studies), str(base_dir)])
        base_total = sum(base["rows"].values())
        results["baseline"] = {
            "studies": args.baseline_studies,
            "rows": base["rows"],
            "seconds": base["seconds"],
            "rows_per_s": base_total / base["seconds"],
            "peak_rss_gib": base_rss,
        }
        print(
            f"baseline (pandas, json.loads per member, first {args.baseline_studies:,} studies): {base_total:,} "
            f"rows in {base['seconds']:.1f}s = {results['baseline']['rows_per_s']:,.0f} rows/s, "
            f"peak RSS {base_rss:.2f} GiB",
            flush=True,
        )
        results["query"] = warm_query(work / f"wh-{largest['fraction']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    speedup = largest["rows_per_s"] / results["baseline"]["rows_per_s"]
    rss = [s["peak_rss_gib"] for s in results["sizes"]]
    flat = max(rss) <= 1.25 * min(rss) + 0.25
    checks = {
        f"peak RSS at {largest['fraction']:.0%} < {RSS_TARGET_GIB} GiB": largest["peak_rss_gib"] < RSS_TARGET_GIB,
        "peak RSS flat across sizes (within 25 % + 0.25 GiB)": flat,
        f"throughput >= {SPEEDUP_TARGET}x baseline ({speedup:.1f}x)": speedup >= SPEEDUP_TARGET,
        f"warm query < {QUERY_TARGET_S}s ({results['query']['warm_s'] * 1000:.0f} ms, "
        f"{results['query']['rows']:,} rows)": results["query"]["warm_s"] < QUERY_TARGET_S,
    }
    print()
    print(f"{'size':>6} {'studies':>9} {'questions':>11} {'answers':>11} {'boxes':>11} {'rows/s':>10} {'RSS GiB':>8}")
    for s in results["sizes"]:
        r = s["rows"]
        print(
            f"{s['fraction']:>6.0%} {s['studies']:>9,} {r['qa_questions']:>11,} {r['qa_answers']:>11,} "
            f"{r['qa_answer_boxes']:>11,} {s['rows_per_s']:>10,.0f} {s['peak_rss_gib']:>8.2f}"
        )
    b = results["baseline"]
    print(
        f"{'base':>6} {b['studies']:>9,} {b['rows']['qa_questions']:>11,} {b['rows']['qa_answers']:>11,} "
        f"{b['rows']['qa_answer_boxes']:>11,} {b['rows_per_s']:>10,.0f} {b['peak_rss_gib']:>8.2f}"
    )
    print()
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    results["checks"] = checks
    out = REPO / "benchmarks" / "results" / "qba.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(checks.values()) else 3  # 3: ran, a target missed


if __name__ == "__main__":
    raise SystemExit(main())

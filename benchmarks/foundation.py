"""Foundation speed figures, each against a baseline measured in the same run.

1. `cxr sql "select 1"` in a fresh process: well under a second, importing neither Dagster nor
   Great Expectations.
2. A cross-dataset cohort query through the catalog answers at least 20x faster than pandas
   reading and filtering the raw CSVs. The query reads the flat derived table image_labels (what
   it exists for); the same cohort over the normalized tables is printed beside it.

The gated ingest against DuckDB's COPY of the same raw files is benchmarks/ingest.py's figure (with its
target, 5x), not repeated here.

Run: python benchmarks/foundation.py [--repeat N]. Exits 3 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from warehouse import Warehouse
from warehouse.config import Settings
from warehouse.fetch import fetch_public

# The cohort as a user writes it against the flat derived table image_labels (one pruned scan) ...
COHORT_SQL = """
SELECT dataset, sex, count(*) AS n FROM image_labels
WHERE is_frontal AND finding = 'pleural_effusion' AND value = 1
GROUP BY ALL ORDER BY ALL
"""
# ... and the same cohort over the normalized tables (reported, not a target).
COHORT_JOIN_SQL = """
SELECT i.dataset, p.sex, count(*) AS n
FROM images i
JOIN labels l ON l.dataset = i.dataset AND l.image_id = i.image_id
JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
WHERE i.is_frontal AND l.finding = 'pleural_effusion' AND l.value = 1
GROUP BY ALL ORDER BY ALL
"""


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_select_one(env: dict, repeat: int) -> dict:
    cmd = [sys.executable, "-m", "warehouse.cli", "sql", "select 1", "--format", "csv"]
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True)  # warm the OS file cache
    seconds, _ = timed(lambda: subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True), repeat)
    python_only, _ = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeat)
    probe = (
        "import sys, warehouse.cli as c; c.main(['sql','select 1','--format','csv']); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster','great_expectations','pandas'}))"
    )
    heavy = (
        subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return {
        "cxr_sql_select_1_s": seconds,
        "bare_python_s": python_only,
        "heavy_imports": heavy,
        "target": "< 1 s and no dagster / great_expectations",
        "pass": seconds < 1.0 and heavy == "[]",
    }


def bench_cohort(wh: Warehouse, public_root: Path, repeat: int) -> dict:
    import pandas as pd

    def pandas_raw():
        nih = pd.read_csv(public_root / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz")
        nih = nih[nih["Finding Labels"].str.split("|").apply(lambda labels: "Effusion" in labels)]
        a = nih.groupby("Patient Gender").size()
        cx = pd.read_csv(public_root / "chexpert" / "train.csv.gz")
        # a Frontal row whose AP/PA says LL or RL is a lateral projection (the CheXpert adapter's view rule)
        frontal = (cx["Frontal/Lateral"] == "Frontal") & ~cx["AP/PA"].isin(["LL", "RL"])
        cx = cx[frontal & (cx["Pleural Effusion"] == 1.0)]
        b = cx.groupby("Sex").size()
        return a, b

    con = wh.connect()
    con.execute(COHORT_SQL).fetchall()  # warm
    con.execute(COHORT_JOIN_SQL).fetchall()
    ours, rows = timed(lambda: con.execute(COHORT_SQL).fetchall(), repeat * 5)
    joined_s, joined_rows = timed(lambda: con.execute(COHORT_JOIN_SQL).fetchall(), repeat * 5)
    con.close()
    baseline, (a, b) = timed(pandas_raw, repeat)
    got = {(d, s): n for d, s, n in rows}
    agree = (
        got[("nih_cxr14", "F")] == a["F"]
        and got[("chexpert", "M")] == b["Male"]
        and sorted(rows) == sorted(joined_rows)
    )
    speedup = baseline / ours
    return {
        "pandas_raw_csv_s": baseline,
        "catalog_query_s": ours,
        "speedup": speedup,
        "results_agree": agree,
        "normalized_join_s": joined_s,
        "normalized_join_speedup": baseline / joined_s,
        "target": "speedup >= 20",
        "pass": speedup >= 20 and agree,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cache = Settings.load().cache
    public = fetch_public(cache, say=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CXR_WAREHOUSE=f"{tmp}/wh", CXR_CATALOG=f"{tmp}/catalog.duckdb", CXR_CACHE=str(cache))
        wh = Warehouse(Settings.load(env=env, cwd=Path(tmp)))
        wh.ingest(["nih_cxr14", "chexpert"], say=lambda m: None)  # gated, derived tables included
        results = {
            "select_1": bench_select_one(env, args.repeat * 3),
            "cohort_vs_pandas": bench_cohort(wh, public.root, args.repeat),
        }
    print(f"{'benchmark':<24} {'figure':<46} {'target':<44} result")
    s = results["select_1"]
    print(
        f"{'cxr sql select 1':<24} {s['cxr_sql_select_1_s']:.3f}s (bare python {s['bare_python_s']:.3f}s), "
        f"heavy imports {s['heavy_imports']:<4} {s['target']:<44} {'PASS' if s['pass'] else 'FAIL'}"
    )
    c = results["cohort_vs_pandas"]
    print(
        f"{'cohort query':<24} {c['catalog_query_s'] * 1000:.1f}ms vs pandas {c['pandas_raw_csv_s']:.2f}s = "
        f"{c['speedup']:.0f}x{'':<10} {c['target']:<44} {'PASS' if c['pass'] else 'FAIL'}"
    )
    print(
        f"{'  (normalized join)':<24} {c['normalized_join_s'] * 1000:.1f}ms = {c['normalized_join_speedup']:.1f}x "
        "pandas (images x labels x patients; for information)"
    )
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "foundation.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(r["pass"] for r in results.values()) else 3  # 3: ran, a target missed


if __name__ == "__main__":
    sys.exit(main())

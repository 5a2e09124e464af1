"""`cxr report` on the default data: one whole process writing report.html, report.md and every CSV.

The default data is every dataset as `cxr ingest` reads it with no configuration (the public metadata and
the generated samples). `--warehouse DIR --catalog FILE` times an existing warehouse instead of ingesting
one first. Target (from the issue): under 30 s. Median of --repeat runs; also records the CPU seconds the
process used (a figure a busy machine does not inflate as much as wall time), the load average, and the
page's size and table and chart counts.

Run: python benchmarks/report.py [--repeat 3] [--warehouse DIR --catalog FILE] [--datasets ID,ID]
Writes benchmarks/results/report.json. Exits 1 if the median misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

TARGET_S = 30.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench(env: dict, out: Path, repeat: int) -> dict:
    times, cpu, line = [], [], ""
    for _ in range(repeat):
        started, cpu_before = time.perf_counter(), _cpu()
        proc = subprocess.run(
            [sys.executable, "-m", "warehouse.cli", "report", "--out", str(out)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        times.append(time.perf_counter() - started)
        cpu.append(_cpu() - cpu_before)
        line = proc.stderr.strip().splitlines()[-1]
    median = statistics.median(times)
    return {
        "seconds": median,
        "runs": times,
        "cpu_seconds": statistics.median(cpu),
        "load_average": os.getloadavg()[0],
        "html_bytes": (out / "report.html").stat().st_size,
        "csv_files": len(list((out / "tables").glob("*.csv"))),
        "said": line,
        "target": f"median < {TARGET_S:.0f} s",
        "pass": median < TARGET_S,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warehouse", help="an existing warehouse root (with --catalog): no ingest")
    parser.add_argument("--catalog", help="its catalog file")
    parser.add_argument("--datasets", help="ingest only these (comma-separated; default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.warehouse:
            env = dict(os.environ, CXR_WAREHOUSE=args.warehouse, CXR_CATALOG=args.catalog or f"{tmp}/catalog.duckdb")
        else:
            env = dict(os.environ, CXR_WAREHOUSE=f"{tmp}/wh", CXR_CATALOG=f"{tmp}/catalog.duckdb")
            chosen = args.datasets.split(",") if args.datasets else None
            Warehouse(Settings.load(env=env, cwd=tmp)).ingest(chosen)
        result = bench(env, tmp / "report", args.repeat)
    print(
        f"cxr report: {result['seconds']:.1f}s median of {args.repeat}, {result['cpu_seconds']:.1f} CPU-s, load "
        f"{result['load_average']:.1f} ({result['said']}; "
        f"{result['html_bytes'] / 1e6:.1f} MB HTML)   target {result['target']}  "
        f"{'PASS' if result['pass'] else 'FAIL'}"
    )
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2))
    return 0 if result["pass"] else 3  # 3: ran, a target missed


if __name__ == "__main__":
    sys.exit(main())

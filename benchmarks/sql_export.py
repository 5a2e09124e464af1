"""`cxr sql` to stdout against `--out`, for CSV and JSON, with the values compared byte for byte.

Both sides are whole `cxr sql` processes writing every row of image_labels (NIH + CheXpert: about
1.36M rows); stdout goes to a file through the shell's redirection, the way a user pipes it.
Target: stdout within 1.5x of --out, and identical bytes. Median of --repeat runs.

Run: python benchmarks/sql_export.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import filecmp
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

QUERY = "SELECT * FROM image_labels"


def _run(cmd: list[str], env: dict, stdout_to: Path | None) -> float:
    started = time.perf_counter()
    if stdout_to is None:
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    else:
        with stdout_to.open("wb") as out:
            subprocess.run(cmd, env=env, check=True, stdout=out, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench(env: dict, tmp: Path, repeat: int) -> dict:
    results = {}
    cxr = [sys.executable, "-m", "warehouse.cli", "sql", QUERY, "--format"]
    for fmt in ("csv", "json"):
        piped, written = tmp / f"stdout.{fmt}", tmp / f"out.{fmt}"
        stdout_s = statistics.median(_run([*cxr, fmt], env, piped) for _ in range(repeat))
        out_s = statistics.median(_run([*cxr, fmt, "--out", str(written)], env, None) for _ in range(repeat))
        same = filecmp.cmp(piped, written, shallow=False)
        if fmt == "json":
            json.loads(written.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        ratio = stdout_s / out_s
        results[fmt] = {
            "stdout_s": stdout_s,
            "out_s": out_s,
            "ratio": ratio,
            "identical": same,
            "bytes": written.stat().st_size,
            "target": "ratio <= 1.5 and identical",
            "pass": ratio <= 1.5 and same,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = dict(os.environ, CXR_WAREHOUSE=f"{tmp}/wh", CXR_CATALOG=f"{tmp}/catalog.duckdb")
        Warehouse(Settings.load(env=env, cwd=tmp)).ingest(["nih_cxr14", "chexpert"])
        results = bench(env, tmp, args.repeat)
    for fmt, r in results.items():
        print(
            f"cxr sql image_labels {fmt:<4} stdout {r['stdout_s']:.2f}s vs --out {r['out_s']:.2f}s = "
            f"{r['ratio']:.2f}x, identical {r['identical']} ({r['bytes'] / 1e6:.0f} MB)   target {r['target']}  "
            f"{'PASS' if r['pass'] else 'FAIL'}"
        )
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "sql_export.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["pass"] for r in results.values()) else 3  # 3: ran, a target missed


if __name__ == "__main__":
    sys.exit(main())

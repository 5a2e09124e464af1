"""A Dagster-launched run of one partition against `cxr ingest` of the same partition.

The Dagster side is `dagster asset materialize --select '*catalog' --partition iu_xray`, which runs
the executor the UI and the schedule use (the definitions' own, in process since the ingest job
stopped paying one subprocess per step), in its own instance with the repo's dagster.yaml. The
baseline is `cxr ingest -d iu_xray` in the same run. Both are whole processes, each into a fresh
warehouse. Target: the Dagster run within 1.5x. Median of --repeat runs.

Run: python benchmarks/dagster_run.py [--repeat 3] [--dataset iu_xray]
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
BIN = Path(sys.executable).parent


def _timed(cmd: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def _fresh(tmp: Path, name: str) -> tuple[dict, Path]:
    home = tmp / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(
        os.environ, DAGSTER_HOME=str(home), CXR_WAREHOUSE=str(home / "wh"), CXR_CATALOG=str(home / "catalog.duckdb")
    )
    return env, home


def bench(dataset: str, repeat: int, tmp: Path) -> dict:
    dagster = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "pipelines.definitions",
        "--select",
        "*catalog",
        "--partition",
        dataset,
    ]
    cli = [str(BIN / "cxr"), "ingest", "-d", dataset]
    dagster_s, cli_s = [], []
    for i in range(repeat):
        env, home = _fresh(tmp, f"cli-{i}")
        cli_s.append(_timed(cli, env, home))
        env, home = _fresh(tmp, f"dagster-{i}")
        dagster_s.append(_timed(dagster, env, home))
    ratio = statistics.median(dagster_s) / statistics.median(cli_s)
    return {
        "dataset": dataset,
        "dagster_materialize_s": statistics.median(dagster_s),
        "cxr_ingest_s": statistics.median(cli_s),
        "ratio": ratio,
        "target": "ratio <= 1.5",
        "pass": ratio <= 1.5,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dataset", default="iu_xray")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        r = bench(args.dataset, args.repeat, Path(folder))
    print(
        f"one partition ({r['dataset']}): dagster asset materialize {r['dagster_materialize_s']:.1f}s vs "
        f"cxr ingest {r['cxr_ingest_s']:.1f}s = {r['ratio']:.2f}x   target {r['target']}  "
        f"{'PASS' if r['pass'] else 'FAIL'}"
    )
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "dagster_run.json").write_text(json.dumps(r, indent=2))
    return 0 if r["pass"] else 3  # 3: ran, a target missed


if __name__ == "__main__":
    sys.exit(main())

"""`python -m benchmarks`: every speed figure with its same-run baseline, then one JSON of them all.

Each benchmark is its own script (run it alone for details); this runs them in turn as child
processes, prints their lines, and writes benchmarks/results/all.json. `--small` is the quick size (one
repeat, small inputs) that proves the scripts still run.

A script exits 0 when it meets its targets, 3 when it ran and missed one (a figure, not a failure), and
anything else when it broke; this exits 1 when any script broke.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# script -> (arguments for a full run, arguments for --small)
SUITE = {
    "foundation.py": (["--repeat", "3"], ["--repeat", "1"]),
    "ingest.py": (["--repeat", "2"], ["--repeat", "1", "--no-full"]),
    "sql_export.py": (["--repeat", "3"], ["--repeat", "1"]),
    "dagster_run.py": (["--repeat", "3"], ["--repeat", "1"]),
    "cohort_queries.py": ([], ["--quick"]),
    "qba.py": (["--sizes", "0.05,0.10,0.20"], ["--sizes", "0.01"]),
    "mutation.py": (["--sample", "12"], ["--quick"]),
    "report.py": (["--repeat", "3"], ["--repeat", "1", "--datasets", "mimic_cxr"]),
    "cohort_run.py": (["--repeat", "3"], ["--repeat", "1"]),  # reads the configured catalog
    "scaling.py": ([], ["--base", "2000", "--sizes", "1,2"]),
}
OUTCOME = {0: "met", 3: "missed"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CI size: quick sizes, one repeat")
    parser.add_argument("--only", action="append", help="run only these scripts (repeatable)")
    parser.add_argument("--skip", action="append", default=[], help="skip these scripts (repeatable)")
    args = parser.parse_args()
    chosen = [s for s in (args.only or SUITE) if s not in args.skip]
    summary = {}
    for script in chosen:
        full, small = SUITE[script]
        started = time.perf_counter()
        print(f"== {script}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), *(small if args.small else full)])
        summary[script] = {"exit": proc.returncode, "seconds": round(time.perf_counter() - started, 1)}
    for name, run in summary.items():
        print(f"{name:<20} {OUTCOME.get(run['exit'], 'BROKE (exit %d)' % run['exit'])} ({run['seconds']} s)")
    results = HERE / "results"
    figures = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json")) if p.stem != "all"}
    (results / "all.json").write_text(json.dumps({"runs": summary, "figures": figures}, indent=1, default=str))
    return 1 if any(r["exit"] not in OUTCOME for r in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

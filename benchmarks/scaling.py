"""Ingest time and peak memory at 1x, 4x and 16x of a generated dataset, and storage against raw input.

The dataset is NIH ChestX-ray14 grown from the real metadata: size k is k copies of the first
--base rows of Data_Entry_2017_v2020.csv (and their boxes), copy j with its patient ids moved by
j x 100,000, so every copy is new patients, studies and images under the same shapes, labels and
value distributions. Each size is ingested through the gated library path (`Warehouse.ingest`:
every gate, the derived tables, the Delta commits, the catalog) in a fresh process into a fresh
warehouse; the child reports its wall time (imports excluded) and peak RSS (imports included).

Targets: time grows linearly (the 16x run's seconds per row within 1.5x of the 1x run's, and
falling rather than rising is fine) and peak memory stays flat (16x within 1.5x of 1x).

Storage: the published Delta files of each run against the raw CSV bytes it read, and the whole
default warehouse (if `cxr ingest` has built it) against every dataset's source files.

Run: python benchmarks/scaling.py [--base 25000] [--sizes 1,4,16]. Exits 3 if a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_TIME_PER_ROW_RATIO, MAX_PEAK_RATIO = 1.5, 1.5
PATIENT_SHIFT = 100_000  # NIH patient ids stop at 30,805

INGEST = """
import json, resource, sys, time
from pathlib import Path
from warehouse import Warehouse
from warehouse.config import Settings
root, source = Path(sys.argv[1]), sys.argv[2]
env = {"CXR_WAREHOUSE": str(root / "wh"), "CXR_CATALOG": str(root / "catalog.duckdb"),
       "CXR_SOURCE_NIH_CXR14": source, "CXR_CACHE": sys.argv[3]}
wh = Warehouse(Settings.load(env=env, cwd=root))
started, cpu = time.perf_counter(), time.process_time()
[result] = wh.ingest(["nih_cxr14"])
seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
files = [f for t in result.versions for f in wh.store.partition_files(t, "nih_cxr14", result.versions[t])]
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "status": result.status, "rows": result.rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "published_bytes": sum(f["bytes"] for f in files)}))
"""


def _moved(image_index: str, copy: int) -> str:
    """00000013_005.png in copy 2 -> 00200013_005.png: a new patient's image, same follow-up number."""
    patient, rest = image_index.split("_", 1)
    return f"{int(patient) + copy * PATIENT_SHIFT:08d}_{rest}"


def generate(raw_root: Path, folder: Path, base: int, copies: int) -> int:
    """Write `copies` shifted copies of the first `base` Data_Entry rows and their boxes; the raw bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(raw_root / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for _, row in zip(range(base), reader, strict=False)]
    kept = {row[0] for row in rows}
    with gzip.open(raw_root / "nih_cxr14" / "BBox_List_2017.csv.gz", "rt", newline="") as f:
        reader = csv.reader(f)
        box_header = next(reader)
        boxes = [row for row in reader if row[0] in kept]
    patient = header.index("Patient ID")
    with open(folder / "Data_Entry_2017_v2020.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for copy in range(copies):
            for row in rows:
                moved = list(row)
                moved[0] = _moved(row[0], copy)
                moved[patient] = str(int(row[patient]) + copy * PATIENT_SHIFT)
                writer.writerow(moved)
    with open(folder / "BBox_List_2017.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(box_header)
        for copy in range(copies):
            writer.writerows([_moved(row[0], copy), *row[1:]] for row in boxes)
    return sum(p.stat().st_size for p in folder.iterdir())


def _bytes_under(path: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in skip]
        total += sum((Path(dirpath) / f).stat().st_size for f in filenames)
    return total


def default_storage() -> dict | None:
    """The configured warehouse's published bytes against the source files of every dataset it holds."""
    sys.path.insert(0, str(REPO))
    from warehouse import Warehouse, publish_log
    from warehouse.config import Settings
    from warehouse.ingest import source_location

    settings = Settings.load()
    wh = Warehouse(settings)
    if not Path(settings.warehouse).is_dir():
        return None
    adopted = publish_log.adopted(wh.store)
    if not adopted:
        return None
    raw = sum(_bytes_under(Path(source_location(settings, d))) for d in adopted)
    published = sum(
        f["bytes"] for d, p in adopted.items() for t, v in p.versions.items() for f in wh.store.partition_files(t, d, v)
    )
    return {
        "datasets": len(adopted),
        "raw_bytes": raw,
        "published_bytes": published,
        "ratio": published / raw,
        "warehouse_dir_bytes": _bytes_under(Path(settings.warehouse), skip=("_staging",)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=25_000, help="Data_Entry rows at size 1x (default 25,000)")
    parser.add_argument("--sizes", default="1,4,16")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sys.path.insert(0, str(REPO))
    from warehouse.config import Settings
    from warehouse.fetch import fetch_public

    settings = Settings.load()
    public = fetch_public(settings.cache, say=lambda m: print(m, file=sys.stderr))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in sizes:
            source = Path(tmp) / f"src-{k}"
            raw_bytes = generate(Path(public.root), source, args.base, k)
            root = Path(tmp) / f"run-{k}"
            root.mkdir()
            proc = subprocess.run(
                [sys.executable, "-c", INGEST, str(root), str(source), str(settings.cache)],
                cwd=REPO,
                capture_output=True,
                text=True,
                env={n: v for n, v in os.environ.items() if not n.startswith("CXR_")},
            )
            if proc.returncode != 0:
                raise SystemExit(f"ingest at {k}x failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            if run["status"] != "published":
                raise SystemExit(f"ingest at {k}x was {run['status']}")
            run |= {"size": k, "source_rows": args.base * k, "raw_bytes": raw_bytes}
            run["us_per_row"] = run["seconds"] / run["source_rows"] * 1e6
            runs[k] = run
            print(
                f"{k:>3}x {run['source_rows']:>9,} rows  {run['seconds']:6.1f} s ({run['cpu_s']:.1f} s CPU)  "
                f"{run['us_per_row']:6.1f} us/row  peak {run['peak_mb']:6.0f} MB  "
                f"published {run['published_bytes'] / 1e6:6.1f} MB of {raw_bytes / 1e6:6.1f} MB raw CSV",
                flush=True,
            )
    first, last = runs[sizes[0]], runs[sizes[-1]]
    time_ratio = last["us_per_row"] / first["us_per_row"]
    peak_ratio = last["peak_mb"] / first["peak_mb"]
    storage = default_storage()
    results = {
        "runs": runs,
        "time_per_row_ratio": time_ratio,
        "peak_ratio": peak_ratio,
        "linear": time_ratio <= MAX_TIME_PER_ROW_RATIO,
        "flat_memory": peak_ratio <= MAX_PEAK_RATIO,
        "default_warehouse_storage": storage,
    }
    print(
        f"time per row at {sizes[-1]}x / {sizes[0]}x: {time_ratio:.2f} (target <= {MAX_TIME_PER_ROW_RATIO}) "
        f"{'PASS' if results['linear'] else 'FAIL'}"
    )
    print(
        f"peak memory at {sizes[-1]}x / {sizes[0]}x: {peak_ratio:.2f} (target <= {MAX_PEAK_RATIO}) "
        f"{'PASS' if results['flat_memory'] else 'FAIL'}"
    )
    if storage:
        print(
            f"default warehouse ({storage['datasets']} datasets): {storage['published_bytes'] / 1e6:.1f} MB published "
            f"of {storage['raw_bytes'] / 1e6:.1f} MB source files = {storage['ratio']:.2f}x "
            f"({storage['warehouse_dir_bytes'] / 1e6:.1f} MB on disk with retained versions and logs)"
        )
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if results["linear"] and results["flat_memory"] else 3


if __name__ == "__main__":
    sys.exit(main())

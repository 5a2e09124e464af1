"""Spark reads the warehouse's Delta tables: row counts against deltalake and the DuckDB catalog.

Every Delta table under the warehouse root is read by Spark at its current snapshot and counted,
whole and per dataset, and the counts are compared with
  (a) deltalake's own count, `DeltaTable(uri).to_pyarrow_dataset().count_rows()`, and
  (b) the DuckDB catalog, `SELECT count(*) FROM <table>` (and `... GROUP BY dataset`).

Offline there is no delta-spark (its jars come from Maven), so Spark reads the Parquet files of the
current snapshot, as listed by `DeltaTable(uri).file_uris()`, with `basePath` set to the table
folder so the Hive-style partition columns (`dataset`, and `split` for the QA tables) come back
from the paths. It never lists the folder itself: the folder also holds the files of older
versions, kept for time travel until vacuum. A table using deletion vectors or column mapping
cannot be read faithfully that way and is reported UNSUPPORTED (read it with delta-spark).

The catalog reads, per dataset, the table versions named by the dataset's newest complete publish
(_publish_log), so after an unfinished publish or with a catalog older than the tables it can
differ from the head; the script then names the version the catalog adopted. See
docs/scale-out.md (section 2) before installing pyspark into the project's venv: the script also
runs from a separate venv holding pyspark, deltalake, duckdb, pyarrow and platformdirs.

Spark runs local[2] with a 2g driver, no UI and quiet logs. Timed: the session start, and each
Spark, deltalake and DuckDB count (median of --repeat runs, after one warm-up job).

Run: python benchmarks/spark_read.py [--root DIR] [--catalog FILE] [--tables a,b] [--repeat N]
  --root     the warehouse root (default: Settings.load().warehouse)
  --catalog  the DuckDB catalog (default: Settings.load().catalog); compared only if it exists
  --tables   comma-separated tables (default: every folder under root with a _delta_log, except
             internal ones whose name starts with '_', such as _publish_log)
Writes benchmarks/results/spark_read.json. Exits 0 when every count matches, 1 on a mismatch or
an unsupported table, 2 on bad arguments; prints 'skipped: ...' and exits 0 when Java, pyspark or
Delta tables are missing (or the root is remote: Spark would need hadoop-aws from Maven).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from warehouse.config import Settings

PARTITION_COLUMN = "dataset"
# Spark reads raw Parquet files here; these table features change what the files mean
UNSUPPORTED_FEATURES = {"deletionVectors", "columnMapping"}
LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
# the pyspark driver (PythonGatewayServer) counts as a shell: without a level of its own Spark
# lowers the console threshold to WARN and says so
logger.pygateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.pygateway.level = error
"""


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def java_version() -> tuple[str | None, int | None]:
    """The java pyspark will launch (JAVA_HOME first, then PATH) and its major version."""
    java = None
    if os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.exists() else None
    java = java or shutil.which("java")
    if not java:
        return None, None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return out.strip().splitlines()[0] if out.strip() else java, None
    major = int(match.group(1))
    major = int(match.group(2)) if major == 1 and match.group(2) else major  # "1.8.0" is Java 8
    return out.strip().splitlines()[0], major


def preflight() -> tuple[str | None, str | None]:
    """(reason to skip, java description)."""
    if importlib.util.find_spec("pyspark") is None:
        return "skipped: pyspark not installed (pip install pyspark)", None
    described, major = java_version()
    if described is None:
        return "skipped: java not found (install a JDK 17+ or set JAVA_HOME)", None
    if major is not None and major < 17:
        return f"skipped: Spark 4 needs Java 17+, found {described}", described
    return None, described


def discover(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p / "_delta_log").is_dir() and not p.name.startswith("_")
    )


def start_spark(log_dir: Path):
    # pyspark 4.x warns about pandas 3 on import; nothing here goes through pandas
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    # Spark puts SPARK_CONF_DIR on the driver's classpath, where log4j2 finds log4j2.properties
    (log_dir / "log4j2.properties").write_text(LOG4J2)
    os.environ["SPARK_CONF_DIR"] = str(log_dir)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cxr-spark-read")
        .config("spark.driver.memory", "2g")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        # partition values stay strings: a dataset id that looks like a number is still an id
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def unsupported(dt) -> list[str]:
    protocol = dt.protocol()
    features = set(protocol.reader_features or []) & UNSUPPORTED_FEATURES
    mode = (dt.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mode and mode != "none":
        features.add("columnMapping")
    return sorted(features)


def by_dataset(rows) -> dict[str, int]:
    return {str(k): int(n) for k, n in rows}


def read_delta(uri: str, repeat: int) -> dict:
    from deltalake import DeltaTable

    dt = DeltaTable(uri)
    files = dt.file_uris()
    seconds, rows = timed(lambda: dt.to_pyarrow_dataset().count_rows(), repeat)
    per = {}
    if PARTITION_COLUMN in dt.schema().to_arrow().names:
        grouped = (
            dt.to_pyarrow_dataset()
            .to_table(columns=[PARTITION_COLUMN])
            .group_by(PARTITION_COLUMN)
            .aggregate([([], "count_all")])
        )
        per = by_dataset(zip(grouped[PARTITION_COLUMN].to_pylist(), grouped["count_all"].to_pylist()))
    return {
        "version": dt.version(),
        "files": files,
        "partition_columns": dt.metadata().partition_columns,
        "rows": rows,
        "per_dataset": per,
        "count_s": seconds,
        "unsupported": unsupported(dt),
    }


def read_spark(spark, base: str, files: list[str], repeat: int) -> dict:
    if not files:  # an empty snapshot: Spark cannot infer a schema from no files, and there is nothing to count
        return {"rows": 0, "per_dataset": {}, "open_s": 0.0, "count_s": 0.0, "by_dataset_s": 0.0, "columns": []}
    open_s, df = timed(lambda: spark.read.option("basePath", base).parquet(*files), repeat)  # reads a footer
    count_s, rows = timed(df.count, repeat)
    per, per_s = {}, 0.0
    if PARTITION_COLUMN in df.columns:
        per_s, collected = timed(lambda: df.groupBy(PARTITION_COLUMN).count().collect(), repeat)
        per = by_dataset((r[PARTITION_COLUMN], r["count"]) for r in collected)
    return {
        "rows": rows,
        "per_dataset": per,
        "open_s": open_s,
        "count_s": count_s,
        "by_dataset_s": per_s,
        "columns": df.columns,
    }


def read_catalog(con, table: str, repeat: int) -> dict:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        seconds, (rows,) = timed(lambda: con.execute(f"SELECT count(*) FROM {quoted}").fetchone(), repeat)
    except Exception as e:
        return {"rows": None, "per_dataset": {}, "count_s": None, "error": str(e).splitlines()[0]}
    try:
        per = by_dataset(con.execute(f"SELECT {PARTITION_COLUMN}, count(*) FROM {quoted} GROUP BY 1").fetchall())
    except Exception:
        per = {}
    return {"rows": int(rows), "per_dataset": per, "count_s": seconds}


def catalog_info(con) -> tuple[dict[str, str], dict[tuple[str, str], int]]:
    """The catalog's own record: catalog_meta (root, warehouse version) and, per (table, dataset), the
    Delta version it adopted from the publish log (catalog_partitions). Empty when it has none."""
    import duckdb

    meta, adopted = {}, {}
    try:
        meta = dict(con.execute("SELECT key, value FROM catalog_meta").fetchall())
    except duckdb.Error:
        pass
    try:
        adopted = {
            (t, d): int(v)
            for t, d, v in con.execute("SELECT table_name, dataset, delta_version FROM catalog_partitions").fetchall()
        }
    except duckdb.Error:
        pass
    return meta, adopted


def verdict(*counts) -> bool:
    """At least two sides answered and all that answered agree."""
    present = [c for c in counts if c is not None]
    return len(present) >= 2 and len(set(present)) == 1


def compare(spark, con, adopted: dict, root: Path, table: str, repeat: int) -> dict:
    base = str(root / table)
    delta = read_delta(base, repeat)
    if delta["unsupported"]:
        spark_side = {"rows": None, "per_dataset": {}, "open_s": None, "count_s": None, "by_dataset_s": None}
    else:
        spark_side = read_spark(spark, base, delta["files"], repeat)
    cat = read_catalog(con, table, repeat) if con is not None else None
    cat_rows = cat["rows"] if cat else None
    cat_per = cat["per_dataset"] if cat else {}
    per = {}
    for d in sorted(set(spark_side["per_dataset"]) | set(delta["per_dataset"]) | set(cat_per)):
        s, dl, c = spark_side["per_dataset"].get(d), delta["per_dataset"].get(d), cat_per.get(d)
        # with a catalog, a dataset it lacks is a mismatch; without one, Spark and deltalake must agree
        per[d] = {"spark": s, "delta": dl, "catalog": c, "match": verdict(s, dl, c) and (cat is None or c is not None)}
        if (table, d) in adopted:
            per[d]["catalog_version"] = adopted[(table, d)]
    match = (
        not delta["unsupported"]
        and verdict(spark_side["rows"], delta["rows"], cat_rows)
        and (cat is None or cat_rows is not None)
        and all(p["match"] for p in per.values())
    )
    entry = {
        "version": delta["version"],
        "files": len(delta["files"]),
        "partition_columns": delta["partition_columns"],
        "spark_rows": spark_side["rows"],
        "delta_rows": delta["rows"],
        "catalog_rows": cat_rows,
        "match": match,
        "per_dataset": per,
        "spark_open_s": spark_side["open_s"],
        "spark_count_s": spark_side["count_s"],
        "spark_by_dataset_s": spark_side["by_dataset_s"],
        "delta_count_s": delta["count_s"],
        "catalog_count_s": cat["count_s"] if cat else None,
    }
    if delta["unsupported"]:
        entry["unsupported"] = delta["unsupported"]
    if cat and cat.get("error"):
        entry["catalog_error"] = cat["error"]
    return entry


def fmt(n) -> str:
    return "-" if n is None else f"{n:,}"


def ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def report(figures: dict) -> list[str]:
    """Print the tables; return the tables that do not match."""
    f = figures
    print(
        f"Spark {f['spark_version']} (pyspark {f['pyspark_version']}), {f['java']}; "
        f"{f['master']}, driver {f['driver_memory']}"
    )
    print(
        f"session start {f['session_start_s']:.2f}s, first job {f['first_job_s']:.2f}s; "
        f"times are medians of {f['repeat']}"
    )
    print(f"root {f['root']}; catalog {f['catalog'] or '(none)'}\n")
    head = (
        f"{'table':<16} {'ver':>4} {'files':>5} {'spark rows':>12} {'delta rows':>12} {'catalog rows':>12} "
        f"{'match':<11} {'spark open':>10} {'count':>7} {'by dataset':>10} {'delta count':>11} {'catalog':>8}"
    )
    print(head)
    print("-" * len(head))
    for table, r in f["tables"].items():
        state = "UNSUPPORTED" if r.get("unsupported") else ("yes" if r["match"] else "NO")
        print(
            f"{table:<16} {r['version']:>4} {r['files']:>5} {fmt(r['spark_rows']):>12} "
            f"{fmt(r['delta_rows']):>12} {fmt(r['catalog_rows']):>12} {state:<11} {ms(r['spark_open_s']):>10} "
            f"{ms(r['spark_count_s']):>7} {ms(r['spark_by_dataset_s']):>10} {ms(r['delta_count_s']):>11} "
            f"{ms(r['catalog_count_s']):>8}"
        )
    print(f"\n{'table':<16} {'dataset':<16} {'spark':>12} {'delta':>12} {'catalog':>12} match")
    for table, r in f["tables"].items():
        for d, p in r["per_dataset"].items():
            print(
                f"{table:<16} {d:<16} {fmt(p['spark']):>12} {fmt(p['delta']):>12} {fmt(p['catalog']):>12} "
                f"{'yes' if p['match'] else 'NO'}"
            )
    problems = [t for t, r in f["tables"].items() if not r["match"]]
    for t in problems:
        r = f["tables"][t]
        why = (
            f"uses {', '.join(r['unsupported'])}: read it with delta-spark"
            if r.get("unsupported")
            else r.get("catalog_error") or "counts differ"
        )
        print(f"MISMATCH {t}: {why}")
        for d, p in r["per_dataset"].items():
            if not p["match"] and p.get("catalog_version") is not None and p["catalog_version"] != r["version"]:
                # the catalog reads the version the dataset's newest complete publish names, not the head
                print(
                    f"  {d}: the catalog adopted {t} version {p['catalog_version']} (head {r['version']}): "
                    "a publish not logged as complete, or a catalog older than the table (cxr catalog rebuild)"
                )
    if f.get("catalog_root") and f["catalog_root"] != f["root"]:
        print(f"note: the catalog was built for {f['catalog_root']}, not {f['root']}")
    return problems


def main() -> int:
    settings = Settings.load()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=settings.warehouse, help="warehouse root (default: %(default)s)")
    parser.add_argument("--catalog", default=str(settings.catalog), help="DuckDB catalog (default: %(default)s)")
    parser.add_argument("--tables", help="comma-separated tables (default: every Delta table under the root)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per count; the median is reported")
    args = parser.parse_args()

    reason, java = preflight()
    if reason:
        print(reason)
        return 0
    if "://" in args.root and not args.root.startswith("file://"):
        print(
            f"skipped: {args.root} is remote; Spark would need hadoop-aws (from Maven) to read it "
            "(see docs/scale-out.md)"
        )
        return 0
    root = Path(args.root.removeprefix("file://")).resolve()
    if args.tables:
        tables = [t.strip() for t in args.tables.split(",") if t.strip()]
        missing = [t for t in tables if not (root / t / "_delta_log").is_dir()]
        if missing:
            print(f"not Delta tables under {root}: {', '.join(missing)}", file=sys.stderr)
            return 2
    else:
        tables = discover(root)
    if not tables:
        print(f"skipped: no Delta tables (folders with a _delta_log) under {root}")
        return 0

    import duckdb

    catalog = Path(args.catalog)
    con = duckdb.connect(str(catalog), read_only=True) if catalog.exists() else None
    if con is None:
        print(f"note: no catalog at {catalog}; comparing Spark with deltalake only", file=sys.stderr)
    meta, adopted = catalog_info(con) if con is not None else ({}, {})
    catalog_root = meta.get("warehouse_root")
    if catalog_root and "://" not in catalog_root.removeprefix("file://"):
        catalog_root = str(Path(catalog_root.removeprefix("file://")).resolve())
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-spark-") as tmp:
            started = time.perf_counter()
            spark = start_spark(Path(tmp))
            session_s = time.perf_counter() - started
            try:
                first_job_s, _ = timed(lambda: spark.range(1000).count(), 1)  # JIT and executor warm-up
                results = {table: compare(spark, con, adopted, root, table, args.repeat) for table in tables}
                spark_version = spark.version
            finally:
                spark.stop()
    finally:
        if con is not None:
            con.close()

    import pyspark

    figures = {
        "spark_version": spark_version,
        "pyspark_version": pyspark.__version__,
        "java": java,
        "master": "local[2]",
        "driver_memory": "2g",
        "root": str(root),
        "catalog": str(catalog) if con is not None else None,
        "catalog_root": catalog_root,
        "catalog_warehouse_version": meta.get("warehouse_version") or None,
        "repeat": args.repeat,
        "session_start_s": session_s,
        "first_job_s": first_job_s,
        "tables": results,
    }
    problems = report(figures)
    figures["all_match"] = not problems
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "spark_read.json").write_text(json.dumps(figures, indent=2, default=str))
    return 3 if problems else 0  # 3: ran, a target missed


if __name__ == "__main__":
    sys.exit(main())

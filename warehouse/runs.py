"""The run log: one small JSON record per ingest run, kept under <root>/_runs/ and listed as `ingest_runs`.

A record says what ran, when, how it ended (`published`, `blocked` by a gate, or `failed` with
its error), the rows it wrote and rejected, and the Delta version of every table it committed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from .store import Store

RUNS_DIR = "_runs"
STATUSES = ("published", "blocked", "failed")

RUN_FIELDS = pa.schema(
    [
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("engine", pa.string()),
        ("status", pa.string()),
        ("started_at", pa.string()),
        ("finished_at", pa.string()),
        ("seconds", pa.float64()),
        ("rows_written", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("tables", pa.string()),
        ("versions", pa.string()),
        ("warehouse_version", pa.int64()),
        ("checks_passed", pa.int32()),
        ("checks_failed", pa.int32()),
        ("message", pa.string()),
    ]
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_run(store: Store, record: dict) -> None:
    """Write one run record (a small JSON object); the catalog lists them."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"run status must be one of {STATUSES}, not {record.get('status')!r}")
    stamp = record["started_at"].replace(":", "")
    path = f"{store.root}/{RUNS_DIR}/{stamp}-{record['run_id']}-{record['dataset']}.json"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, json.dumps(record, sort_keys=True).encode())


def runs_table(store: Store) -> pa.Table:
    try:
        paths = sorted(store.fs.glob(f"{store.root}/{RUNS_DIR}/*.json"))
    except FileNotFoundError:
        paths = []
    rows = []
    for p in paths:
        record = json.loads(store.fs.cat_file(p))
        for key in ("tables", "versions"):
            record[key] = json.dumps(record.get(key) or {}, sort_keys=True)
        rows.append({f.name: record.get(f.name) for f in RUN_FIELDS})
    return pa.Table.from_pylist(rows, schema=RUN_FIELDS)

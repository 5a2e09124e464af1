"""The query catalog: a local DuckDB file of views over the published Parquet, plus documentation.

The catalog holds no data of its own; everything in it is derived from the store (manifests,
run records) and the schemas, so it is rebuilt whole rather than updated. It is written to a
temporary file and renamed over the old one: readers never meet a half-built catalog, and an
open reader (a notebook, a running query) never blocks a rebuild with DuckDB's single-writer
lock — it keeps reading the file it opened.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from . import findings, schema
from .sources.base import DatasetInfo
from .store import Manifest, Store

RUNS_DIR = "_runs"


@dataclass(frozen=True)
class CatalogSummary:
    path: Path
    tables: dict[str, int]          # table -> rows
    partitions: int
    removed_files: int


def register_store(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Let DuckDB read a remote warehouse root through its fsspec filesystem (no extensions needed)."""
    if not store.local and not con.filesystem_is_registered(store.protocol):
        con.register_filesystem(store.fs)


Part = tuple[list[str], "list[str] | None"]  # files, and their columns (None: the table's current columns)


def view_sql(table: schema.Table, parts: list[Part]) -> str:
    """SELECT over a table's files in canonical column order, or an empty relation of the right types.

    Each part (a partition) is read on its own, and a column its files lack (written before the
    column existed) reads as a typed NULL, so a schema that grows never breaks older partitions.
    """
    selects = []
    for files, columns in parts:
        if not files:
            continue
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        present = set(columns) if columns is not None else set(table.column_names)
        projection = ", ".join(f'"{c.name}"' if c.name in present
                               else f'CAST(NULL AS {schema.duckdb_type(c.type)}) AS "{c.name}"' for c in table.columns)
        selects.append(f"SELECT {projection} FROM read_parquet([{listing}])")
    if selects:
        return "\nUNION ALL\n".join(selects)
    typed = ", ".join(f'CAST(NULL AS {schema.duckdb_type(c.type)}) AS "{c.name}"' for c in table.columns)
    return f"SELECT {typed} WHERE false"


def manifest_parts(store: Store, manifests: list[Manifest]) -> list[Part]:
    return [(store.file_urls(m), store.columns_of(m)) for m in manifests]


def build_catalog(store: Store, path: Path, *, datasets: list[DatasetInfo], sources: dict[str, str],
                  extra_sql: list[tuple[str, str]] = ()) -> CatalogSummary:
    """Rebuild the catalog file at `path` from the store's current manifests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    manifests = store.manifests()
    by_table: dict[str, list[Manifest]] = {}
    for m in manifests:
        if m.table in schema.TABLES:
            by_table.setdefault(m.table, []).append(m)
    counts: dict[str, int] = {}
    con = duckdb.connect(str(tmp))
    try:
        register_store(con, store)
        for name, spec in schema.TABLES.items():
            con.execute(f'CREATE VIEW "{name}" AS {view_sql(spec, manifest_parts(store, by_table.get(name, [])))}')
            counts[name] = sum(m.rows for m in by_table.get(name, []))
        _create(con, "catalog_partitions", _partitions_table(manifests))
        _create(con, "catalog_tables", _tables_table(by_table))
        _create(con, "catalog_columns", _columns_table())
        _create(con, "catalog_datasets", _datasets_table(datasets, sources, by_table))
        _create(con, "catalog_vocabularies", _vocabularies_table())
        _create(con, "ingest_runs", _runs_table(store))
        _create(con, "findings", findings.vocabulary().to_arrow())
        _create(con, "finding_map", findings.mapping().to_arrow())
        for name, sql in extra_sql:
            con.execute(sql)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
    removed = store.collect_garbage()
    return CatalogSummary(path, counts, len(manifests), len(removed))


def _create(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    con.register("_incoming", data)
    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _incoming')
    con.unregister("_incoming")


def _partitions_table(manifests: list[Manifest]) -> pa.Table:
    return pa.Table.from_pylist([{
        "table_name": m.table, "dataset": m.dataset, "version": m.version, "rows": m.rows,
        "files": len(m.files), "bytes": sum(f["bytes"] for f in m.files), "published_at": m.created_at,
        "source_fingerprint": m.source_fingerprint, "run_id": m.run_id, "schema_version": m.schema_version,
    } for m in manifests], schema=pa.schema([
        ("table_name", pa.string()), ("dataset", pa.string()), ("version", pa.string()), ("rows", pa.int64()),
        ("files", pa.int32()), ("bytes", pa.int64()), ("published_at", pa.string()),
        ("source_fingerprint", pa.string()), ("run_id", pa.string()), ("schema_version", pa.int32()),
    ]))


def _tables_table(by_table: dict[str, list[Manifest]]) -> pa.Table:
    rows = []
    for name, spec in schema.TABLES.items():
        parts = by_table.get(name, [])
        rows.append({
            "table_name": name, "description": spec.description, "key": list(spec.key),
            "derived": spec.derived, "rows": sum(m.rows for m in parts), "partitions": len(parts),
            "datasets": sorted(m.dataset for m in parts),
            "last_ingest": max((m.created_at for m in parts), default=None),
        })
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("table_name", pa.string()), ("description", pa.string()), ("key", pa.list_(pa.string())),
        ("derived", pa.bool_()), ("rows", pa.int64()), ("partitions", pa.int32()),
        ("datasets", pa.list_(pa.string())), ("last_ingest", pa.string()),
    ]))


def _columns_table() -> pa.Table:
    rows = []
    for name, spec in schema.TABLES.items():
        for position, column in enumerate(spec.columns, start=1):
            allowed = schema.VOCABULARIES.get(column.vocabulary) if column.vocabulary else None
            rows.append({
                "table_name": name, "column_name": column.name, "position": position,
                "type": schema.duckdb_type(column.type), "nullable": column.nullable,
                "is_key": column.name in spec.key or column.name == "dataset",
                "vocabulary": column.vocabulary, "allowed_values": [str(v) for v in allowed] if allowed else None,
                "description": column.description,
            })
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("table_name", pa.string()), ("column_name", pa.string()), ("position", pa.int32()), ("type", pa.string()),
        ("nullable", pa.bool_()), ("is_key", pa.bool_()), ("vocabulary", pa.string()),
        ("allowed_values", pa.list_(pa.string())), ("description", pa.string()),
    ]))


def _datasets_table(datasets: list[DatasetInfo], sources: dict[str, str],
                    by_table: dict[str, list[Manifest]]) -> pa.Table:
    rows = []
    for info in datasets:
        parts = [m for ms in by_table.values() for m in ms if m.dataset == info.id]
        rows.append({
            "dataset": info.id, "name": info.name, "version": info.version, "access": info.access,
            "citation": info.citation, "homepage": info.homepage, "source_location": sources.get(info.id),
            "default_data": info.default_data, "tables": list(info.tables), "links_to": info.links_to,
            "source_fingerprint": next((m.source_fingerprint for m in parts if m.source_fingerprint), None),
            "last_ingest": max((m.created_at for m in parts), default=None),
            "ingested": bool(parts),
        })
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("dataset", pa.string()), ("name", pa.string()), ("version", pa.string()), ("access", pa.string()),
        ("citation", pa.string()), ("homepage", pa.string()), ("source_location", pa.string()),
        ("default_data", pa.string()), ("tables", pa.list_(pa.string())), ("links_to", pa.string()),
        ("source_fingerprint", pa.string()),
        ("last_ingest", pa.string()), ("ingested", pa.bool_()),
    ]))


def _vocabularies_table() -> pa.Table:
    return pa.Table.from_pylist([
        {"vocabulary": name, "position": i, "value": str(value)}
        for name, values in schema.VOCABULARIES.items() for i, value in enumerate(values, start=1)
    ], schema=pa.schema([("vocabulary", pa.string()), ("position", pa.int32()), ("value", pa.string())]))


RUN_FIELDS = pa.schema([
    ("run_id", pa.string()), ("dataset", pa.string()), ("engine", pa.string()), ("status", pa.string()),
    ("started_at", pa.string()), ("finished_at", pa.string()), ("seconds", pa.float64()),
    ("rows_written", pa.int64()), ("rows_rejected", pa.int64()), ("tables", pa.string()),
    ("checks_passed", pa.int32()), ("checks_failed", pa.int32()), ("message", pa.string()),
])


def record_run(store: Store, record: dict) -> None:
    """Append one run record (a small JSON object) to the store; the catalog lists them."""
    path = f"{store.root}/{RUNS_DIR}/{record['started_at'].replace(':', '')}-{record['run_id']}-{record['dataset']}.json"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, json.dumps(record, sort_keys=True).encode())


def _runs_table(store: Store) -> pa.Table:
    try:
        paths = sorted(store.fs.glob(f"{store.root}/{RUNS_DIR}/*.json"))
    except FileNotFoundError:
        paths = []
    rows = []
    for p in paths:
        record = json.loads(store.fs.cat_file(p))
        record["tables"] = json.dumps(record.get("tables", {}), sort_keys=True)
        rows.append({f.name: record.get(f.name) for f in RUN_FIELDS})
    return pa.Table.from_pylist(rows, schema=RUN_FIELDS)

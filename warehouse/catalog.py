"""The query catalog: a local DuckDB file of views over the complete publishes, plus documentation.

The catalog holds no data of its own. It is derived from the publish log, the Delta tables, the
run log and the schemas, so it is rebuilt whole (`cxr catalog rebuild`) rather than updated:
written to a temporary file and renamed over the old one, so readers never meet a half-built
catalog and an open reader never blocks a rebuild.

It adopts, per dataset, the newest complete publish (warehouse.publish_log): every view reads the
files of the table versions that publish names, so images of one run never meet studies of
another. Views name files under the warehouse root configured when the catalog was built;
`catalog_meta` records that root, and a reader whose configured root differs rebuilds the catalog
instead of reading another location (warehouse.api).

The file is written in DuckDB's v1.0 storage format, so DuckDB 1.x clients (the `duckdb` CLI)
open it too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from . import findings, publish_log, schema
from .memory import beyond_limit_if_needed
from .queries import named_query
from .runs import runs_table
from .scratch import scratch_dir
from .sources.base import DatasetInfo
from .store import Store
from .views import CATALOG_LAYOUT, create_views, delta_files_sql, register_store

STORAGE_COMPATIBILITY = "v1.0.0"
# The image units' joins spill to a scratch folder past this; DuckDB's default is 80 % of the machine, and it fills
# what it is given: the catalog build of the default data peaked at 860 MB with it, 565 MB with this (0.7 s more).
BUILD_MEMORY_LIMIT = "256MB"


@dataclass(frozen=True)
class CatalogSummary:
    path: Path
    tables: dict[str, int]  # table -> rows
    partitions: int
    warehouse_version: int | None


@dataclass(frozen=True)
class Partition:
    table: str
    dataset: str
    version: int
    files: list[dict]
    publish: publish_log.Publish

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files)


def adopted_partitions(store: Store, publishes: dict[str, publish_log.Publish]) -> list[Partition]:
    """The files of every table partition the adopted publishes name."""
    parts = []
    for dataset, publish in sorted(publishes.items()):
        for table, version in sorted(publish.versions.items()):
            if table in schema.TABLES:
                parts.append(
                    Partition(table, dataset, version, store.partition_files(table, dataset, version), publish)
                )
    return parts


def build_catalog(
    store: Store, path: Path, *, datasets: list[DatasetInfo], as_of: int | datetime | None = None
) -> CatalogSummary:
    """Rebuild the catalog file at `path` from the complete publishes (now, or as of a past version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    publishes = publish_log.adopted(store, as_of)
    log_version = (
        publish_log.current_version(store)
        if as_of is None
        else max((p.warehouse_version for p in publishes.values()), default=None)
    )
    parts = adopted_partitions(store, publishes)
    by_table: dict[str, list[Partition]] = {}
    for p in parts:
        by_table.setdefault(p.table, []).append(p)
    heads = {name: _head_version(store, name) for name in schema.TABLES}
    spill = scratch_dir("catalog")
    con = duckdb.connect(
        str(tmp),
        config={
            "storage_compatibility_version": STORAGE_COMPATIBILITY,
            "temp_directory": str(spill),
        },
    )
    built = False
    try:
        register_store(con, store)
        relations = {}
        for name, spec in schema.TABLES.items():
            chosen = by_table.get(name, [])
            files = [f["url"] for p in chosen for f in p.files]
            columns = (
                set().union(*(store.columns_at(name, v) for v in {p.version for p in chosen})) if chosen else set()
            )
            relations[name] = [delta_files_sql(spec, files, columns)]
        # DuckDB binds a table macro when it is created: bound over empty typed views it reads no file (over
        # S3 each bind over the files opened every footer), and the macros call the views by name.
        create_views(con, {})
        _create(con, "catalog_meta", _meta_table(store, log_version, as_of))
        _create(con, "catalog_partitions", _partitions_table(parts))
        _create(con, "catalog_tables", _tables_table(by_table, heads))
        _create(con, "catalog_columns", _columns_table())
        _create(con, "catalog_datasets", _datasets_table(datasets, publishes))
        _create(con, "catalog_vocabularies", _vocabularies_table())
        _create(con, "ingest_runs", runs_table(store))
        _create(con, "findings", findings.vocabulary().to_arrow())
        _create(con, "finding_map", findings.mapping().to_arrow())
        _create(con, "finding_hierarchy", findings.hierarchy().to_arrow())
        from .cohorts import IMAGE_UNITS_TABLE, image_units_sql
        from .macros import register

        linked = tuple(sorted(info.id for info in datasets if info.links_to))
        # typed and empty for the macros to bind over, filled once the views read the files
        con.execute(f"CREATE TABLE {IMAGE_UNITS_TABLE} AS {image_units_sql(linked)}")
        _create(con, "catalog_queries", register(con, linked))
        create_views(con, relations)
        _within_limit(con, f"INSERT INTO {IMAGE_UNITS_TABLE} {image_units_sql(linked)}")
        _create(con, "catalog_unmapped_labels", con.sql(named_query("vocab", "unmapped_labels").sql).to_arrow_table())
        con.execute("CHECKPOINT")
        built = True
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
        if not built:
            tmp.unlink(missing_ok=True)
    os.replace(tmp, path)
    return CatalogSummary(
        path, {name: sum(p.rows for p in by_table.get(name, [])) for name in schema.TABLES}, len(parts), log_version
    )


def _within_limit(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run the build's big statement within BUILD_MEMORY_LIMIT, spilling past it, or without it if DuckDB cannot.

    Only this statement: a checkpoint that cannot pin its blocks is a fatal error that closes the database."""
    con.execute(f"SET memory_limit = '{BUILD_MEMORY_LIMIT}'")
    try:
        beyond_limit_if_needed(con, lambda: con.execute(sql))
    finally:
        con.execute("RESET memory_limit")


def remove_debris(path: Path) -> list[Path]:
    """Temporary catalog files left by a rebuild that was killed."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _head_version(store: Store, table: str) -> int | None:
    dt = store.delta(table)
    return dt.version() if dt is not None else None


def _create(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    con.register("_incoming", data)
    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _incoming')
    con.unregister("_incoming")


def _meta_table(store: Store, log_version: int | None, as_of) -> pa.Table:
    meta = {
        "warehouse_root": store.root_url,
        "warehouse_version": "" if log_version is None else str(log_version),
        "as_of": "" if as_of is None else str(as_of),
        "schema_version": str(schema.SCHEMA_VERSION),
        "catalog_layout": CATALOG_LAYOUT,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return pa.table({"key": list(meta), "value": list(meta.values())})


def _partitions_table(parts: list[Partition]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "table_name": p.table,
                "dataset": p.dataset,
                "delta_version": p.version,
                "rows": p.rows,
                "files": len(p.files),
                "bytes": sum(f["bytes"] for f in p.files),
                "published_at": p.publish.published_at.isoformat(timespec="seconds"),
                "run_id": p.publish.run_id,
                "warehouse_version": p.publish.warehouse_version,
                "source_fingerprint": p.publish.source_fingerprint,
                "schema_version": p.publish.schema_version,
            }
            for p in parts
        ],
        schema=pa.schema(
            [
                ("table_name", pa.string()),
                ("dataset", pa.string()),
                ("delta_version", pa.int64()),
                ("rows", pa.int64()),
                ("files", pa.int32()),
                ("bytes", pa.int64()),
                ("published_at", pa.string()),
                ("run_id", pa.string()),
                ("warehouse_version", pa.int64()),
                ("source_fingerprint", pa.string()),
                ("schema_version", pa.int32()),
            ]
        ),
    )


def _tables_table(by_table: dict[str, list[Partition]], heads: dict[str, int | None]) -> pa.Table:
    rows = []
    for name, spec in schema.TABLES.items():
        parts = by_table.get(name, [])
        rows.append(
            {
                "table_name": name,
                "description": spec.description,
                "key": list(spec.key),
                "derived": spec.derived,
                "rows": sum(p.rows for p in parts),
                "partitions": len(parts),
                "datasets": sorted(p.dataset for p in parts),
                "delta_versions": {p.dataset: p.version for p in parts} or None,
                "delta_head": heads.get(name),
                "last_ingest": max((p.publish.published_at.isoformat(timespec="seconds") for p in parts), default=None),
            }
        )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("table_name", pa.string()),
                ("description", pa.string()),
                ("key", pa.list_(pa.string())),
                ("derived", pa.bool_()),
                ("rows", pa.int64()),
                ("partitions", pa.int32()),
                ("datasets", pa.list_(pa.string())),
                ("delta_versions", pa.map_(pa.string(), pa.int64())),
                ("delta_head", pa.int64()),
                ("last_ingest", pa.string()),
            ]
        ),
    )


def _columns_table() -> pa.Table:
    rows = []
    for name, spec in schema.TABLES.items():
        for position, column in enumerate(spec.columns, start=1):
            allowed = schema.VOCABULARIES.get(column.vocabulary) if column.vocabulary else None
            rows.append(
                {
                    "table_name": name,
                    "column_name": column.name,
                    "position": position,
                    "type": schema.duckdb_type(column.type),
                    "nullable": column.nullable,
                    "is_key": column.name in spec.key or column.name == "dataset",
                    "vocabulary": column.vocabulary,
                    "allowed_values": [str(v) for v in allowed] if allowed else None,
                    "description": column.description,
                }
            )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("table_name", pa.string()),
                ("column_name", pa.string()),
                ("position", pa.int32()),
                ("type", pa.string()),
                ("nullable", pa.bool_()),
                ("is_key", pa.bool_()),
                ("vocabulary", pa.string()),
                ("allowed_values", pa.list_(pa.string())),
                ("description", pa.string()),
            ]
        ),
    )


def _datasets_table(datasets: list[DatasetInfo], publishes: dict[str, publish_log.Publish]) -> pa.Table:
    rows = []
    for info in datasets:
        p = publishes.get(info.id)
        rows.append(
            {
                "dataset": info.id,
                "name": info.name,
                "version": info.version,
                "access": info.access,
                "citation": info.citation,
                "homepage": info.homepage,
                "licence": info.licence,
                "licence_url": info.licence_url,
                "licence_note": info.licence_note or None,
                "bibtex": info.bibtex or None,
                "source_location": p.source_location if p else None,
                "default_data": info.default_data,
                "tables": list(info.tables),
                "links_to": info.links_to,
                "source_fingerprint": p.source_fingerprint if p else None,
                "last_ingest": p.published_at.isoformat(timespec="seconds") if p else None,
                "run_id": p.run_id if p else None,
                "warehouse_version": p.warehouse_version if p else None,
                "ingested": p is not None,
                "notes": list(p.notes) if p else None,
            }
        )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("dataset", pa.string()),
                ("name", pa.string()),
                ("version", pa.string()),
                ("access", pa.string()),
                ("citation", pa.string()),
                ("homepage", pa.string()),
                ("licence", pa.string()),
                ("licence_url", pa.string()),
                ("licence_note", pa.string()),
                ("bibtex", pa.string()),
                ("source_location", pa.string()),
                ("default_data", pa.string()),
                ("tables", pa.list_(pa.string())),
                ("links_to", pa.string()),
                ("source_fingerprint", pa.string()),
                ("last_ingest", pa.string()),
                ("run_id", pa.string()),
                ("warehouse_version", pa.int64()),
                ("ingested", pa.bool_()),
                ("notes", pa.list_(pa.string())),
            ]
        ),
    )


def _vocabularies_table() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"vocabulary": name, "position": i, "value": str(value)}
            for name, values in schema.VOCABULARIES.items()
            for i, value in enumerate(values, start=1)
        ],
        schema=pa.schema([("vocabulary", pa.string()), ("position", pa.int32()), ("value", pa.string())]),
    )

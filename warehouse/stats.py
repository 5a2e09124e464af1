"""Derived tables computed from published data: split statistics and demographics per dataset.

The SQL lives in sql/stats/*.sql (one named query each); this module runs it over a dataset's
current published files and stores the result as that dataset's partition of the derived table,
so the numbers a person reads in `cxr stats` or a report are stored, versioned and documented
like every other table.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa

from . import schema
from .catalog import manifest_parts, register_store, view_sql
from .queries import named_query
from .sources import dataset_info
from .store import Manifest, Store

# table -> sql/stats/<name>.sql
DERIVED = {"split_stats": "split_stats", "demographics": "demographics", "image_labels": "image_labels"}


def published_connection(store: Store, dataset: str | None = None,
                         linked: str | None = None) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with views over the current published files (of one dataset and the one it links to, or all)."""
    con = duckdb.connect()
    register_store(con, store)
    by_table: dict[str, list[Manifest]] = {}
    for manifest in store.manifests():
        if manifest.table in schema.TABLES and (dataset is None or manifest.dataset in (dataset, linked)):
            by_table.setdefault(manifest.table, []).append(manifest)
    for name, spec in schema.TABLES.items():
        con.execute(f'CREATE VIEW "{name}" AS {view_sql(spec, manifest_parts(store, by_table.get(name, [])))}')
    return con


def compute(store: Store, table: str, dataset: str) -> pa.Table:
    """The derived table's rows for one dataset, in its canonical schema."""
    query = named_query("stats", DERIVED[table])
    linked = dataset_info(dataset).links_to if "$linked" in query.sql else None
    con = published_connection(store, dataset, linked)
    params = {"dataset": dataset, "linked": linked} if "$dataset" in query.sql else None
    try:
        result = con.sql(query.sql, params=params).to_arrow_table()
    finally:
        con.close()
    return result.select(schema.TABLES[table].column_names).cast(schema.TABLES[table].schema)


def publish_derived(store: Store, dataset: str, *, run_id: str | None = None) -> dict[str, Manifest]:
    published = {}
    for table in DERIVED:
        staged = store.stage(table, dataset, compute(store, table, dataset), run_id=run_id)
        published[table] = store.publish(staged)
    return published

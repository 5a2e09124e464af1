"""Derived tables: split statistics, demographics, the flat image_labels and label agreement, per dataset.

The SQL lives in sql/stats/*.sql (one named query each). It runs over the dataset's *staged*
rows, after the gates passed and before anything is committed, so a dataset's derived tables are
committed in the same publish as its source tables: `split_stats` can never describe images of
another version. A dataset that links to another (CheXpert Plus to CheXpert) reads the linked
dataset's rows from its newest complete publish.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import findings, schema
from .queries import named_query
from .store import Store
from .views import create_views, delta_files_sql, register_store, staged_files_sql

# table -> sql/stats/<name>.sql
DERIVED = {
    "split_stats": "split_stats",
    "demographics": "demographics",
    "image_labels": "image_labels",
    "label_agreement": "label_agreement",
}


def derive_connection(store: Store, staged_files: dict[str, list[str]], linked=None) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB whose views hold the staged rows, plus the linked dataset's published rows."""
    con = duckdb.connect()
    register_store(con, store)
    relations: dict[str, list[str]] = {}
    for name, urls in staged_files.items():
        relations.setdefault(name, []).append(staged_files_sql(schema.TABLES[name], urls))
    if linked is not None:
        for name, version in linked.versions.items():
            if name not in schema.TABLES or schema.TABLES[name].derived:
                continue
            files = [f["url"] for f in store.partition_files(name, linked.dataset, version)]
            if files:
                columns = set(store.columns_at(name, version))
                relations.setdefault(name, []).append(delta_files_sql(schema.TABLES[name], files, columns))
    create_views(con, relations)
    con.register("finding_hierarchy", findings.hierarchy().to_arrow())  # label_agreement reads findings below
    return con


def compute(con: duckdb.DuckDBPyConnection, table: str, dataset: str, linked: str | None) -> pa.Table:
    """The derived table's rows for one dataset, in its canonical schema."""
    query = named_query("stats", DERIVED[table])
    params = {"dataset": dataset, "linked": linked} if "$dataset" in query.sql else None
    if params is not None and "$linked" not in query.sql:
        params.pop("linked")
    result = con.sql(query.sql, params=params).to_arrow_table()
    result = result.filter(pc.equal(result.column("dataset"), dataset))  # not the linked dataset's rows
    return result.select(schema.TABLES[table].column_names).cast(schema.TABLES[table].schema)

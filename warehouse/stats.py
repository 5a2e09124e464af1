"""Derived tables: split statistics, demographics, the flat image_labels and label agreement, per dataset.

The SQL lives in sql/stats/*.sql (one named query each). It runs over the dataset's *staged*
rows, after the gates passed and before anything is committed, so a dataset's derived tables are
committed in the same publish as its source tables: `split_stats` can never describe images of
another version. A dataset that links to another (CheXpert Plus to CheXpert) reads the linked
dataset's rows from its newest complete publish.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import findings, schema
from .queries import named_query
from .store import ROW_GROUP_ROWS, Store
from .views import create_views, delta_files_sql, register_store, staged_files_sql

# table -> sql/stats/<name>.sql
DERIVED = {
    "split_stats": "split_stats",
    "demographics": "demographics",
    "image_labels": "image_labels",
    "label_agreement": "label_agreement",
}


# past this DuckDB spills the derived tables' joins and sorts to the spill folder: CheXpert's image_labels sort
# took 620 MB above the rest of the ingest
DERIVE_MEMORY_LIMIT = "256MB"


def derive_connection(
    store: Store, staged_files: dict[str, list[str]], linked=None, *, spill: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB whose views hold the staged rows, plus the linked dataset's published rows.

    With a `spill` folder its memory is held to DERIVE_MEMORY_LIMIT (without one, DuckDB would spill to `.tmp`
    in the current directory).
    """
    con = duckdb.connect(
        config={"memory_limit": DERIVE_MEMORY_LIMIT, "temp_directory": str(spill)} if spill is not None else {}
    )
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


DERIVE_BATCH_ROWS = ROW_GROUP_ROWS  # DuckDB hands rows over in batches of about this many (a row group each)


def compute_batches(
    con: duckdb.DuckDBPyConnection, table: str, dataset: str, linked: str | None
) -> Iterator[pa.RecordBatch]:
    """The derived table's rows for one dataset, in its canonical schema and order, a batch at a time.

    Streamed so the staged files are written as DuckDB returns rows: CheXpert's 850 k image_labels rows held
    whole as Arrow, beside DuckDB's result, were the ingest's highest memory.
    """
    query = named_query("stats", DERIVED[table])
    params = {"dataset": dataset, "linked": linked} if "$dataset" in query.sql else None
    if params is not None and "$linked" not in query.sql:
        params.pop("linked")
    target = schema.TABLES[table].schema
    for batch in con.sql(query.sql, params=params).to_arrow_reader(DERIVE_BATCH_ROWS):
        batch = batch.filter(pc.equal(batch.column("dataset"), dataset))  # not the linked dataset's rows
        if batch.num_rows:
            yield batch.select(target.names).cast(target)


def compute(con: duckdb.DuckDBPyConnection, table: str, dataset: str, linked: str | None) -> pa.Table:
    """The derived table's rows for one dataset, in its canonical schema, as one table."""
    return pa.Table.from_batches(list(compute_batches(con, table, dataset, linked)), schema=schema.TABLES[table].schema)

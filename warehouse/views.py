"""SQL views over table files: one `read_parquet` per table, so DuckDB plans joins as over native tables.

Why one scan per table: a view that is a UNION ALL of one scan per dataset partition hides the
join keys' statistics from DuckDB's optimizer, and a cohort join of images, studies and patients
then planned a join on `dataset` alone (minutes, tens of GB). One scan over every chosen file,
with `dataset` (and `split`) read from the Hive-style paths of the Delta layout, lets filters on
`dataset` prune files and keeps join cardinalities estimable.

The planner still cannot know that `dataset` has only a handful of values (a scan of files has no
distinct counts, unlike a native table), so its join-order search, seeing the `dataset = dataset`
edge it infers between two filtered tables, takes it for a selective join and builds a near cross
product. Connections that query the views therefore turn that one optimizer off
(PLANNER_SETTINGS): joins run in the order the query writes them, which for joins along keys is
what a person writes anyway; filter pushdown, file pruning and build-side selection stay on.
benchmarks/cohort_queries.py compares every query of a battery with native tables.

A column that the chosen table versions do not have yet (written before the schema grew) reads
as a typed NULL, so older partitions survive a growing schema.
"""

from __future__ import annotations

import duckdb

from . import schema
from .store import Store, partition_columns

PLANNER_SETTINGS = {"disabled_optimizers": "join_order", "parquet_metadata_cache": "true"}

# What the catalog file holds, as a number: bump it when the catalog gains, drops or reshapes a table, so a
# catalog an older version built is rebuilt on first use instead of failing a query (2: cohort_images).
CATALOG_LAYOUT = "2"


def register_store(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Let DuckDB read a remote warehouse root through its fsspec filesystem (no extensions needed)."""
    if not store.local and not con.filesystem_is_registered(store.protocol):
        con.register_filesystem(store.fs)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _projection(table: schema.Table, present: set[str]) -> str:
    return ", ".join(
        f'"{c.name}"' if c.name in present else f'CAST(NULL AS {schema.duckdb_type(c.type)}) AS "{c.name}"'
        for c in table.columns
    )


def empty_sql(table: schema.Table) -> str:
    return f"SELECT {_projection(table, set())} WHERE false"


def delta_files_sql(table: schema.Table, files: list[str], columns: set[str], *, one_schema: bool = False) -> str:
    """SELECT over Delta data files: partition values from the paths, missing columns as typed NULLs.

    Files of table versions that differ in columns are read by name; `one_schema` files all have the same ones."""
    if not files:
        return empty_sql(table)
    hive_types = ", ".join(f"'{c}': 'VARCHAR'" for c in partition_columns(table))
    listing = ", ".join(_literal(f) for f in files)
    present = set(columns) | set(partition_columns(table))
    by_name = "" if one_schema else ", union_by_name = true"
    return (
        f"SELECT {_projection(table, present)} FROM read_parquet([{listing}], hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}{by_name})"
    )


def staged_files_sql(table: schema.Table, files: list[str]) -> str:
    """SELECT over staged files: Delta data files this version wrote, so every column of the current schema."""
    return delta_files_sql(table, files, set(table.column_names), one_schema=True)


def create_views(con: duckdb.DuckDBPyConnection, relations: dict[str, list[str]]) -> None:
    """One view per canonical table: the UNION ALL of the given relations, or an empty typed relation."""
    for name, spec in schema.TABLES.items():
        parts = relations.get(name) or [empty_sql(spec)]
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS ' + "\nUNION ALL\n".join(parts))

"""Re-sort a streamed partition into its table's physical order, in bounded memory.

Streamed tables arrive in source order (a zip's member order), sorted only within each chunk, so
every row group would span every question type and grade and min/max statistics could prune
nothing. DuckDB's external sort (spilling to a temporary folder past its memory limit) rewrites the
staged files in the table's `sort_by` order, one sub-partition at a time; the writer then cuts row
groups that each cover a narrow range of the leading sort keys.
"""

from __future__ import annotations

import shutil
from collections import defaultdict

import duckdb

from .schema import table as table_def
from .scratch import scratch_dir
from .store import PartitionWriter, StagedPartition, Store
from .views import staged_files_sql

MEMORY_LIMIT = "512MB"  # past this DuckDB spills the sort to disk: memory stays flat as tables grow
BATCH_ROWS = 128 * 1024


def recluster(store: Store, staged: StagedPartition) -> StagedPartition:
    """A new staged partition with the same rows in sort order; the unsorted files are removed."""
    table = table_def(staged.table)
    order = ", ".join(table.order)
    groups: dict[str, list[str]] = defaultdict(list)
    for f in staged.files:
        groups[f["path"].rsplit("/", 1)[0] if "/" in f["path"] else ""].append(f["path"])
    base = staged.folder
    writer = PartitionWriter(store, table, staged.dataset, staged.run_id, first_file_index=len(staged.files))
    spill = scratch_dir("sort")
    con = duckdb.connect(
        config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(spill), "preserve_insertion_order": True}
    )
    try:
        if not store.local:
            con.register_filesystem(store.fs)
        for _, paths in sorted(groups.items()):
            urls = [store.url(f"{base}/{p}") for p in paths]
            query = f"{staged_files_sql(table, urls)} ORDER BY {order}"
            reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                writer.write(batch)
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    for f in staged.files:
        store.fs.rm_file(f"{base}/{f['path']}")
    return StagedPartition(store, staged.table, staged.dataset, staged.run_id, files, staged.rows, dict(staged.extra))

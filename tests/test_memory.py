"""Freed memory goes back to the operating system between the ingest's steps (warehouse/memory.py)."""

import json
import subprocess
import sys

import duckdb
import pyarrow as pa
import pytest

from warehouse import memory, quality, schema

# Many small Arrow buffers and many small C-heap blocks: freed, both allocators keep their pages.
CHILD = """
import json
import pyarrow as pa
from warehouse.memory import release_unused

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

start = rss_mb()
arrow = [pa.array([str(i)] * 200) for i in range(20_000)]
heap = [bytearray(1000) for _ in range(200_000)]
held = rss_mb()
del arrow, heap
freed = rss_mb()
release_unused()
print(json.dumps({"allocated": held - start, "kept_after_free": freed - start, "after_release": rss_mb() - start}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm; glibc's malloc_trim")
def test_release_unused_returns_the_pages_both_allocators_kept():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["allocated"] > 250, mb
    assert mb["kept_after_free"] > 0.5 * mb["allocated"], f"the allocators no longer keep freed pages: {mb}"
    assert mb["after_release"] < 0.4 * mb["kept_after_free"], f"the freed pages stayed: {mb}"


def test_each_validated_table_releases_its_pages_even_when_validation_raises(monkeypatch):
    calls = []
    monkeypatch.setattr(quality, "release_unused", lambda: calls.append("released"))
    spec = schema.TABLES["patients"]
    con = duckdb.connect()
    con.register("patients", spec.schema.empty_table())
    quality.validate_table(con, "patients")
    assert calls == ["released"]

    def broken(con, table):
        raise RuntimeError("GX broke")

    monkeypatch.setattr(quality, "_validated", broken)
    with pytest.raises(RuntimeError, match="GX broke"):
        quality.validate_table(con, "patients")
    assert calls == ["released", "released"]


def test_release_unused_leaves_live_data_alone():
    live = pa.array([f"row {i}" for i in range(100_000)])
    before = live.to_pylist()
    memory.release_unused()
    assert live.to_pylist() == before


# --- the out-of-memory fallback: which errors are DuckDB running out of memory, and the others ---------
STREAMED_OOM = "Out of Memory Error: failed to allocate data of size 2.0 MiB (392.0 KiB/976.5 KiB used)"


def _limited() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"memory_limit": "8MB"})
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("8.0 MiB", "7.6 MiB")
    return con


def test_a_statement_duckdb_cannot_run_within_the_limit_runs_again_without_it():
    con = _limited()
    # the premise: 8 MB is too little for this sort, and DuckDB says so with its own error
    query = "SELECT range AS n, repeat('x', 100) AS s FROM range(2000000) ORDER BY s, n DESC"
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(query).fetchone()
    assert memory.beyond_limit_if_needed(con, lambda: con.execute(query).fetchone()) == (1999999, "x" * 100)
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] not in ("8.0 MiB", "7.6 MiB")


def test_running_out_of_memory_while_a_result_streams_is_caught_too():
    """DuckDB's error reaches Python as an OSError when it happens while `to_arrow_reader` streams."""
    con, calls = _limited(), []

    def run():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(STREAMED_OOM)
        return "done"

    assert memory.beyond_limit_if_needed(con, run) == "done" and len(calls) == 2
    assert memory.out_of_memory(OSError(STREAMED_OOM)) and not memory.out_of_memory(OSError("IO Error: No files found"))


def test_other_errors_are_raised_at_once_and_the_limit_stays():
    con, calls = _limited(), []

    def run():
        calls.append(1)
        raise OSError("IO Error: No files found that match the pattern")

    with pytest.raises(OSError, match="No files found"):
        memory.beyond_limit_if_needed(con, run)
    assert len(calls) == 1
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("8.0 MiB", "7.6 MiB")

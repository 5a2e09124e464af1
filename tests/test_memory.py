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

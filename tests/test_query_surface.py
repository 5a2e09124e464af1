"""User SQL cannot harm the warehouse: every refused statement, through `cxr sql` and `Warehouse.sql`,
leaves the published files and the catalog byte-identical. (warehouse/confine.py has the unit tests.)"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warehouse import Warehouse
from warehouse.cli import main
from warehouse.errors import QueryRefused, QueryTimeout

from .conftest import make_settings, nih_subset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_warehouse(tmp_path_factory, cache_dir, raw_files):
    tmp = tmp_path_factory.mktemp("query-surface")
    wh = Warehouse(make_settings(tmp, cache_dir, nih_cxr14=nih_subset(raw_files, tmp / "src", 200)))
    wh.ingest(["nih_cxr14"])
    return wh


def _digest(wh: Warehouse) -> dict[str, str]:
    files = [p for p in Path(wh.settings.warehouse).rglob("*") if p.is_file()] + [wh.settings.catalog]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def _attacks(wh: Warehouse, tmp: Path) -> dict[str, str]:
    part = next(Path(wh.settings.warehouse, "images").rglob("*.parquet"))
    return {
        "copy over a published file": f"COPY (SELECT * FROM images LIMIT 3) TO '{part}' (FORMAT parquet)",
        "copy over the catalog": f"COPY (SELECT 1) TO '{wh.settings.catalog}'",
        "attach and write": f"ATTACH '{tmp / 'other.duckdb'}' AS o (READ_WRITE); CREATE TABLE o.t AS SELECT 1",
        "create a table": "CREATE TABLE t AS SELECT 1",
        "install an extension": "INSTALL httpfs",
        "load an extension": "LOAD httpfs",
        "raise the memory limit": "SET memory_limit = '500GB'",
        "raise the threads": "SET threads = 64",
        "read a host file": "SELECT * FROM read_csv('/etc/passwd')",
        "read host text": "SELECT * FROM read_text('/etc/hostname')",
        "list host files": "SELECT * FROM glob('/root/*')",
        "a second statement": f"SELECT 1; COPY (SELECT 1) TO '{tmp / 'x.csv'}'",
    }


def test_refused_through_the_python_api(small_warehouse, tmp_path):
    wh = small_warehouse
    before = _digest(wh)
    for name, sql in _attacks(wh, tmp_path).items():
        with pytest.raises(QueryRefused) as refused:
            wh.sql(sql)
        assert "refused" in str(refused.value) or "Cannot access" in str(refused.value), name
    assert _digest(wh) == before
    assert not list(tmp_path.iterdir()), "nothing was written outside the warehouse either"
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 200


def test_refused_through_the_cli(small_warehouse, tmp_path, monkeypatch, capsys):
    wh = small_warehouse
    monkeypatch.setenv("CXR_WAREHOUSE", wh.settings.warehouse)
    monkeypatch.setenv("CXR_CATALOG", str(wh.settings.catalog))
    before = _digest(wh)
    for name, sql in _attacks(wh, tmp_path).items():
        assert main(["sql", sql]) == 1, name
        err = capsys.readouterr().err
        assert err.startswith("cxr sql: ") and len(err.strip().splitlines()) == 1, (name, err)
    assert _digest(wh) == before
    # the export path is the project's, and writes where it is told
    out = tmp_path / "images.parquet"
    assert main(["sql", "SELECT * FROM images", "--format", "parquet", "--out", str(out)]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 200


def test_a_runaway_query_stops_at_the_time_limit(small_warehouse):
    wh = Warehouse(small_warehouse.settings.with_overrides(query_timeout=1.0))
    started = time.perf_counter()
    with pytest.raises(QueryTimeout, match="CXR_QUERY_TIMEOUT"):
        wh.sql("SELECT count(*) FROM range(1000000) a, range(1000000) b")
    assert time.perf_counter() - started < 5


def test_ctrl_c_stops_cxr_sql_with_one_line(small_warehouse):
    env = dict(
        os.environ, CXR_WAREHOUSE=small_warehouse.settings.warehouse, CXR_CATALOG=str(small_warehouse.settings.catalog)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "warehouse.cli", "sql", "SELECT count(*) FROM range(1000000) a, range(1000000) b"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a parent that ignores SIGINT (a background job, some CI runners) would pass that on to the command
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(3)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.perf_counter() - sent < 2, "stopped within a second or so"
    assert proc.returncode == 130
    assert err.strip() == "interrupted", err

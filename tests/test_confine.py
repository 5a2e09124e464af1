"""The confined query surface, against real DuckDB: reads work, writes and host access are refused, time is limited.

Each refusal also checks that the published parquet file and the catalog file are byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse.confine import Limits, check_statements, confined_connection, run
from warehouse.errors import QueryRefused, QueryTimeout

CROSS_JOIN = "SELECT count(*) FROM range(1000000) a, range(1000000) b"


def _quote(text) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _catalog(path: Path, files: list[Path | str]) -> Path:
    con = duckdb.connect(str(path))
    try:
        listing = ", ".join(_quote(f) for f in files)
        con.execute(f"CREATE VIEW images AS SELECT * FROM read_parquet([{listing}], hive_partitioning=true)")
    finally:
        con.close()
    return path


@pytest.fixture
def wh(tmp_path):
    """root/images/dataset=a/part-0.parquet and a catalog file (in another folder) with a view over it."""
    root = tmp_path / "root"
    part = root / "images" / "dataset=a" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["i1", "i2", "i3"], "rows": [1, 2, 3]}), part)
    (tmp_path / "cat").mkdir()
    catalog = _catalog(tmp_path / "cat" / "catalog.duckdb", [part])
    con = confined_connection(catalog, readable=[str(root)])
    yield {"root": root, "part": part, "catalog": catalog, "con": con, "tmp": tmp_path}
    con.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _go(con, sql, params=None, timeout=10.0):
    return run(con, sql, params, timeout_seconds=timeout)


def test_select_explain_describe(wh):
    con = wh["con"]
    assert _go(con, "SELECT image_id, rows, dataset FROM images ORDER BY rows").fetchall() == [
        ("i1", 1, "a"),
        ("i2", 2, "a"),
        ("i3", 3, "a"),
    ]
    assert _go(con, "SELECT count(*) FROM images WHERE rows > ?", [1]).fetchone() == (2,)
    assert _go(con, "EXPLAIN SELECT * FROM images").fetchall()[0][0] == "physical_plan"
    assert _go(con, "EXPLAIN ANALYZE SELECT count(*) FROM images").fetchall()[0][0] == "analyzed_plan"
    assert _go(con, "EXPLAIN (FORMAT json) SELECT 1").fetchall()[0][0] == "physical_plan"
    described = _go(con, "DESCRIBE images").fetchall()
    assert [r[0] for r in described] == ["image_id", "rows", "dataset"]
    assert ("images",) in _go(con, "SHOW TABLES").fetchall()
    assert _go(con, "SUMMARIZE images").fetchmany(1)
    assert _go(con, "SELECT 1 AS x; SELECT 2 AS y").fetchall() == [(2,)]
    table = _go(con, "SELECT * FROM images").to_arrow_table()
    assert table.num_rows == 3
    assert sum(b.num_rows for b in _go(con, "SELECT * FROM images").to_arrow_reader(2)) == 3


def test_settings_are_the_limits(wh):
    con = confined_connection(wh["catalog"], readable=[str(wh["root"])], limits=Limits(memory_limit="1GB", threads=1))
    try:
        got = _go(
            con,
            "SELECT current_setting('threads'), current_setting('memory_limit'), "
            "current_setting('enable_external_access'), current_setting('lock_configuration')",
        ).fetchone()
        assert got[0] == 1 and got[1].endswith("MiB") and got[2] is False and got[3] is True
    finally:
        con.close()


def _refusals(wh) -> list[tuple[str, str]]:
    part, catalog, other = _quote(wh["part"]), _quote(wh["catalog"]), _quote(wh["tmp"] / "other.duckdb")
    return [
        (f"COPY (SELECT 9 AS rows) TO {part} (FORMAT parquet)", "COPY is refused"),
        (f"COPY (SELECT 9 AS rows) TO {catalog}", "COPY is refused"),
        (f"EXPLAIN ANALYZE COPY (SELECT 9 AS rows) TO {part} (FORMAT parquet)", "EXPLAIN of COPY is refused"),
        (f"EXPLAIN (ANALYZE) COPY (SELECT 9 AS rows) TO {part} (FORMAT parquet)", "EXPLAIN of COPY is refused"),
        (f"ATTACH {other} AS o (READ_WRITE); INSERT INTO o.t VALUES (1)", "ATTACH is refused"),
        ("INSERT INTO images VALUES ('x', 1, 'a')", "INSERT is refused"),
        ("CREATE TABLE t AS SELECT 1", "CREATE is refused"),
        ("CREATE TEMP TABLE t AS SELECT 1", "CREATE is refused"),
        ("INSTALL httpfs", "INSTALL is refused"),
        ("LOAD httpfs", "LOAD is refused"),
        ("SET memory_limit='500GB'", "SET is refused"),
        ("SET threads=64", "SET is refused"),
        ("RESET threads", "RESET is refused"),
        ("PRAGMA threads=64", "PRAGMA is refused"),
        ("PRAGMA enable_profiling", "PRAGMA is refused"),
        ("SELECT * FROM read_csv('/etc/passwd')", '"/etc/passwd"'),
        ("SELECT * FROM read_text('/etc/hostname')", '"/etc/hostname"'),
        ("SELECT * FROM glob('/root/*')", '"/root/*"'),
        (f"SELECT * FROM read_csv({_quote(wh['root'])} || '/../../../etc/passwd')", "/etc/passwd"),
        # the first statement would fail on /etc/passwd if it ran: the COPY refusal shows nothing ran
        (f"SELECT * FROM read_csv('/etc/passwd'); COPY (SELECT 1) TO {part}", "COPY is refused"),
        (f"EXPORT DATABASE {_quote(wh['tmp'] / 'dump')}", "EXPORT is refused"),
        ("CHECKPOINT", "CHECKPOINT is refused"),
        ("DETACH catalog", "DETACH is refused"),
        ("-- a comment first\nDROP VIEW images", "DROP is refused"),
        ("WITH x AS (SELECT 1) INSERT INTO images SELECT 'x', 1, 'a'", "INSERT is refused"),
        ("UPDATE EXTENSIONS", "UPDATE is refused"),  # a statement type the duckdb module cannot even name
        (f"EXPLAIN /* hidden */ ANALYZE COPY (SELECT 9 AS rows) TO {part}", "EXPLAIN of COPY is refused"),
        (f"EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 9 AS rows) TO {part}", "EXPLAIN of COPY is refused"),
        ("", "empty"),
    ]


def test_refused_and_nothing_changed(wh):
    before = _sha(wh["part"]), _sha(wh["catalog"])
    for sql, named in _refusals(wh):
        with pytest.raises(QueryRefused) as err:
            _go(wh["con"], sql).fetchall()
        assert named in str(err.value), (sql, str(err.value))
    assert (_sha(wh["part"]), _sha(wh["catalog"])) == before
    assert not (wh["tmp"] / "other.duckdb").exists() and not (wh["tmp"] / "dump").exists()
    # the connection is still usable and still confined
    assert _go(wh["con"], "SELECT count(*) FROM images").fetchone() == (3,)
    assert _go(wh["con"], "SELECT current_setting('threads')").fetchone() == (Limits().threads,)


def test_check_statements_names_the_statement(wh):
    check_statements(wh["con"], "SELECT 1; EXPLAIN SELECT 2; DESCRIBE images")
    with pytest.raises(QueryRefused, match=r"^COPY is refused: the query surface is read-only; use --out to export"):
        check_statements(wh["con"], "SELECT 1; COPY (SELECT 1) TO 'x.csv'")


def test_cross_join_stopped_at_deadline(wh):
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"query stopped after 1 s \(limit set by CXR_QUERY_TIMEOUT"):
        _go(wh["con"], CROSS_JOIN, timeout=1).fetchall()
    assert time.monotonic() - started < 3
    assert _go(wh["con"], "SELECT 42").fetchone() == (42,)


def test_deadline_covers_streamed_fetches(wh):
    """execute returns at the first rows; the rest is computed while fetching, and that time counts too."""
    result = _go(wh["con"], "SELECT a.range * b.range FROM range(1000000) a, range(1000000) b", timeout=1)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        while result.fetchmany(100_000):
            pass
    assert time.monotonic() - started < 3
    with pytest.raises(QueryTimeout):  # the budget is spent: no more rows
        result.fetchone()


def test_ctrl_c_stops_the_query_promptly(wh):
    """DuckDB's own execute ignores SIGINT; through run() it raises KeyboardInterrupt within a moment."""
    script = textwrap.dedent(f"""
        import faulthandler, signal, sys, time
        from pathlib import Path
        from warehouse.confine import confined_connection, run
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks if it hangs
        con = confined_connection(Path({str(wh['catalog'])!r}), readable=[{str(wh['root'])!r}])
        print("ready", flush=True)
        try:
            run(con, {CROSS_JOIN!r}, timeout_seconds=60).fetchall()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            print(run(con, "SELECT 7", timeout_seconds=5).fetchone()[0], flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        # a parent that ignores SIGINT (a background job, some CI runners) would pass that on to the query
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # where it waits, for the report
            time.sleep(1)
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"still running 10 s after Ctrl-C; its threads:\n{err}")
    finally:
        proc.kill()
    assert out.split() == ["interrupted", "7"]
    assert time.monotonic() - sent < 3


def test_ctrl_c_while_the_query_thread_starts_still_stops_the_query(wh, monkeypatch):
    """A Ctrl-C that lands in Thread.start() (a Python-level wait) must not leave the query running:
    the connection would stay busy, and the next statement or close() would wait for a cross join."""
    import warehouse.confine as confine

    class InterruptedStart(threading.Thread):
        def start(self):
            super().start()
            raise KeyboardInterrupt

    monkeypatch.setattr(confine.threading, "Thread", InterruptedStart)
    con = wh["con"]
    try:
        with pytest.raises(KeyboardInterrupt):
            run(con, CROSS_JOIN, timeout_seconds=60)
        running = [t for t in threading.enumerate() if t.name == "cxr-query" and t.is_alive()]
        assert not running, "the query thread outlived the Ctrl-C"
    finally:
        con.interrupt()  # only matters when the assertion above failed
    monkeypatch.undo()
    assert run(con, "SELECT 7", timeout_seconds=5).fetchone() == (7,)


def _new_catalog(wh, rows: list[int]) -> Path:
    part = wh["root"] / "images" / "dataset=b" / "part-0.parquet"
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image_id": [f"n{r}" for r in rows], "rows": rows}), part)
    return _catalog(wh["tmp"] / "cat" / ".catalog.new", [part])


def test_replaced_catalog_old_connection_keeps_its_file(wh):
    old = wh["con"]
    assert _go(old, "SELECT count(*) FROM images").fetchone() == (3,)
    os.replace(_new_catalog(wh, [10, 20]), wh["catalog"])
    new = confined_connection(wh["catalog"], readable=[str(wh["root"])])
    try:
        assert _go(new, "SELECT image_id FROM images ORDER BY 1").fetchall() == [("n10",), ("n20",)]
        assert _go(old, "SELECT image_id FROM images ORDER BY 1").fetchall() == [("i1",), ("i2",), ("i3",)]
    finally:
        new.close()


def test_registered_fsspec_filesystem_reads_after_lock(tmp_path):
    """A remote warehouse is read through a registered fsspec filesystem; locking keeps that working."""
    fs = fsspec.filesystem("memory")
    buf = io.BytesIO()
    pq.write_table(pa.table({"rows": [7, 8]}), buf)
    fs.pipe("/cxr-test-wh/images/part-0.parquet", buf.getvalue())
    fs.pipe("/cxr-test-private/secret.parquet", buf.getvalue())
    try:
        builder = duckdb.connect(str(tmp_path / "catalog.duckdb"))
        builder.register_filesystem(fs)
        builder.execute(
            "CREATE VIEW images AS SELECT * FROM read_parquet(['memory://cxr-test-wh/images/part-0.parquet'])"
        )
        builder.close()
        con = confined_connection(tmp_path / "catalog.duckdb", readable=["memory://cxr-test-wh"], filesystems=[fs])
        try:
            assert _go(con, "SELECT rows FROM images ORDER BY 1").fetchall() == [(7,), (8,)]
            with pytest.raises(QueryRefused, match="cxr-test-private"):
                _go(con, "SELECT * FROM read_parquet('memory://cxr-test-private/secret.parquet')").fetchall()
            with pytest.raises(QueryRefused, match="COPY is refused"):
                _go(con, "COPY (SELECT 1 AS rows) TO 'memory://cxr-test-wh/images/part-0.parquet' (FORMAT parquet)")
            assert fs.cat("/cxr-test-wh/images/part-0.parquet") == buf.getvalue()
        finally:
            con.close()
    finally:
        fs.rm("/cxr-test-wh", recursive=True)
        fs.rm("/cxr-test-private", recursive=True)

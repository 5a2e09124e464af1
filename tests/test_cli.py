"""`cxr` as a user runs it: a real process, real output formats, clear errors."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).parents[1]
QUERY = "SELECT dataset, view_position, count(*) AS n FROM images GROUP BY ALL ORDER BY ALL"


def cxr(wh, *args, check=True):
    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "warehouse.cli", *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cxr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def expected_rows(wh):
    return [tuple(r.values()) for r in wh.sql(QUERY).to_pylist()]


def test_csv_prints_header_then_rows(public_warehouse):
    out = cxr(public_warehouse, "sql", QUERY, "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["dataset", "view_position", "n"]
    assert [(d, v, int(n)) for d, v, n in rows[1:]] == expected_rows(public_warehouse)


def test_json_is_an_array_of_objects(public_warehouse):
    data = json.loads(cxr(public_warehouse, "sql", QUERY, "--format", "json").stdout)
    assert [(r["dataset"], r["view_position"], r["n"]) for r in data] == expected_rows(public_warehouse)


def test_parquet_needs_and_writes_out(public_warehouse, tmp_path):
    proc = cxr(public_warehouse, "sql", QUERY, "--format", "parquet", check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr
    target = tmp_path / "cohort.parquet"
    cxr(public_warehouse, "sql", QUERY, "--format", "parquet", "--out", str(target))
    table = pq.read_table(target)
    assert [tuple(r.values()) for r in table.to_pylist()] == expected_rows(public_warehouse)


def test_table_format_is_readable(public_warehouse):
    out = cxr(public_warehouse, "sql", QUERY).stdout
    assert "view_position" in out and "161,590" in out and "rows" in out


def test_bad_sql_is_one_clear_error(public_warehouse):
    proc = cxr(public_warehouse, "sql", "SELECT * FROM no_such_table", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("cxr sql:") and "no_such_table" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_catalog_lists_tables_and_columns(public_warehouse):
    out = cxr(public_warehouse, "catalog").stdout
    for name in ("patients", "studies", "images", "labels", "boxes", "qa_questions", "nih_cxr14", "chexpert"):
        assert name in out
    columns = cxr(public_warehouse, "catalog", "images").stdout
    assert "view_position" in columns and "AP_SUPINE" in columns


@pytest.mark.parametrize("command", [("ingest",), ("stats",)])
def test_unknown_dataset_is_refused(public_warehouse, command):
    proc = cxr(public_warehouse, *command, "--dataset", "nope", check=False)
    assert proc.returncode == 2 and "unknown dataset 'nope'" in proc.stderr and "nih_cxr14" in proc.stderr
    assert not proc.stdout, "nothing is printed as if it had worked"


def test_version_names_the_package_and_schema(public_warehouse):
    from warehouse import __version__
    from warehouse.schema import SCHEMA_VERSION

    proc = cxr(public_warehouse, "--version")
    assert proc.stdout.strip() == f"cxr-warehouse {__version__} (schema {SCHEMA_VERSION})"


def test_every_error_class_of_the_project_shares_one_base():
    """So the CLI recognizes a user's error by its type: no class-name strings, no catch-all KeyError."""
    import ast
    import importlib

    from warehouse.errors import CxrError

    internal = {"JsonStreamError"}  # raised and caught inside one parser, re-raised as a SourceError
    found = []
    for path in (REPO / "warehouse").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(
                    ("Error", "Exception", "Blocked", "Refused", "Timeout", "Catalog")
                )
                for b in node.bases
            ):
                module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                found.append(getattr(importlib.import_module(module), node.name))
    assert len(found) >= 10
    assert [c.__name__ for c in found if not issubclass(c, CxrError) and c.__name__ not in internal] == []


def test_an_unknown_table_is_one_line(public_warehouse):
    proc = cxr(public_warehouse, "catalog", "nosuch", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "nosuch" in proc.stderr


def test_query_path_imports_neither_dagster_nor_great_expectations(public_warehouse):
    code = (
        "import sys, warehouse.cli as c; c.main(['sql', 'select 1', '--format', 'csv']); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'great_expectations', "
        "'pandas', 'polars')); print('HEAVY', heavy)"
    )
    env = dict(
        os.environ,
        CXR_WAREHOUSE=public_warehouse.settings.warehouse,
        CXR_CATALOG=str(public_warehouse.settings.catalog),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO).stdout
    assert "HEAVY []" in out


def test_cxr_ingest_runs_the_gated_pipeline(tmp_path, cache_dir, raw_files):
    import gzip

    from warehouse import Warehouse

    from .conftest import make_settings

    folder = tmp_path / "nih"
    folder.mkdir()
    with gzip.open(raw_files["nih_entry"], "rt", newline="") as f:
        lines = [next(f) for _ in range(31)]
    (folder / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    wh = Warehouse(make_settings(tmp_path, cache_dir))
    home = tmp_path / "dagster-home"  # its own instance, not the checkout's .dagster/ other tests may share
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {"CXR_SOURCE_NIH_CXR14": str(folder), "DAGSTER_HOME": str(home)}

    proc = _cxr_env(wh, env, "ingest", "--dataset", "nih_cxr14")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ingest summary" in proc.stdout and "published" in proc.stdout
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 30

    (folder / "Data_Entry_2017_v2020.csv").write_text("".join([*lines, lines[3]]))  # an image id twice
    proc = _cxr_env(wh, env, "ingest", "--dataset", "nih_cxr14")
    assert proc.returncode == 1
    assert "BLOCKED" in proc.stdout
    assert "nih_cxr14 was NOT published" in proc.stderr and "images__key_unique" in proc.stderr
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 30


@pytest.mark.parametrize("workers", ["1", "2", "killed", "worker killed"])
def test_ctrl_c_stops_the_whole_ingest_with_one_line(tmp_path, cache_dir, public_data, workers):
    """Ctrl-C reaches the whole process group, as from a terminal. DuckDB turned it into one failed query, Dagster
    into one failed step, and the ingest went on with the next dataset; side by side, each Dagster log watcher
    printed a traceback. Now: exit 130, one line, and nothing after the interrupted run is published."""
    import signal
    import time

    from warehouse import Warehouse, publish_log

    from .conftest import make_settings

    wh = Warehouse(make_settings(tmp_path, cache_dir))
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
        DAGSTER_HOME=str(home),
    )
    datasets = ["nih_cxr14", "chexpert", "padchest"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "warehouse.cli", "ingest", "--workers", workers if workers.isdigit() else "2"]
        + [f"-d{d}" for d in datasets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=home,
        start_new_session=True,  # its own group, to signal like a terminal, with SIGINT not ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    seen, deadline = b"", time.monotonic() + 240
    while b"rows staged" not in seen and proc.poll() is None and time.monotonic() < deadline:
        seen += proc.stderr.read() or b""
        time.sleep(0.2)
    assert b"rows staged" in seen, seen.decode()[-2000:]
    if workers == "killed":  # the command itself dies: its workers must not publish on with no one to report to
        children = _children(proc.pid)
        assert children, "the runs go to worker processes"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a worker outlived cxr ingest"
        assert set(publish_log.adopted(wh.store)) < set(datasets)
        return
    if workers == "worker killed":  # out of memory, say: its runs fail, the datasets not started still run
        os.kill(_children(proc.pid)[0], signal.SIGKILL)
        os.set_blocking(proc.stderr.fileno(), True)
        out, rest = proc.communicate(timeout=300)
        err = (seen + rest).decode()
        assert proc.returncode == 1, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "nih_cxr14 failed: its worker process died" in err and "chexpert failed:" in err, err[-3000:]
        assert set(publish_log.adopted(wh.store)) == {"padchest"}, "the third dataset went to a new worker"
        assert out.decode().count("FAILED") == 2 and "published" in out.decode(), out.decode()
        assert not list(Path(wh.settings.warehouse, "_staging").glob("*/*")), "the dead runs' staging is gone"
        return
    os.killpg(proc.pid, signal.SIGINT)
    os.set_blocking(proc.stderr.fileno(), True)
    _, rest = proc.communicate(timeout=120)
    err = (seen + rest).decode()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == "interrupted"
    assert set(publish_log.adopted(wh.store)) < set(datasets), "the ingest stopped: some dataset never published"


def _children(pid: int) -> list[int]:
    """A process's children (Linux: /proc/<pid>/task/<tid>/children), skipping Python's resource tracker."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _cxr_env(wh, extra: dict, *args):
    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
    )
    env.pop("DAGSTER_HOME", None)
    env.update(extra)
    # not the folder holding the warehouse root: `python -m` puts the current folder first on sys.path, and a
    # data folder named `warehouse` there would shadow the package (the `cxr` script does not do that)
    return subprocess.run(
        [sys.executable, "-m", "warehouse.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(extra.get("DAGSTER_HOME", wh.settings.catalog.parent)),
    )


def _in_terminal(wh, *args, env_extra: dict | None = None) -> str:
    """Run cxr with stdout on a pseudo-terminal, as a person at a shell does; what the terminal showed."""
    import pty

    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
        COLUMNS="200",
        **(env_extra or {}),
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "warehouse.cli", *args], stdout=follower, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    return shown.decode(errors="replace")


def test_duckdb_progress_shows_on_a_terminal_and_never_in_data(public_warehouse, tmp_path):
    setting = "SELECT current_setting('enable_progress_bar') AS progress"
    assert "true" in _in_terminal(public_warehouse, "sql", setting)  # a person's terminal
    out = tmp_path / "p.csv"
    _in_terminal(public_warehouse, "sql", setting, "--format", "csv", "--out", str(out))  # a file, from a terminal
    assert out.read_text().splitlines() == ["progress", "true"]
    piped = cxr(public_warehouse, "sql", setting, "--format", "csv").stdout.splitlines()  # stdout is the data
    assert piped == ["progress", "false"]
    # and a query running past the threshold (0 ms here) really draws DuckDB's bar, with the result after it
    shown = _in_terminal(
        public_warehouse,
        "sql",
        "SELECT count(*) AS n FROM range(50000000) t(i) WHERE i % 7 = 3",
        env_extra={"CXR_PROGRESS_AFTER_MS": "0"},
    )
    assert "100% ▕" in shown and shown.index("100% ▕") < shown.index("7,142,857"), shown[-400:]


WORKER_UNDER_DAGSTER = """
import os, signal, sys, threading, time
from pipelines import worker  # as the pool starts a worker: this first, then the job's imports
assert "dagster" not in sys.modules and len(os.listdir("/proc/self/task")) == 1, "nothing heavy before the mask"
worker.start(None)
from dagster._utils.interrupts import raise_interrupts_as
from pipelines import runner  # Dagster, DuckDB, polars: their threads start now
assert len(os.listdir("/proc/self/task")) > 3
seen = []
def other_thread():
    time.sleep(0.3)
    seen.append("thread alive")
threading.Thread(target=other_thread).start()
with raise_interrupts_as(RuntimeError):  # as Dagster runs a step
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    gc_callback_ran = []
    import gc
    gc.callbacks.append(lambda phase, info: gc_callback_ran.append(phase))
    gc.collect()
print("not interrupted", seen, bool(gc_callback_ran))
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="POSIX signal masks")
def test_a_worker_is_not_interrupted_by_the_groups_ctrl_c_even_inside_a_dagster_step():
    """Dagster's step handler raised the group's Ctrl-C in whatever ran, a garbage-collection callback included,
    where it became a printed traceback (seen once in CI). The worker blocks SIGINT; the parent ends it."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_UNDER_DAGSTER], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "not interrupted ['thread alive'] True"


WORKER_UNRAISABLE = """
from pipelines import worker
worker.start(None)
class Interrupted(BaseException):  # as Dagster's DagsterExecutionInterruptedError
    pass
class Finalized:
    def __init__(self, error):
        self.error = error
    def __del__(self):
        raise self.error
Finalized(Interrupted("terminated in a finalizer"))
Finalized(KeyboardInterrupt("ctrl-c in a finalizer"))
Finalized(ValueError("a real bug in a finalizer"))
print("went on")
"""


def test_a_worker_drops_an_interrupt_raised_in_a_finalizer_and_still_reports_other_errors():
    """The parent ends a worker with SIGTERM, which Dagster raises wherever the worker is; in a finalizer or a
    garbage-collection callback Python printed it as a traceback. An error that is not an interrupt is still shown."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_UNRAISABLE], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "went on", out.stderr[-2000:]
    assert "a real bug in a finalizer" in out.stderr and "ValueError" in out.stderr
    assert "terminated in a finalizer" not in out.stderr and "ctrl-c" not in out.stderr

"""The run history dagster.yaml configures: Dagster's SQLite files, written through engines kept open.

The pooled event log must stay Dagster's format (the stock storage, which `dagster dev` would use without our
class, reads every event and index row it writes, and it reads what the stock storage wrote before), and it must
not keep a file open per run for the life of a long process such as `dagster dev`.
"""

import os
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from pipelines import runner
from pipelines.run_history import PooledSqliteEventLogStorage

from .conftest import make_settings, nih_subset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A Dagster home with the project's dagster.yaml, as `cxr ingest` and `dagster dev` use it."""
    folder = tmp_path / "dagster-home"
    folder.mkdir()
    shutil.copy(REPO / "dagster.yaml", folder / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(folder))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")  # what runner.instance() sets, undone after the test
    return folder


def _history(home: Path) -> Path:
    return home / ".dagster" / "storage" / "history" / "runs"


def _stock(home: Path) -> SqliteEventLogStorage:
    return SqliteEventLogStorage(str(_history(home)))


@dg.op
def _noop() -> int:
    return 1


@dg.job
def _tiny() -> None:
    _noop()


def _open_history_files(home: Path) -> list[str]:
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(_history(home))) and target.endswith(".db"):
            names.append(Path(target).name)
    return names


def test_the_configured_event_log_is_the_pooled_one(home):
    inst = runner.instance()
    assert type(inst.event_log_storage) is PooledSqliteEventLogStorage
    assert Path(inst.event_log_storage._base_dir) == _history(home)  # the folder `storage: sqlite` would use


def test_a_gated_run_reads_the_same_through_dagsters_stock_storage(home, tmp_path, cache_dir, raw_files):
    """Every event of a real ingest run, its check evaluations with their partition, and the index's
    materializations, as the stock storage reads them back from the files."""
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=str(nih_subset(raw_files, tmp_path / "nih", 40)))
    inst = runner.instance()
    (run,) = runner.ingest(settings, ["nih_cxr14"], dagster_instance=inst)
    assert run.status == "published", run.error

    pooled, stock = inst.event_log_storage, _stock(home)
    written = [e.dagster_event_type for e in pooled.get_logs_for_run(run.run_id)]
    read = [e.dagster_event_type for e in stock.get_logs_for_run(run.run_id)]
    assert read == written and len(read) > 100
    counts = Counter(read)
    checks = [
        e
        for e in stock.get_logs_for_run(run.run_id)
        if e.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert len(checks) == counts[dg.DagsterEventType.ASSET_CHECK_EVALUATION] >= 20
    evaluations = [e.dagster_event.event_specific_data for e in checks]
    assert all(ev.partition == "nih_cxr14" and ev.passed for ev in evaluations)

    materialized = {
        r.asset_entry.asset_key
        for r in stock.get_asset_records()
        if r.asset_entry.last_materialization_record is not None
        and r.asset_entry.last_materialization_record.run_id == run.run_id
    }
    assert len(materialized) == counts[dg.DagsterEventType.ASSET_MATERIALIZATION] > 0
    stock.dispose()


def test_it_reads_history_the_stock_storage_wrote(home):
    """A warehouse whose runs were logged before this storage was configured keeps its history readable."""
    (home / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir: .dagster/storage\n")  # the file before
    stock_home = runner.instance()
    assert type(stock_home.event_log_storage) is SqliteEventLogStorage
    old = _tiny.execute_in_process(instance=stock_home).run_id
    stock_events = [e.dagster_event_type for e in stock_home.event_log_storage.get_logs_for_run(old)]
    stock_home.dispose()

    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the upgrade
    inst = runner.instance()
    assert [e.dagster_event_type for e in inst.event_log_storage.get_logs_for_run(old)] == stock_events
    new = _tiny.execute_in_process(instance=inst).run_id
    assert {r.run_id for r in inst.get_runs()} == {old, new}
    inst.dispose()


def test_a_long_lived_process_keeps_only_recent_runs_files_open(home):
    """`dagster dev` runs for days: the files of older runs are closed, and their events stay readable."""
    inst = runner.instance()
    storage = inst.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    run_ids = []
    for _ in range(storage.KEPT_RUN_SHARDS + 3):
        run_ids.append(_tiny.execute_in_process(instance=inst).run_id)
        assert len(_open_history_files(home)) <= 1 + storage.KEPT_RUN_SHARDS, _open_history_files(home)
    opened = set(_open_history_files(home))
    assert "index.db" in opened and f"{run_ids[-1]}.db" in opened and f"{run_ids[0]}.db" not in opened

    for run_id in run_ids:  # the closed ones open again on demand
        assert dg.DagsterEventType.RUN_SUCCESS in {e.dagster_event_type for e in storage.get_logs_for_run(run_id)}

    inst.wipe()  # deletes the run files: no pooled connection may keep writing to a deleted file
    assert set(_open_history_files(home)) <= {"index.db"}  # its tables are emptied, the file stays
    assert not list(_history(home).glob("*-*.db"))
    again = _tiny.execute_in_process(instance=inst).run_id
    assert (_history(home) / f"{again}.db").is_file()
    inst.dispose()
    assert _open_history_files(home) == []

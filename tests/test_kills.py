"""An ingest killed (os._exit: no clean-up runs) at each point of its path never tears a dataset.

After every kill: the catalog answers with a complete version of the dataset (the previous one, or
the new one when the kill came after its publish record), its source and derived tables agree,
Delta readers see nothing half-written, and the next ingest succeeds and removes what the killed
one left behind.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.compute as pc
import pytest

from warehouse import Warehouse

from .conftest import make_settings, nih_subset

# point -> (object to patch, attribute, when to die: "before" the call or "after" it returns)
KILL_POINTS = {
    "reading": ("warehouse.sources.nih_cxr14:NihCxr14", "read", "before"),
    "staging": ("warehouse.store:Store", "stage", "after"),
    "checks": ("warehouse.quality", "gate_staged", "before"),
    "derived step": ("warehouse.gated", "compute_batches", "after"),
    "moving the first table's files": ("warehouse.store:Store", "_move_data_files", "after"),
    "between table commits": ("warehouse.store:Store", "commit", "after"),
    "before the publish record": ("warehouse.publish_log", "record", "before"),
    "catalog rebuild": ("warehouse.catalog", "create_views", "after"),
}
PUBLISHED_BEFORE_KILL = {"catalog rebuild"}
HEAD_MAY_RUN_AHEAD = {"between table commits", "before the publish record"}


def _count(wh: Warehouse, table: str) -> int:
    return wh.sql(f'SELECT count(*) FROM "{table}" WHERE dataset = \'nih_cxr14\'').column(0)[0].as_py()


def _consistent(wh: Warehouse) -> int:
    """Images, studies, split_stats and image_labels of NIH all describe one version; its image count."""
    images = _count(wh, "images")
    assert _count(wh, "studies") == images
    assert wh.sql("SELECT sum(images) FROM split_stats WHERE dataset = 'nih_cxr14'").column(0)[0].as_py() == images
    labelled = wh.sql("SELECT count(DISTINCT image_id) FROM labels WHERE dataset = 'nih_cxr14'").column(0)[0].as_py()
    flat = wh.sql("SELECT count(DISTINCT image_id) FROM image_labels WHERE dataset = 'nih_cxr14'").column(0)[0].as_py()
    assert flat == labelled
    return images


def kill_script(folder: Path, point: tuple[str, str, str], env: dict[str, str]) -> Path:
    """A script that ingests NIH with these settings and dies (os._exit(9)) at the point."""
    target, attribute, when = point
    module, _, cls = target.partition(":")
    folder.mkdir()
    script = folder / "kill.py"
    script.write_text(
        textwrap.dedent(f"""
        import importlib, os
        from warehouse import Warehouse
        from warehouse.config import Settings
        owner = importlib.import_module({module!r})
        owner = getattr(owner, {cls!r}) if {cls!r} else owner
        real = getattr(owner, {attribute!r})
        def dying(*args, **kwargs):
            if {when!r} == "before":
                os._exit(9)
            result = real(*args, **kwargs)
            os._exit(9)
        setattr(owner, {attribute!r}, dying)
        Warehouse(Settings.load(env={env!r})).ingest(["nih_cxr14"])
    """)
    )
    return script


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_ingest_never_tears_the_dataset(point, tmp_path, cache_dir, raw_files):
    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-400", 400)
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=small)
    wh = Warehouse(settings)
    wh.ingest(["nih_cxr14"])
    assert _consistent(wh) == 300
    heads = {t: wh.store.delta(t).version() for t in ("images", "studies", "labels")}

    env = {
        "CXR_WAREHOUSE": settings.warehouse,
        "CXR_CATALOG": str(settings.catalog),
        "CXR_CACHE": str(cache_dir),
        "CXR_SOURCE_NIH_CXR14": str(large),
    }
    script = kill_script(tmp_path / "script", KILL_POINTS[point], env)
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent)
    assert proc.returncode == 9, f"the ingest was not killed at {point}"

    assert _consistent(wh) == 300, "the catalog file in place still answers with the previous version"
    wh.refresh_catalog()
    assert _consistent(wh) == (400 if point in PUBLISHED_BEFORE_KILL else 300)
    if point not in HEAD_MAY_RUN_AHEAD | PUBLISHED_BEFORE_KILL:
        assert {t: wh.store.delta(t).version() for t in heads} == heads, "nothing was committed"
        for table in heads:
            rows = wh.store.delta(table).to_pyarrow_dataset().count_rows(filter=pc.field("dataset") == "nih_cxr14")
            assert rows == _count(wh, table), f"a Delta reader of {table} sees only committed files"

    Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=large)).ingest(["nih_cxr14"])
    assert _consistent(wh) == 400
    for table in heads:
        rows = wh.store.delta(table).to_pyarrow_dataset().count_rows(filter=pc.field("dataset") == "nih_cxr14")
        assert rows == _count(wh, table), f"{table}: the table head and the catalog agree again"
    root = Path(settings.warehouse)
    assert not list((root / "_staging" / "nih_cxr14").glob("*")), "the killed run's staging is removed"
    for table in ("images", "studies", "labels", "image_labels"):
        dt = wh.store.delta(table)
        referenced = {u for v in range(dt.version() + 1) for u in wh.store.delta(table, v).file_uris()}
        on_disk = {str(p) for p in (root / table).rglob("*.parquet")}
        assert on_disk <= referenced, f"{table}: files no version names were left behind"
    assert not list(settings.catalog.parent.glob(f".{settings.catalog.name}.*.tmp")), "no half-built catalog"


def test_scratch_of_a_dead_process_is_swept(tmp_path):
    import tempfile

    from warehouse.scratch import scratch_dir, sweep

    dead = subprocess.run(
        [sys.executable, "-c", "from warehouse.scratch import scratch_dir; print(scratch_dir('json'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    ).stdout.strip()
    (Path(dead) / "chunk.json").write_text("{}")
    mine = scratch_dir("sort")
    removed = sweep()
    assert Path(dead) in removed and not Path(dead).exists()
    assert mine.exists() and Path(tempfile.gettempdir()) in mine.parents
    mine.rmdir()


def test_only_dead_runs_staging_folders_are_removed(tmp_path):
    """A dead run's folder goes; the running one's own folder (even if its owner looks dead) and anything
    that is not a run's folder stay, however old."""
    import json
    import socket
    import time

    from warehouse.store import STAGING_OWNER, Store

    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    store = Store(str(tmp_path / "warehouse"))
    for run in ("run-mine", "run-dead"):
        folder = Path(store.staging_dir("nih_cxr14", run))
        folder.mkdir(parents=True)
        owner = {"host": socket.gethostname(), "pids": [dead_pid.pid], "at": 0}
        (folder / STAGING_OWNER).write_text(json.dumps(owner))
    stray = Path(store.staging_dir("nih_cxr14", "run-mine")).parent / "README.txt"
    stray.write_text("notes")
    removed = store.remove_stale_staging("nih_cxr14", keep="run-mine", now=time.time() + 10**9)
    assert [r.rsplit("/", 1)[-1] for r in removed] == ["run-dead"]
    assert Path(store.staging_dir("nih_cxr14", "run-mine")).is_dir() and stray.read_text() == "notes"
    assert not Path(store.staging_dir("nih_cxr14", "run-dead")).exists()

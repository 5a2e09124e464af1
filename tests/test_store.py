"""Partitions are replaced atomically: re-ingests are idempotent, failures leave the old data."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse import Warehouse
from warehouse.schema import TABLES
from warehouse.store import Store

from .conftest import make_settings


def _table_digest(wh: Warehouse, table: str, dataset: str) -> str:
    spec = TABLES[table]
    order = ", ".join(spec.column_names)
    rows = wh.sql(f"SELECT * FROM {table} WHERE dataset = ? ORDER BY {order}", [dataset])
    return hashlib.sha256(str(rows.to_pylist()).encode()).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def nih_warehouse(tmp_path, cache_dir, public_data):
    wh = Warehouse(make_settings(tmp_path, cache_dir))
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    return wh


def test_reingest_gives_identical_tables(nih_warehouse):
    wh = nih_warehouse
    tables = ["patients", "studies", "images", "labels", "boxes"]
    before = {t: _table_digest(wh, t, "nih_cxr14") for t in tables}
    counts_before = {t: wh.sql(f"SELECT count(*) FROM {t}").column(0)[0].as_py() for t in tables}
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert {t: _table_digest(wh, t, "nih_cxr14") for t in tables} == before
    assert {t: wh.sql(f"SELECT count(*) FROM {t}").column(0)[0].as_py() for t in tables} == counts_before
    # retired versions are gone from disk once the catalog has switched
    images_dir = Path(wh.store.partition_dir("images", "nih_cxr14"))
    assert len(list(images_dir.glob("part-*.parquet"))) == 1


def test_ingesting_one_dataset_leaves_the_other_untouched(nih_warehouse):
    wh = nih_warehouse
    nih_dirs = [Path(wh.store.partition_dir(t, "nih_cxr14")) for t in ("patients", "images", "labels")]
    before = {str(d): _files(d) for d in nih_dirs}
    wh.ingest(["chexpert"], say=lambda m: None)
    assert {str(d): _files(d) for d in nih_dirs} == before
    datasets = wh.sql("SELECT DISTINCT dataset FROM images ORDER BY 1").column(0).to_pylist()
    assert datasets == ["chexpert", "nih_cxr14"]


def test_failure_midway_leaves_previous_partition(nih_warehouse, monkeypatch):
    wh = nih_warehouse
    before = {t: _table_digest(wh, t, "nih_cxr14") for t in ("images", "labels")}
    manifest_before = wh.store.manifest("images", "nih_cxr14")

    real_write = pq.ParquetWriter.write_table
    calls = {"n": 0}

    def failing_write(self, table, *args, **kwargs):
        calls["n"] += 1
        if table.schema.metadata[b"table"] == b"images":  # other tables may be written; images fails
            raise OSError("disk full (simulated)")
        return real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing_write)
    with pytest.raises(OSError, match="simulated"):
        wh.ingest(["nih_cxr14"], say=lambda m: None)
    monkeypatch.undo()

    assert wh.store.manifest("images", "nih_cxr14") == manifest_before
    assert {t: _table_digest(wh, t, "nih_cxr14") for t in ("images", "labels")} == before
    # the staged files of the failed version were removed, only the published ones remain
    published = {f["path"] for f in manifest_before.files}
    on_disk = {p.name for p in Path(wh.store.partition_dir("images", "nih_cxr14")).glob("part-*.parquet")}
    assert on_disk == published
    wh.refresh_catalog()
    failed = wh.sql("SELECT dataset, message FROM ingest_runs WHERE status = 'failed'").to_pylist()
    assert failed == [{"dataset": "nih_cxr14", "message": "disk full (simulated)"}]


def test_killed_write_leaves_previous_partition(nih_warehouse, tmp_path):
    """A process killed mid-write (no cleanup runs at all) cannot damage the published partition."""
    wh = nih_warehouse
    before = _table_digest(wh, "labels", "nih_cxr14")
    manifest_before = wh.store.manifest("labels", "nih_cxr14")
    script = tmp_path / "script" / "crash.py"  # not beside the warehouse/ data folder, which would shadow the package
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""
        import os, pyarrow.parquet as pq
        from warehouse import Warehouse
        from warehouse.config import Settings
        real = pq.ParquetWriter.write_table
        def write_then_die(self, table, *a, **k):
            real(self, table, *a, **k)
            if table.schema.metadata[b"table"] == b"labels":
                os._exit(9)   # labels file half-written: killed before closing or publishing
        pq.ParquetWriter.write_table = write_then_die
        settings = Settings.load(env={{"CXR_WAREHOUSE": {str(wh.settings.warehouse)!r},
                                      "CXR_CATALOG": {str(wh.settings.catalog)!r},
                                      "CXR_CACHE": {str(wh.settings.cache)!r}}})
        Warehouse(settings).ingest(["nih_cxr14"], say=lambda m: None)
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=Path(__file__).parents[1])
    assert proc.returncode == 9
    assert wh.store.manifest("labels", "nih_cxr14") == manifest_before
    assert _table_digest(wh, "labels", "nih_cxr14") == before
    labels_dir = Path(wh.store.partition_dir("labels", "nih_cxr14"))
    leftovers = {p.name for p in labels_dir.glob("part-*.parquet")} - {f["path"] for f in manifest_before.files}
    assert leftovers, "the killed run should have left an unpublished file behind"
    # the next good ingest publishes a newer version, after which the leftovers are collected
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert not leftovers & {p.name for p in labels_dir.glob("part-*.parquet")}
    assert _table_digest(wh, "labels", "nih_cxr14") == before


def test_readers_of_an_old_catalog_are_not_blocked(nih_warehouse):
    """A reader holding the catalog open does not stop a rebuild (DuckDB's single-writer lock)."""
    wh = nih_warehouse
    reader = wh.connect()
    try:
        before = reader.execute("SELECT count(*) FROM images").fetchone()[0]
        wh.refresh_catalog()
        assert reader.execute("SELECT count(*) FROM images").fetchone()[0] == before
    finally:
        reader.close()


def test_publish_is_a_single_manifest_switch(tmp_path):
    store = Store(str(tmp_path / "wh"))
    first = pa.table({"dataset": ["d"], "patient_id": ["p1"], "sex": ["F"]})
    from warehouse.conform import conform
    import polars as pl

    v1 = store.stage("patients", "d", conform("patients", pl.from_arrow(first).drop("dataset"), "d"))
    assert store.manifest("patients", "d") is None  # staged is invisible
    store.publish(v1)
    v2 = store.stage("patients", "d", conform("patients", pl.DataFrame({"patient_id": ["p1", "p2"],
                                                                         "sex": ["F", "M"]}), "d"))
    assert store.read("patients", "d").num_rows == 1  # still v1 until the switch
    store.publish(v2)
    assert store.read("patients", "d").num_rows == 2
    assert store.manifest("patients", "d").version == v2.version
    with pytest.raises(Exception, match="published"):
        store.discard(v2)


def test_streamed_tables_are_staged_in_chunks(tmp_path):
    """Tables too big for memory arrive as chunks; a fed table with no chunk is staged empty."""
    import polars as pl

    from warehouse.ingest import ReadDataset, stage_dataset
    from warehouse.sources.base import SourceResult
    from warehouse.sources.quarantine import QUARANTINE_COLUMNS

    store = Store(str(tmp_path / "wh"))
    result = SourceResult(tables={
        "patients": pl.DataFrame({"patient_id": ["1", "2"], "sex": ["F", "M"]}),
        "studies": pl.DataFrame({"study_id": ["a", "b"], "patient_id": ["1", "2"], "split": ["train", "test"]}),
        "images": pl.DataFrame({"image_id": ["a", "b"], "study_id": ["a", "b"], "patient_id": ["1", "2"],
                                "split": ["train", "test"], "view_position": ["PA", "AP"]}),
    })

    def chunks():
        for i in range(3):
            yield "labels", pl.DataFrame({"study_id": ["a", "b"], "image_id": ["a", "b"], "finding": ["x", "x"],
                                          "raw_label": [f"L{i}", f"L{i}"], "value": [1, 0], "labeler": ["nih_nlp"] * 2})
        result.quarantine.append(pl.DataFrame([{"target_table": "labels", "source_file": "f", "row_number": 9,
                                                "line_number": 10, "column_name": "", "value": None,
                                                "reason": "bad", "raw_record": "x"}], schema=QUARANTINE_COLUMNS))

    result.batches = chunks()
    staged = stage_dataset(store, ReadDataset("nih_cxr14", "src", result, "f" * 64, [], 0.0), run_id="r")
    assert staged.rows == {"patients": 2, "studies": 2, "images": 2, "labels": 6, "boxes": 0, "quarantine": 1}
    assert staged.rejected == 1
    for partition in staged.partitions.values():
        store.publish(partition)
    assert store.read("labels", "nih_cxr14").num_rows == 6 and store.read("boxes", "nih_cxr14").num_rows == 0

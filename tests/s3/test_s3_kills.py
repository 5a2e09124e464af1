"""An ingest into an S3 root (moto's server on loopback) SIGKILLed mid-publish never tears the dataset.
Apart from tests/s3/test_s3.py so that the two halves of the S3 tests run on both test workers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from warehouse import Warehouse

from .conftest import s3_env

# tests/test_kills.py kills a local ingest at all eight points; on the object store, the two where S3 differs
# from a local disk: data files already uploaded that no commit names (they must be vacuumed from the bucket),
# and every table committed, its Delta head ahead of the publish that would adopt it.
S3_KILL_POINTS = ("moving the first table's files", "before the publish record")


@pytest.mark.parametrize("point", S3_KILL_POINTS)
def test_a_killed_ingest_on_s3_never_tears_the_dataset(point, s3_settings, cache_dir, raw_files, tmp_path):
    from deltalake import DeltaTable

    from ..conftest import nih_subset
    from ..test_kills import HEAD_MAY_RUN_AHEAD, KILL_POINTS, _consistent, kill_script

    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-400", 400)
    wh = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(small)}))
    wh.ingest(["nih_cxr14"])
    heads = {t: wh.store.delta(t).version() for t in ("images", "studies", "labels")}

    script = kill_script(tmp_path / "script", KILL_POINTS[point], s3_env(s3_settings, cache_dir, large))
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent)
    assert proc.returncode == 9, f"the ingest was not killed at {point}"
    wh.refresh_catalog()
    assert _consistent(wh) == 300, "the catalog adopts only complete publishes"
    if point not in HEAD_MAY_RUN_AHEAD:
        assert {t: wh.store.delta(t).version() for t in heads} == heads, "nothing was committed"

    again = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(large)}))
    again.ingest(["nih_cxr14"])
    assert _consistent(again) == 400
    fs, root = again.store.fs, again.store.root
    assert not fs.find(f"{root}/_staging/nih_cxr14"), "the killed run's staging is removed from the bucket"
    for table in ("images", "studies", "labels"):
        dt = DeltaTable(again.store.table_uri(table), storage_options=again.store.delta_options)
        referenced = {
            fs._strip_protocol(u)
            for v in range(dt.version() + 1)
            for u in DeltaTable(
                again.store.table_uri(table), version=v, storage_options=again.store.delta_options
            ).file_uris()
        }
        on_bucket = {p for p in fs.find(f"{root}/{table}") if p.endswith(".parquet")}
        assert on_bucket <= referenced, f"{table}: files no version names were left in the bucket"

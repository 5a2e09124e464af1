"""The warehouse on an object store: a real S3-protocol server (moto's) on loopback, not a mock.

Both sides are exercised: the warehouse root on S3 (Delta commits through delta-rs, queries through
DuckDB's registered fsspec filesystem) and a dataset's source files on S3.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from warehouse import Warehouse
from warehouse.config import Settings

BUCKET = "cxr-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


SECRET = "cxr-test-secret-4f1d9a"   # moto takes any credentials; a unique one can be searched for


@pytest.fixture
def s3_settings(s3_server, tmp_path, cache_dir, request):
    options = {"endpoint_url": s3_server, "key": "cxr-test-key", "secret": SECRET,
               "client_kwargs": {"region_name": "us-east-1"}}
    env = {"CXR_WAREHOUSE": f"s3://{BUCKET}/{request.node.name}", "CXR_CATALOG": str(tmp_path / "catalog.duckdb"),
           "CXR_CACHE": str(cache_dir), "CXR_STORAGE_OPTIONS": json.dumps(options)}
    return Settings.load(env=env, cwd=tmp_path)


def test_warehouse_root_on_s3(s3_settings, public_data):
    from deltalake import DeltaTable

    wh = Warehouse(s3_settings)
    assert wh.store.protocol in ("s3", "s3a") and not wh.store.local
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 112_120
    assert wh.sql("SELECT count(*) FROM patients").column(0)[0].as_py() == 30_805
    first = wh.sql("SELECT warehouse_version FROM catalog_datasets WHERE dataset = 'nih_cxr14'").column(0)[0].as_py()
    views = wh.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'images'").column(0)[0].as_py()
    assert f"s3://{BUCKET}/" in views

    wh.ingest(["nih_cxr14"], say=lambda m: None)   # a second commit replaces the partition
    dt = DeltaTable(wh.store.table_uri("images"), storage_options=wh.store.delta_options)
    writes = [h for h in dt.history() if h.get("cxr.dataset") == "nih_cxr14"]
    assert len(writes) == 2
    assert all(u.startswith(f"s3://{BUCKET}/") for u in dt.file_uris())
    assert dt.to_pyarrow_dataset().count_rows() == 112_120, "a Delta reader sees one version"
    past = Warehouse(s3_settings, as_of=first)
    assert past.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 112_120
    # the credentials stay with the project's filesystem objects
    stored = [wh.settings.catalog.read_bytes()]
    stored += [wh.store.fs.cat_file(p) for p in wh.store.fs.find(f"{wh.store.root}/_runs")]
    stored += [wh.store.fs.cat_file(p) for p in wh.store.fs.find(f"{wh.store.root}/_publish_log")]
    assert not [b for b in stored if SECRET.encode() in b]


def test_failed_write_on_s3_keeps_the_published_partition(s3_settings, public_data, monkeypatch):
    from warehouse.store import Store

    wh = Warehouse(s3_settings)
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    before = wh.sql("SELECT count(*) FROM labels").column(0)[0].as_py()
    real = Store.commit

    def fail_on_labels(self, staged):
        if staged.table == "labels":
            raise ConnectionError("S3 went away (simulated)")
        return real(self, staged)

    monkeypatch.setattr(Store, "commit", fail_on_labels)
    with pytest.raises(ConnectionError):
        wh.ingest(["nih_cxr14"], say=lambda m: None)
    monkeypatch.undo()
    assert wh.sql("SELECT count(*) FROM labels").column(0)[0].as_py() == before
    assert wh.sql("SELECT status FROM ingest_runs ORDER BY started_at").column(0).to_pylist() == ["published", "failed"]
    assert not wh.store.fs.find(f"{wh.store.root}/_staging/nih_cxr14"), "the failed run's staging is gone"


def test_dataset_source_on_s3(s3_server, s3_settings, public_data):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_settings.storage_options)
    source = f"{BUCKET}/sources/chexpert"
    fs.put_file(str(public_data.root / "chexpert" / "train.csv.gz"), f"{source}/train.csv.gz")
    settings = s3_settings.with_overrides(sources={"chexpert": f"s3://{source}"})
    wh = Warehouse(settings)
    wh.ingest(["chexpert"], say=lambda m: None)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 223_414
    fingerprint = wh.sql("SELECT source_fingerprint, source_location FROM catalog_datasets "
                         "WHERE dataset='chexpert'").to_pylist()[0]
    assert fingerprint["source_location"] == f"s3://{source}" and fingerprint["source_fingerprint"]

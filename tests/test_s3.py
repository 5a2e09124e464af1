"""The warehouse on an object store: a real S3-protocol server (moto's) on loopback, not a mock.

Both sides are exercised: the warehouse root on S3 (publish by manifest PUT, queries through
DuckDB's registered fsspec filesystem) and a dataset's source files on S3.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
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


@pytest.fixture
def s3_settings(s3_server, tmp_path, cache_dir, request):
    options = {"endpoint_url": s3_server, "key": "test", "secret": "test",
               "client_kwargs": {"region_name": "us-east-1"}}
    env = {"CXR_WAREHOUSE": f"s3://{BUCKET}/{request.node.name}", "CXR_CATALOG": str(tmp_path / "catalog.duckdb"),
           "CXR_CACHE": str(cache_dir), "CXR_STORAGE_OPTIONS": json.dumps(options)}
    return Settings.load(env=env, cwd=tmp_path)


def test_warehouse_root_on_s3(s3_settings, public_data):
    wh = Warehouse(s3_settings)
    assert wh.store.protocol in ("s3", "s3a") and not wh.store.local
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 112_120
    assert wh.sql("SELECT count(*) FROM patients").column(0)[0].as_py() == 30_805
    manifest = wh.store.manifest("images", "nih_cxr14")
    first_files = set(wh.store.file_urls(manifest))
    assert all(u.startswith(f"s3://{BUCKET}/") for u in first_files)

    wh.ingest(["nih_cxr14"], say=lambda m: None)   # a second version replaces the first
    second = wh.store.manifest("images", "nih_cxr14")
    assert second.version > manifest.version
    remaining = {wh.store.fs.unstrip_protocol(p) for p in wh.store.fs.find(wh.store.partition_dir("images", "nih_cxr14"))
                 if p.endswith(".parquet")}
    assert remaining == set(wh.store.file_urls(second)), "retired files are removed after the switch"
    with wh.store.fs.open(wh.store.file_urls(second)[0]) as f:
        metadata = pq.read_schema(f).metadata
    assert metadata[b"cxr.dataset"] == b"nih_cxr14" and metadata[b"cxr.version"] == second.version.encode()


def test_failed_write_on_s3_keeps_the_published_partition(s3_settings, public_data, monkeypatch):
    wh = Warehouse(s3_settings)
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    before = wh.store.manifest("labels", "nih_cxr14")
    real = pq.ParquetWriter.write_table

    def fail_on_labels(self, table, *args, **kwargs):
        if table.schema.metadata[b"table"] == b"labels":
            raise ConnectionError("S3 went away (simulated)")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_on_labels)
    with pytest.raises(ConnectionError):
        wh.ingest(["nih_cxr14"], say=lambda m: None)
    monkeypatch.undo()
    assert wh.store.manifest("labels", "nih_cxr14") == before
    assert wh.sql("SELECT count(*) FROM labels").column(0)[0].as_py() == before.rows


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

"""The warehouse on an object store: a real S3-protocol server (moto's) on loopback, not a mock.

Both sides are exercised: the warehouse root on S3 (Delta commits through delta-rs, queries through
DuckDB's registered fsspec filesystem) and a dataset's source files on S3.
"""

from __future__ import annotations

import json
import os
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    import boto3

    boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=BUCKET)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


SECRET = "cxr-test-secret-4f1d9a"  # moto takes any credentials; a unique one can be searched for


@pytest.fixture
def s3_settings(s3_server, tmp_path, cache_dir, request):
    options = {
        "endpoint_url": s3_server,
        "key": "cxr-test-key",
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    prefix = "".join(c if c.isalnum() else "-" for c in request.node.name)  # no glob characters in paths
    env = {
        "CXR_WAREHOUSE": f"s3://{BUCKET}/{prefix}",
        "CXR_CATALOG": str(tmp_path / "catalog.duckdb"),
        "CXR_CACHE": str(cache_dir),
        "CXR_STORAGE_OPTIONS": json.dumps(options),
    }
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

    wh.ingest(["nih_cxr14"], say=lambda m: None)  # a second commit replaces the partition
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


def test_failed_write_on_s3_keeps_the_published_partition(s3_settings, raw_files, tmp_path, monkeypatch):
    from warehouse.store import Store

    from .conftest import nih_subset

    wh = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(nih_subset(raw_files, tmp_path / "src", 300))}))
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


def test_dataset_source_on_s3(s3_server, s3_settings, public_data, tmp_path):
    import csv
    import gzip

    import fsspec

    # the first 3,000 rows of the real train.csv (gzipped, as it ships), counted here with the csv module
    with gzip.open(public_data.root / "chexpert" / "train.csv.gz", "rt", newline="") as f:
        lines = [next(f) for _ in range(3_001)]
    local = tmp_path / "train.csv.gz"
    with gzip.open(local, "wt", newline="") as f:
        f.write("".join(lines))
    images = len(list(csv.DictReader(lines)))
    fs = fsspec.filesystem("s3", **s3_settings.storage_options)
    source = f"{BUCKET}/sources/chexpert"
    fs.put_file(str(local), f"{source}/train.csv.gz")
    settings = s3_settings.with_overrides(sources={"chexpert": f"s3://{source}"})
    wh = Warehouse(settings)
    wh.ingest(["chexpert"], say=lambda m: None)
    assert images == 3_000
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == images
    fingerprint = wh.sql(
        "SELECT source_fingerprint, source_location FROM catalog_datasets WHERE dataset='chexpert'"
    ).to_pylist()[0]
    assert fingerprint["source_location"] == f"s3://{source}" and fingerprint["source_fingerprint"]


# --- the kill, volume and credential tests, on the object store --------------------------------------------------

S3_KILL_POINTS = ("staging", "writing the first table's files", "between table commits", "before the publish record")


def _s3_env(settings, cache_dir, source) -> dict[str, str]:
    return {
        "CXR_WAREHOUSE": settings.warehouse,
        "CXR_CATALOG": str(settings.catalog),
        "CXR_CACHE": str(cache_dir),
        "CXR_STORAGE_OPTIONS": json.dumps(settings.storage_options),
        "CXR_SOURCE_NIH_CXR14": str(source),
    }


@pytest.mark.parametrize("point", S3_KILL_POINTS)
def test_a_killed_ingest_on_s3_never_tears_the_dataset(point, s3_settings, cache_dir, raw_files, tmp_path):
    from deltalake import DeltaTable

    from .conftest import nih_subset
    from .test_kills import HEAD_MAY_RUN_AHEAD, KILL_POINTS, _consistent, kill_script

    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-400", 400)
    wh = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(small)}))
    wh.ingest(["nih_cxr14"])
    heads = {t: wh.store.delta(t).version() for t in ("images", "studies", "labels")}

    script = kill_script(tmp_path / "script", KILL_POINTS[point], _s3_env(s3_settings, cache_dir, large))
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


def test_a_shrinking_dataset_on_s3_is_blocked_unless_allowed(s3_settings, raw_files, tmp_path):
    from warehouse.gated import IngestBlocked

    from .conftest import nih_subset

    large = nih_subset(raw_files, tmp_path / "src-500", 500)
    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(large)})).ingest(["nih_cxr14"])
    wh = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(small)}))
    with pytest.raises(IngestBlocked, match="volume__no_shrink"):
        wh.ingest(["nih_cxr14"])
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 500
    assert wh.sql("SELECT status FROM ingest_runs ORDER BY started_at").column(0).to_pylist() == [
        "published",
        "blocked",
    ]
    wh.ingest(["nih_cxr14"], allow_shrink=True)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 300


def test_credentials_never_reach_storage_logs_or_dagster(s3_settings, cache_dir, raw_files, tmp_path):
    """`cxr ingest` through Dagster, then a search for the secret in everything the run left behind."""
    import shutil
    from pathlib import Path

    from .conftest import nih_subset

    repo = Path(__file__).resolve().parents[1]
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(repo / "dagster.yaml", home / "dagster.yaml")
    source = nih_subset(raw_files, tmp_path / "src", 300)
    env = {
        **_s3_env(s3_settings, cache_dir, source),
        "DAGSTER_HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    cxr = Path(sys.executable).with_name("cxr")
    ingest = subprocess.run([str(cxr), "ingest", "-d", "nih_cxr14"], env=env, capture_output=True, cwd=home)
    assert ingest.returncode == 0, ingest.stderr.decode()[-2000:]
    query = subprocess.run(
        [str(cxr), "sql", "SELECT count(*) AS n FROM images", "--format", "json"],
        env=env,
        capture_output=True,
        cwd=home,
    )
    assert json.loads(query.stdout) == [{"n": 300}]

    wh = Warehouse(s3_settings)
    searched = {
        "cxr ingest output": ingest.stdout + ingest.stderr,
        "cxr sql output": query.stdout + query.stderr,
        "catalog file": s3_settings.catalog.read_bytes(),
    }
    searched |= {f"s3://{p}": wh.store.fs.cat_file(p) for p in wh.store.fs.find(wh.store.root)}
    dagster_files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in dagster_files), "Dagster recorded its runs in this instance"
    searched |= {str(p): p.read_bytes() for p in dagster_files}
    views = wh.sql("SELECT string_agg(sql, ';') FROM duckdb_views()").column(0)[0].as_py()
    searched["view definitions"] = views.encode()
    assert len(searched) > 20
    leaked = [where for where, data in searched.items() if SECRET.encode() in data]
    assert not leaked, f"the secret was found in {leaked}"

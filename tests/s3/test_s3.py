"""The warehouse on an object store: a real S3-protocol server (moto's) on loopback, not a mock.

Both sides are exercised: the warehouse root on S3 (Delta commits through delta-rs, queries through
DuckDB's registered fsspec filesystem) and a dataset's source files on S3; then the shrink gate there, and a
search for the credentials in everything an ingest through Dagster leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from warehouse import Warehouse

from .conftest import BUCKET, SECRET, s3_env


def test_warehouse_root_on_s3(s3_settings, raw_files, tmp_path):
    import csv

    from deltalake import DeltaTable

    from ..conftest import nih_subset

    source = nih_subset(raw_files, tmp_path / "src", 3_000)  # the first rows of the real file, recounted here
    with (source / "Data_Entry_2017_v2020.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    images, patients = len(rows), len({r["Patient ID"] for r in rows})
    wh = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(source)}))
    assert wh.store.protocol in ("s3", "s3a") and not wh.store.local
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == images == 3_000
    assert wh.sql("SELECT count(*) FROM patients").column(0)[0].as_py() == patients
    first = wh.sql("SELECT warehouse_version FROM catalog_datasets WHERE dataset = 'nih_cxr14'").column(0)[0].as_py()
    views = wh.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'images'").column(0)[0].as_py()
    assert f"s3://{BUCKET}/" in views

    wh.ingest(["nih_cxr14"], say=lambda m: None)  # a second commit replaces the partition
    dt = DeltaTable(wh.store.table_uri("images"), storage_options=wh.store.delta_options)
    writes = [h for h in dt.history() if h.get("cxr.dataset") == "nih_cxr14"]
    assert len(writes) == 2
    assert all(u.startswith(f"s3://{BUCKET}/") for u in dt.file_uris())
    assert dt.to_pyarrow_dataset().count_rows() == images, "a Delta reader sees one version"
    past = Warehouse(s3_settings.with_overrides(sources={"nih_cxr14": str(source)}), as_of=first)
    assert past.sql("SELECT count(*) FROM images").column(0)[0].as_py() == images
    # the credentials stay with the project's filesystem objects
    stored = [wh.settings.catalog.read_bytes()]
    stored += [wh.store.fs.cat_file(p) for p in wh.store.fs.find(f"{wh.store.root}/_runs")]
    stored += [wh.store.fs.cat_file(p) for p in wh.store.fs.find(f"{wh.store.root}/_publish_log")]
    assert not [b for b in stored if SECRET.encode() in b]


def test_vacuum_on_s3_removes_a_retired_version_and_keeps_a_kept_one(s3_settings):
    """fsspec lists S3 keys as bucket/key, not as the local absolute paths: the vacuum must still match them."""
    from ..test_store_files import _studies

    store = Warehouse(s3_settings).store
    versions = [store.commit(store.stage("studies", "nih_cxr14", _studies(2, tag=t), run_id=t)) for t in "abc"]
    files = [{f["url"] for f in store.partition_files("studies", "nih_cxr14", v)} for v in versions]

    def on_storage(urls: set[str]) -> set[str]:
        store.fs.invalidate_cache()
        return {u for u in urls if store.fs.exists(u)}

    assert store.vacuum("studies", retention_hours=168, keep_versions=[]) == []
    store.vacuum("studies", retention_hours=0, keep_versions=[versions[0]])
    assert on_storage(files[0]) == files[0] and on_storage(files[2]) == files[2]
    assert on_storage(files[1]) == set(), "the retired version no publish keeps is gone from the bucket"
    store.vacuum("studies", retention_hours=0, keep_versions=[])
    assert on_storage(files[0]) == set() and on_storage(files[2]) == files[2]
    assert store.vacuum("studies", retention_hours=0, keep_versions=[]) == [], "only tombstones are left"


def test_failed_write_on_s3_keeps_the_published_partition(s3_settings, raw_files, tmp_path, monkeypatch):
    from warehouse.store import Store

    from ..conftest import nih_subset

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


def test_a_shrinking_dataset_on_s3_is_blocked_unless_allowed(s3_settings, raw_files, tmp_path):
    from warehouse.gated import IngestBlocked

    from ..conftest import nih_subset

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

    from ..conftest import nih_subset

    repo = Path(__file__).resolve().parents[2]
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(repo / "dagster.yaml", home / "dagster.yaml")
    source = nih_subset(raw_files, tmp_path / "src", 300)
    env = {
        **s3_env(s3_settings, cache_dir, source),
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

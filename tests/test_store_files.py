"""The table layer's files, checked against the Delta protocol and against independent readers.

Delta readers skip files by the statistics in the log (numRecords, minValues, maxValues, nullCount): a
wrong minimum silently hides rows from a filtered query. So each file's statistics are recounted here
with DuckDB over the file itself. Files roll over at `file_rows`, sub-partitions get their own folders,
and a partition overwrite leaves other datasets and older versions readable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute  # for pa.compute.field
import pyarrow.parquet
import pytest

from warehouse.schema import TABLES
from warehouse.store import Store, StoreError, delta_storage_options

RANGED = ("int", "float", "double", "varchar", "date")  # the types the protocol's min/max cover here


def _studies(n: int, *, dataset: str = "nih_cxr14", tag: str = "") -> pa.Table:
    """n studies in canonical schema: nulls, a date, floats, an int, and one string too long for stats."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "dataset": dataset,
                "study_id": f"s{tag}{i:03d}",
                "patient_id": f"p{i % 5}",
                "split": ("train", "valid", "test")[i % 3],
                "study_date": dt.date(2001, 1, 1) + dt.timedelta(days=37 * i) if i % 4 else None,
                "age_years": float(90 - 3 * i) if i % 6 else None,
                "age_source": None,  # all null: no min or max may be written
                "weight_kg": 50.5 + i,
                "institution": ("x" * 70 if i == 11 else f"site {i % 3}"),
                "follow_up_number": i % 7 if i % 5 else None,
                "pediatric": bool(i % 2),
                "source_attributes": [("k", str(i))],
            }
        )
    return pa.Table.from_pylist(rows, schema=TABLES["studies"].schema)


def _add_actions(root, table: str, version: int) -> list[dict]:
    """The add actions of one commit, read from the log file itself (the protocol's words, not a reader's)."""
    log = root / table / "_delta_log" / f"{version:020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [a["add"] for a in actions if "add" in a]


def test_each_files_statistics_match_a_recount_of_the_file(tmp_path):
    # the writer folds each row group it writes into the file's statistics; several groups per file here, as
    # real tables have, and batches that do not line up with them
    store = Store(str(tmp_path / "wh"))
    data = _studies(20)
    writer = store.writer("studies", "nih_cxr14", "run1", file_rows=7, row_group_rows=3)
    writer.write(data.slice(0, 5))
    writer.write(data.slice(5))
    staged = store.staged_from_writer(writer)
    assert [f["rows"] for f in staged.files] == [7, 7, 6], "files roll over at file_rows"
    assert staged.rows == 20
    version = store.commit(staged)

    actions = _add_actions(tmp_path / "wh", "studies", version)
    assert len(actions) == 3
    con = duckdb.connect()
    table_dir = tmp_path / "wh" / "studies"
    for action in actions:
        path = table_dir / action["path"]
        assert action["size"] == os.path.getsize(path)
        assert action["partitionValues"] == {"dataset": "nih_cxr14"}
        assert action["dataChange"] is True
        stats = json.loads(action["stats"])
        file = f"read_parquet('{path}', hive_partitioning = false)"
        columns = con.execute(f"DESCRIBE SELECT * FROM {file}").fetchall()
        names = [c[0] for c in columns]
        assert "dataset" not in names, "partition values live in the path only"
        assert stats["numRecords"] == con.execute(f"SELECT count(*) FROM {file}").fetchone()[0]
        for name, kind, *_ in columns:
            nulls, low, high, longest = con.execute(
                f'SELECT count(*) - count("{name}"), min("{name}"), max("{name}"), '
                f"max(length(\"{name}\"::VARCHAR)) FROM {file}"
            ).fetchone()
            assert stats["nullCount"][name] == nulls, (action["path"], name)
            ranged = kind.lower().startswith(RANGED) and low is not None
            if kind.upper() == "VARCHAR" and longest is not None and longest > 64:
                ranged = False  # the writer leaves long strings out rather than truncate them
            if not ranged:
                assert name not in stats["minValues"] and name not in stats["maxValues"], (action["path"], name)
                continue
            want_low, want_high = (str(v) if isinstance(v, dt.date) else v for v in (low, high))
            assert stats["minValues"][name] == pytest.approx(want_low), (action["path"], name)
            assert stats["maxValues"][name] == pytest.approx(want_high), (action["path"], name)

    # every reader sees the rows, in the staged order
    assert store.read("studies", "nih_cxr14").column("study_id").to_pylist() == data.column("study_id").to_pylist()
    import polars as pl

    seen = pl.read_delta(str(table_dir)).sort("study_id")
    assert seen["age_years"].to_list() == pl.from_arrow(data).sort("study_id")["age_years"].to_list()
    # filters that the readers may answer by skipping files on those statistics find every row
    old = pl.scan_delta(str(table_dir)).filter(pl.col("study_date") >= dt.date(2002, 1, 1)).collect()
    want = [r for r in data.to_pylist() if r["study_date"] and r["study_date"] >= dt.date(2002, 1, 1)]
    assert sorted(old["study_id"].to_list()) == sorted(r["study_id"] for r in want)
    from deltalake import DeltaTable

    heavy = DeltaTable(str(table_dir)).to_pyarrow_dataset().to_table(filter=pa.compute.field("weight_kg") > 60)
    assert heavy.num_rows == sum(1 for r in data.to_pylist() if r["weight_kg"] > 60)


def test_sub_partitions_get_their_own_folders_and_values(tmp_path):
    store = Store(str(tmp_path / "wh"))
    schema = TABLES["qa_answers"].schema
    rows = [
        {
            "dataset": "mimic_qba",
            "study_id": f"s{i:02d}",
            "split": ("train", "validate", "test")[i % 3],
            "question_id": "q",
            "answer_id": str(i),
            "answer_level": i % 2,
            "entities": ["edema"] if i % 2 else None,
        }
        for i in range(11)
    ]
    staged = store.stage("qa_answers", "mimic_qba", pa.Table.from_pylist(rows, schema=schema), run_id="r", file_rows=2)
    version = store.commit(staged)
    for action in _add_actions(tmp_path / "wh", "qa_answers", version):
        split = action["partitionValues"]["split"]
        assert action["partitionValues"]["dataset"] == "mimic_qba"
        assert action["path"].startswith(f"dataset=mimic_qba/split={split}/")
    import polars as pl

    seen = pl.read_delta(str(tmp_path / "wh" / "qa_answers")).sort("study_id")
    assert seen.select("study_id", "split", "entities").rows() == [
        (r["study_id"], r["split"], r["entities"]) for r in rows
    ]
    # each split's rows in files of at most two
    per_split = {}
    for f in staged.files:
        per_split.setdefault(f["path"].split("/", 1)[0], []).append(f["rows"])
    assert per_split == {"split=train": [2, 2], "split=validate": [2, 2], "split=test": [2, 1]}


def test_rows_without_their_sub_partition_value_are_refused_not_dropped(tmp_path):
    store = Store(str(tmp_path / "wh"))
    schema = TABLES["qa_answers"].schema
    columns = {
        "dataset": ["mimic_qba"] * 3, "study_id": ["s0", "s1", "s2"], "split": ["train", None, "train"],
        "question_id": ["q"] * 3, "answer_id": ["0", "1", "2"], "answer_level": [0] * 3, "entities": [None] * 3,
    }  # fmt: skip
    # already in the table's schema, so no cast would catch the null
    rows = pa.Table.from_arrays([pa.array(columns.get(f.name, [None] * 3), f.type) for f in schema], schema=schema)
    with pytest.raises(StoreError, match=r"qa_answers/dataset=mimic_qba: 1 rows have no split value"):
        store.stage("qa_answers", "mimic_qba", rows, run_id="r")
    assert not (tmp_path / "wh" / "_staging" / "mimic_qba" / "r" / "qa_answers" / "dataset=mimic_qba").exists()


def test_an_overwrite_replaces_one_dataset_and_keeps_the_old_version(tmp_path):
    store = Store(str(tmp_path / "wh"))
    first = store.commit(store.stage("studies", "nih_cxr14", _studies(4), run_id="r1"))
    other = store.commit(store.stage("studies", "chexpert", _studies(3, dataset="chexpert"), run_id="r2"))
    second = store.commit(store.stage("studies", "nih_cxr14", _studies(2, tag="b"), run_id="r3"))
    assert first < other < second
    assert store.version_of_commit("studies", "nih_cxr14", "r1") == first
    assert store.version_of_commit("studies", "chexpert", "r2") == other
    with pytest.raises(StoreError, match="run r2 for nih_cxr14"):
        store.version_of_commit("studies", "nih_cxr14", "r2")

    assert store.read("studies", "nih_cxr14").column("study_id").to_pylist() == ["sb000", "sb001"]
    assert store.read("studies", "nih_cxr14", first).column("study_id").to_pylist() == ["s000", "s001", "s002", "s003"]
    assert store.read("studies", "chexpert").num_rows == 3
    assert [f["rows"] for f in store.partition_files("studies", "chexpert", second)] == [3]
    assert [f["rows"] for f in store.partition_files("studies", "nih_cxr14", first)] == [4]
    assert store.partition_files("studies", "padchest", second) == []
    assert store.partition_files("no_such_table", "nih_cxr14", 0) == []
    assert store.columns_at("studies", first) == TABLES["studies"].column_names
    history = {h["version"]: h.get("cxr.rows") for h in store.delta("studies").history()}
    assert (history[first], history[other], history[second]) == ("4", "3", "2")


def test_vacuum_removes_only_retired_files_past_retention_that_no_kept_version_names(tmp_path):
    store = Store(str(tmp_path / "wh"))
    versions = [store.commit(store.stage("studies", "nih_cxr14", _studies(2, tag=t), run_id=t)) for t in "abc"]
    store.commit(store.stage("studies", "chexpert", _studies(2, dataset="chexpert"), run_id="d"))

    def on_disk(version: int) -> set[str]:
        files = {f["url"] for f in store.partition_files("studies", "nih_cxr14", version)}
        return {f for f in files if os.path.exists(f)}

    files = [{f["url"] for f in store.partition_files("studies", "nih_cxr14", v)} for v in versions]
    assert store.vacuum("studies", retention_hours=168, keep_versions=[]) == [], "nothing retired a week ago"
    assert all(on_disk(v) == f for v, f in zip(versions, files, strict=True))

    removed = store.vacuum("studies", retention_hours=0, keep_versions=[versions[0]])
    assert on_disk(versions[0]) == files[0], "a kept version's files stay"
    assert on_disk(versions[1]) == set(), "a retired version nobody keeps goes"
    assert on_disk(versions[2]) == files[2], "the live files stay"
    assert len(removed) == len(files[1])
    assert store.read("studies", "chexpert").num_rows == 2
    store.vacuum("studies", retention_hours=0, keep_versions=[])
    assert on_disk(versions[0]) == set(), "once no publish keeps it, it goes too"
    assert on_disk(versions[2]) == files[2]
    # the log still holds the tombstones, and delta-rs would name them again: nothing is on storage to remove
    assert store.vacuum("studies", retention_hours=0, keep_versions=[]) == []


# Commits `n` versions of one dataset's studies, each a new 2-row partition, once told to go (a file appears).
COMMITTER = """
import json, os, sys, time
from tests.test_store_files import _studies
from warehouse.store import Store
root, dataset, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = Store(root)
staged = [store.stage("studies", dataset, _studies(2, dataset=dataset, tag=str(i)), run_id=f"{dataset}-{i}")
          for i in range(n)]
while not os.path.exists(go):
    time.sleep(0.005)
print(json.dumps([store.commit(s) for s in staged]))
"""


def test_two_datasets_committing_to_one_table_at_once_both_land(tmp_path):
    """dagster.yaml lets two runs go at once, and delta-rs fails a partition overwrite that another dataset's
    commit overtook ("a concurrent transaction deleted data this operation read"). Both must land."""
    store = Store(str(tmp_path / "wh"))
    store.commit(store.stage("studies", "padchest", _studies(1, dataset="padchest"), run_id="first"))
    go, n = tmp_path / "go", 12
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", COMMITTER, store.root, dataset, str(n), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for dataset in ("nih_cxr14", "chexpert")
    ]
    time.sleep(3)  # both children have imported and staged by now (they wait for the file either way)
    go.touch()
    outputs = [c.communicate(timeout=300) for c in children]
    assert all(c.returncode == 0 for c in children), [err[-2000:] for _, err in outputs]
    versions = [json.loads(out) for out, _ in outputs]

    every = sorted(v for vs in versions for v in vs)
    assert every == list(range(2, 2 + 2 * n)), "each commit is its own version, none lost"
    assert all(vs == sorted(vs) for vs in versions)
    history = {h["version"]: h for h in store.delta("studies").history()}
    for dataset, vs in zip(("nih_cxr14", "chexpert"), versions, strict=True):
        assert [history[v]["cxr.run_id"] for v in vs] == [f"{dataset}-{i}" for i in range(n)]
        assert store.read("studies", dataset).column("study_id").to_pylist() == [f"s{n - 1}000", f"s{n - 1}001"]
        assert store.read("studies", dataset, vs[0]).column("study_id").to_pylist() == ["s0000", "s0001"]
    assert store.read("studies", "padchest").num_rows == 1, "the third dataset is untouched"


def test_an_aborted_writer_leaves_nothing_and_a_missing_staged_file_is_named(tmp_path):
    store = Store(str(tmp_path / "wh"))
    writer = store.writer("studies", "nih_cxr14", "r1", file_rows=3)
    writer.write(_studies(5))
    folder = writer.folder
    assert os.listdir(folder)
    writer.abort()
    assert not os.path.exists(folder) and writer.files == []

    staged = store.stage("studies", "nih_cxr14", _studies(5), run_id="r2", file_rows=3)
    os.remove(f"{staged.folder}/{staged.files[1]['path']}")
    with pytest.raises(StoreError, match=r"studies/dataset=nih_cxr14: staged file .*part-00001\.parquet is missing"):
        store.commit(staged)


def test_row_groups_are_whole_whatever_size_the_batches_come_in(tmp_path):
    import pyarrow.parquet as pq

    store = Store(str(tmp_path / "wh"))
    data = _studies(23)
    writer = store.writer("studies", "nih_cxr14", "r1", file_rows=10, row_group_rows=4)
    offset = 0
    for size in (1, 2, 5, 1, 3, 7, 4):  # 23 rows in batches that straddle every group and file boundary
        writer.write(data.slice(offset, size))
        offset += size
    staged = store.staged_from_writer(writer)
    groups = []
    for f in staged.files:
        meta = pq.ParquetFile(f"{staged.folder}/{f['path']}").metadata
        groups.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        assert "dataset" not in meta.schema.names, "a staged file is already a Delta data file"
    assert groups == [[4, 4, 2], [4, 4, 2], [3]]
    assert store.read_staged("studies", staged).equals(data), "every row, in order, partition values put back"


def test_the_commit_moves_the_staged_files_and_a_retried_commit_finds_them_moved(tmp_path, monkeypatch):
    import hashlib

    from deltalake import DeltaTable

    store = Store(str(tmp_path / "wh"))
    staged = store.stage("studies", "nih_cxr14", _studies(9), run_id="r1", file_rows=4)
    digests = [hashlib.sha256(Path(staged.folder, f["path"]).read_bytes()).hexdigest() for f in staged.files]
    store.ensure_table(TABLES["studies"])
    real = DeltaTable.create_write_transaction

    def lost(*args, **kwargs):  # the process died after moving the files, before its log entry
        monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
        raise OSError("connection reset")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", lost)
    with pytest.raises(OSError, match="connection reset"):
        store.commit(staged)
    assert not any(Path(staged.folder, f["path"]).exists() for f in staged.files), "moved, not copied"
    version = store.commit(staged)  # the publish step again, as Dagster retries it
    actions = _add_actions(tmp_path / "wh", "studies", version)
    moved = [hashlib.sha256((tmp_path / "wh" / "studies" / a["path"]).read_bytes()).hexdigest() for a in actions]
    assert sorted(moved) == sorted(digests), "the table holds the staged bytes themselves"
    assert store.read("studies", "nih_cxr14", version).to_pylist() == _studies(9).to_pylist()


def test_a_root_with_a_partition_like_folder_is_refused_by_name(tmp_path):
    # the premise: DuckDB reads a key=value folder anywhere in the path as a column, over the one in the table
    folder = tmp_path / "dataset=prod" / "studies" / "dataset=nih_cxr14"
    folder.mkdir(parents=True)
    pa.parquet.write_table(pa.table({"study_id": ["s1"]}), folder / "part.parquet")
    sql = f"SELECT dataset FROM read_parquet('{folder}/part.parquet', hive_partitioning = true)"
    assert duckdb.sql(sql).fetchall() == [("prod",)]
    with pytest.raises(StoreError, match=r"folder 'dataset=prod' looks like a partition"):
        Store(str(tmp_path / "dataset=prod" / "wh"))
    with pytest.raises(StoreError, match=r"folder 'env=prod'"):
        Store("memory://bucket/env=prod/wh")


def test_a_rewrite_numbers_its_files_after_the_old_ones(tmp_path):
    store = Store(str(tmp_path / "wh"))
    writer = store.writer("studies", "nih_cxr14", "r1", file_rows=2, first_file_index=4)
    writer.write(_studies(3))
    assert [f["path"] for f in writer.close()] == ["part-00004.parquet", "part-00005.parquet"]


def test_delta_options_follow_the_fsspec_options():
    assert delta_storage_options("/data/wh", {"key": "k"}) == {}
    assert delta_storage_options("file:///data/wh", {"key": "k"}) == {}
    options = delta_storage_options(
        "s3://bucket/wh",
        {
            "key": "AK",
            "secret": "SK",
            "token": "T",
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
            "AWS_CONDITIONAL_PUT": "etag",
            "anon": False,
        },
    )
    assert options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_SESSION_TOKEN": "T",
        "AWS_REGION": "eu-west-1",
        "AWS_CONDITIONAL_PUT": "etag",
        "AWS_ALLOW_HTTP": "true",
    }
    # a setting given in delta-rs's own words wins over the mapped one; https needs no AWS_ALLOW_HTTP
    options = delta_storage_options(
        "s3://bucket/wh", {"endpoint_url": "https://s3.example", "AWS_REGION": "us-east-1", "region_name": "x"}
    )
    assert options == {"AWS_ENDPOINT_URL": "https://s3.example", "AWS_REGION": "us-east-1"}


def test_duckdb_reads_a_local_root_itself_and_a_remote_root_through_fsspec(tmp_path):
    """A local warehouse is read by DuckDB's own file system (Python fsspec in every read would be slower);
    a remote root's fsspec file system is registered once, however many times a connection is set up."""
    from warehouse.views import register_store

    con = duckdb.connect()
    register_store(con, Store(str(tmp_path / "wh")))
    assert con.list_filesystems() == []
    remote = Store("memory://cxr-views-test/wh")
    assert not remote.local
    register_store(con, remote)
    register_store(con, remote)
    assert con.filesystem_is_registered(remote.protocol)
    assert len(con.list_filesystems()) == 1

"""The Delta table layer: one commit per table and dataset, complete publishes only, time travel,
a catalog that survives a move, and readers that need no project code.

Fixtures are cut from the real NIH file (its first rows), so each ingest takes seconds.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from warehouse import Warehouse
from warehouse.config import Settings
from warehouse.schema import TABLES
from warehouse.store import Store

from .conftest import make_settings, nih_subset

NIH_TABLES = (
    "patients",
    "studies",
    "images",
    "labels",
    "boxes",
    "quarantine",
    "split_stats",
    "demographics",
    "image_labels",
    "label_agreement",
)


def csv_counts(folder: Path) -> dict[str, int]:
    """Images and patients counted straight from the CSV with the csv module."""
    with open(folder / "Data_Entry_2017_v2020.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"images": len(rows), "patients": len({r["Patient ID"] for r in rows})}


def count(wh: Warehouse, table: str, dataset: str = "nih_cxr14") -> int:
    return wh.sql(f'SELECT count(*) FROM "{table}" WHERE dataset = ?', [dataset]).column(0)[0].as_py()


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def two_versions(tmp_path, cache_dir, raw_files):
    """NIH ingested twice from sources of different sizes: 300 rows, then 500."""
    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-500", 500)
    first = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=small))
    first.ingest(["nih_cxr14"])
    between = datetime.now(UTC)
    second = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=large))
    second.ingest(["nih_cxr14"])
    return second, csv_counts(small), csv_counts(large), between


def test_reingest_is_one_delta_commit_per_table_and_time_travels(two_versions, monkeypatch):
    from deltalake import DeltaTable

    wh, small, large, between = two_versions
    assert count(wh, "images") == large["images"] and count(wh, "patients") == large["patients"]
    runs = wh.sql(
        "SELECT run_id, versions, warehouse_version FROM ingest_runs WHERE status = 'published' ORDER BY started_at"
    ).to_pylist()
    assert len(runs) == 2
    for table in NIH_TABLES:
        history = DeltaTable(wh.store.table_uri(table)).history()
        writes = [h for h in history if h.get("cxr.dataset") == "nih_cxr14"]
        assert [h["cxr.run_id"] for h in writes] == [runs[1]["run_id"], runs[0]["run_id"]], table
    first_version = runs[0]["warehouse_version"]
    meta = "SELECT value FROM catalog_meta WHERE key = 'warehouse_version'"
    assert wh.sql(meta).column(0)[0].as_py() == str(runs[1]["warehouse_version"])
    past = Warehouse(wh.settings, as_of=first_version)
    assert past.sql(meta).column(0)[0].as_py() == str(first_version), "the past catalog names its own version"
    as_of = "SELECT value FROM catalog_meta WHERE key = 'as_of'"
    assert (wh.sql(as_of).column(0)[0].as_py(), past.sql(as_of).column(0)[0].as_py()) == ("", str(first_version))
    assert count(past, "images") == small["images"] and count(past, "patients") == small["patients"]
    assert count(past, "split_stats") == 1
    assert past.sql("SELECT sum(images) FROM split_stats").column(0)[0].as_py() == small["images"]
    # the same through the CLI, by version and by time
    from warehouse.cli import main

    monkeypatch.setenv("CXR_WAREHOUSE", wh.settings.warehouse)
    monkeypatch.setenv("CXR_CATALOG", str(wh.settings.catalog))
    assert (
        main(
            [
                "sql",
                "SELECT count(*) AS n FROM images",
                "--format",
                "csv",
                "--as-of",
                str(first_version),
                "--out",
                str(wh.settings.catalog.parent / "n.csv"),
            ]
        )
        == 0
    )
    assert (wh.settings.catalog.parent / "n.csv").read_text().split() == ["n", str(small["images"])]
    assert count(Warehouse(wh.settings, as_of=between.isoformat()), "images") == small["images"]
    assert count(Warehouse(wh.settings, as_of=datetime.now(UTC)), "images") == large["images"]
    # a time in another zone means that moment; a time with no zone is UTC
    east = between.astimezone(timezone(timedelta(hours=5))).isoformat()
    assert east.endswith("+05:00") and count(Warehouse(wh.settings, as_of=east), "images") == small["images"]
    naive = between.replace(tzinfo=None).isoformat()
    assert count(Warehouse(wh.settings, as_of=naive), "images") == small["images"]
    # a version the log does not have is named, with the versions it has
    from warehouse.publish_log import AsOfError

    with pytest.raises(AsOfError, match=r"has no version 999 \(it has versions 0 to \d+\)"):
        count(Warehouse(wh.settings, as_of=999), "images")


def test_plain_readers_get_the_catalog_counts(two_versions):
    """deltalake + pandas, polars.scan_delta and DuckDB over the snapshot's files: no project code."""
    import polars as pl
    from deltalake import DeltaTable

    wh, *_ = two_versions
    root = Path(wh.settings.warehouse)
    for table in NIH_TABLES:
        expected = wh.sql(f'SELECT count(*) FROM "{table}"').column(0)[0].as_py()
        dt = DeltaTable(str(root / table))
        assert len(dt.to_pyarrow_dataset().to_table().to_pandas()) == expected, table
        assert pl.scan_delta(str(root / table)).select(pl.len()).collect().item() == expected, table
        files = dt.file_uris()
        if files:
            got = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r}, hive_partitioning = true)").fetchall()
            assert got[0][0] == expected, table
    images = pl.scan_delta(str(root / "images")).collect()
    assert set(images["dataset"]) == {"nih_cxr14"}, "the partition value comes back from the path"
    # a rebuild that fails (a data file deleted behind the warehouse's back) keeps the old catalog whole
    catalog = Path(wh.settings.catalog)
    before = catalog.read_bytes()
    Path(DeltaTable(str(root / "labels")).file_uris()[0].removeprefix("file://")).unlink()
    with pytest.raises(Exception, match=r"labels/dataset=nih_cxr14/part-"):
        wh.refresh_catalog()
    assert catalog.read_bytes() == before
    assert [p.name for p in catalog.parent.iterdir() if p.name.startswith(".")] == [], "no temporary file left"


def test_a_copied_warehouse_answers_from_the_copy(tmp_path, cache_dir, raw_files, monkeypatch):
    src = nih_subset(raw_files, tmp_path / "src", 200)
    original = tmp_path / "original"
    original.mkdir()
    (original / "cxr.toml").write_text(f'[sources]\nnih_cxr14 = "{src}"\n')
    env = {"CXR_CACHE": str(cache_dir)}
    Warehouse(Settings.load(env=env, cwd=original)).ingest(["nih_cxr14"])
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    notes: list[str] = []
    wh = Warehouse(Settings.load(env=env, cwd=moved), notice=notes.append)
    assert count(wh, "images") == 200
    assert notes and "was built for" in notes[0] and "rebuilding" in notes[0]
    views = wh.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'images'").column(0)[0].as_py()
    assert str(moved) in views and str(original) not in views
    # a catalog an older version built (no cohort_images, no catalog_layout) is rebuilt once, with a notice
    assert count(wh, "cohort_images") == 200 and len(notes) == 1
    con = duckdb.connect(str(wh.settings.catalog))
    con.execute("DROP TABLE cohort_images")
    con.execute("DELETE FROM catalog_meta WHERE key = 'catalog_layout'")
    con.close()
    assert count(wh, "cohort_images") == 200
    assert len(notes) == 2 and "built by an older cxr-warehouse (layout 1, now" in notes[1]
    assert count(wh, "cohort_images") == 200 and len(notes) == 2, "rebuilt once, not on every query"
    # the CLI rebuild, and a root that is gone is named, never read as an empty catalog
    from warehouse.cli import main

    monkeypatch.chdir(moved)
    assert main(["catalog", "rebuild"]) == 0
    shutil.rmtree(moved / "cxr-data" / "warehouse")
    with pytest.raises(Exception, match="does not exist"):
        Warehouse(Settings.load(env=env, cwd=moved)).sql("SELECT count(*) FROM images")


def test_a_publish_killed_between_commits_leaves_the_previous_version(tmp_path, cache_dir, raw_files):
    """SIGKILL after two of the dataset's table commits: the catalog and time travel keep the old version,
    another dataset's ingest and catalog rebuild do not adopt the torn one, and the next ingest repairs it."""
    from deltalake import DeltaTable

    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-500", 500)
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=small)
    wh = Warehouse(settings)
    wh.ingest(["nih_cxr14"])
    before = {t: count(wh, t) for t in NIH_TABLES}
    adopted = {
        r["table_name"]: r["delta_version"]
        for r in wh.sql("SELECT table_name, delta_version FROM catalog_partitions").to_pylist()
    }
    script = tmp_path / "script" / "kill.py"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(f"""
        import os
        from warehouse import Warehouse
        from warehouse.config import Settings
        from warehouse.store import Store
        real, done = Store.commit, []
        def commit_then_die(self, staged):
            version = real(self, staged)
            done.append(staged.table)
            if len(done) == 2:
                os._exit(9)
            return version
        Store.commit = commit_then_die
        settings = Settings.load(env={{"CXR_WAREHOUSE": {settings.warehouse!r}, "CXR_CATALOG": {str(settings.catalog)!r},
                                      "CXR_CACHE": {str(cache_dir)!r}, "CXR_SOURCE_NIH_CXR14": {str(large)!r}}})
        Warehouse(settings).ingest(["nih_cxr14"])
    """)
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent)
    assert proc.returncode == 9
    wh.refresh_catalog()
    assert {t: count(wh, t) for t in NIH_TABLES} == before
    for table, version in adopted.items():
        old = DeltaTable(wh.store.table_uri(table), version=version).to_pyarrow_dataset()
        assert old.count_rows(filter=pa.compute.field("dataset") == "nih_cxr14") == before[table], table
    wh.ingest(["iu_xray"])  # another dataset's publish and catalog rebuild
    assert {t: count(wh, t) for t in NIH_TABLES} == before
    assert count(wh, "images", "iu_xray") > 0
    Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=large)).ingest(["nih_cxr14"])
    assert count(wh, "images") == csv_counts(large)["images"]
    assert not list((Path(settings.warehouse) / "_staging" / "nih_cxr14").glob("*")), "no staging left behind"


def test_a_planted_defect_blocks_the_library_ingest(tmp_path, cache_dir, raw_files):
    from warehouse.gated import IngestBlocked

    src = nih_subset(raw_files, tmp_path / "src", 100)
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=src))
    wh.ingest(["nih_cxr14"])
    published = digest(Path(wh.settings.warehouse) / "images")
    lines = (src / "Data_Entry_2017_v2020.csv").read_text().splitlines(keepends=True)
    lines.append(lines[1])  # the same image twice: images__key_unique must fail
    (src / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    with pytest.raises(IngestBlocked, match="images__key_unique"):
        wh.ingest(["nih_cxr14"])
    assert digest(Path(wh.settings.warehouse) / "images") == published
    assert count(wh, "images") == 100
    status = wh.sql("SELECT status, message, rows_written FROM ingest_runs ORDER BY started_at").to_pylist()
    assert [s["status"] for s in status] == ["published", "blocked"] and "key_unique" in status[1]["message"]
    # the published run wrote every row of the source tables: not the quarantine, not the derived tables
    source_tables = ["patients", "studies", "images", "labels", "boxes", "reports"]
    source_tables += ["qa_questions", "qa_answers", "qa_answer_boxes"]
    assert status[0]["rows_written"] == sum(count(wh, t) for t in source_tables) > count(wh, "images")
    # a run that fails before anything is staged is recorded too, with nothing written or rejected
    (src / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(Exception, match="Data_Entry_2017"):
        wh.ingest(["nih_cxr14"])
    runs = wh.sql("SELECT status, rows_written, rows_rejected, message FROM ingest_runs ORDER BY started_at")
    failed = runs.to_pylist()[-1]
    assert (failed["status"], failed["rows_written"], failed["rows_rejected"]) == ("failed", 0, 0)
    assert "Data_Entry_2017" in failed["message"] and count(wh, "images") == 100


def test_a_held_connection_answers_across_an_ingest(tmp_path, cache_dir, raw_files):
    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    large = nih_subset(raw_files, tmp_path / "src-500", 500)
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=small))
    wh.ingest(["nih_cxr14"])
    held = wh.connect()
    try:
        Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=large)).ingest(["nih_cxr14"])
        assert held.execute("SELECT count(*) FROM images").fetchone()[0] == 300
        assert held.execute("SELECT count(*) FROM labels l JOIN images i USING (dataset, image_id)").fetchone()[0] > 0
        assert count(wh, "images") == 500, "a new query in the same process sees the new version"
    finally:
        held.close()


def test_vacuum_keeps_what_a_retained_publish_names(tmp_path, cache_dir, raw_files):
    """With no retention, retired files go at the next ingest, but never the files the catalog reads."""
    from deltalake import DeltaTable

    for n in (100, 200):
        settings = make_settings(
            tmp_path,
            cache_dir,
            env={"CXR_RETENTION_HOURS": "0"},
            nih_cxr14=nih_subset(raw_files, tmp_path / f"src-{n}", n),
        )
        assert settings.retention_hours == 0
        Warehouse(settings).ingest(["nih_cxr14"])
    wh = Warehouse(settings)

    dt = DeltaTable(wh.store.table_uri("images"))
    on_disk = {str(p) for p in (Path(settings.warehouse) / "images").rglob("*.parquet")}
    assert on_disk == set(dt.file_uris()), "the retired version's files were vacuumed"
    assert count(wh, "images") == 200


def test_the_catalog_opens_in_duckdb_1x(tmp_path, cache_dir, raw_files):
    cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.fail("the dev extra installs duckdb-cli 1.5 (pip install -e '.[dev]')")
    src = nih_subset(raw_files, tmp_path / "src", 50)
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=src))
    wh.ingest(["nih_cxr14"])
    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("v1."), version
    out = subprocess.run(
        [
            cli,
            "-readonly",
            "-csv",
            str(wh.settings.catalog),
            "-c",
            "SELECT count(*) FROM images; SELECT count(*) FROM catalog_tables",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["count_star()", "50", "count_star()", str(len(TABLES))]


def test_streamed_tables_are_staged_in_chunks(tmp_path):
    """Tables too big for memory arrive as chunks; a fed table with no chunk is staged empty."""
    import polars as pl

    from warehouse.ingest import ReadDataset, stage_dataset
    from warehouse.sources.base import SourceResult
    from warehouse.sources.quarantine import QUARANTINE_COLUMNS

    store = Store(str(tmp_path / "wh"))
    result = SourceResult(
        tables={
            "patients": pl.DataFrame({"patient_id": ["1", "2"], "sex": ["F", "M"]}),
            "studies": pl.DataFrame({"study_id": ["a", "b"], "patient_id": ["1", "2"], "split": ["train", "test"]}),
            "images": pl.DataFrame(
                {
                    "image_id": ["a", "b"],
                    "study_id": ["a", "b"],
                    "patient_id": ["1", "2"],
                    "split": ["train", "test"],
                    "view_position": ["PA", "AP"],
                }
            ),
        }
    )

    def chunks():
        for i in range(3):
            yield (
                "labels",
                pl.DataFrame(
                    {
                        "study_id": ["a", "b"],
                        "image_id": ["a", "b"],
                        "finding": ["x", "x"],
                        "raw_label": [f"L{i}", f"L{i}"],
                        "value": [1, 0],
                        "labeler": ["nih_nlp"] * 2,
                    }
                ),
            )
        result.quarantine.append(
            pl.DataFrame(
                [
                    {
                        "target_table": "labels",
                        "source_file": "f",
                        "row_number": 9,
                        "line_number": 10,
                        "column_name": "",
                        "value": None,
                        "reason": "bad",
                        "raw_record": "x",
                    }
                ],
                schema=QUARANTINE_COLUMNS,
            )
        )

    result.batches = chunks()
    staged = stage_dataset(store, ReadDataset("nih_cxr14", "src", result, "f" * 64, [], 0.0), run_id="r")
    assert staged.rows == {"patients": 2, "studies": 2, "images": 2, "labels": 6, "boxes": 0, "quarantine": 1}
    assert staged.rejected == 1
    assert store.read_staged("labels", staged.partitions["labels"]).num_rows == 6
    versions = {name: store.commit(partition) for name, partition in staged.partitions.items()}
    assert store.read("labels", "nih_cxr14", versions["labels"]).num_rows == 6
    assert store.read("boxes", "nih_cxr14", versions["boxes"]).num_rows == 0


def _shuffled_images(n: int):
    """An adapter's images frame in no particular order, with a map column, nulls and a private column."""
    import random

    import polars as pl

    rng = random.Random(7)
    ids = [f"p{rng.randrange(n // 3)}/s{i}" for i in range(n)]
    return pl.DataFrame(
        {
            "image_id": ids,
            "study_id": [i.rsplit("/", 1)[0] + "/st" for i in ids],
            "patient_id": [i.split("/")[0] for i in ids],
            "split": [rng.choice(["train", "test"]) for _ in ids],
            "view_position": [rng.choice(["PA", "AP", "UNKNOWN"]) for _ in ids],
            "view_source": [rng.choice(["PA", None]) for _ in ids],
            "source_attributes": [[{"key": "row", "value": str(k)}] if k % 5 else None for k in range(n)],
            "_scratch": list(range(n)),
        }
    )


def test_conform_slices_are_the_whole_conformed_table_cut_in_order():
    """Slice by slice, the rows, order, types and map column are those of the whole-table conform."""
    import pyarrow as pa

    from warehouse.conform import ConformError, conform, conform_slices

    frame = _shuffled_images(2_500)
    whole = conform("images", frame, "nih_cxr14")
    slices = list(conform_slices("images", frame, "nih_cxr14", rows=1_000))
    assert [s.num_rows for s in slices] == [1_000, 1_000, 500]
    assert all(s.schema == TABLES["images"].schema for s in slices)
    assert pa.concat_tables(slices).equals(whole)
    assert whole.column("image_id").to_pylist() == sorted(frame["image_id"].to_list())  # really sorted here
    assert list(conform_slices("images", frame.head(0), "nih_cxr14", rows=1_000)) == []
    with pytest.raises(ConformError, match="nih_cxr14: adapter gave images columns the schema does not have"):
        next(conform_slices("images", frame.with_columns(bogus=1), "nih_cxr14", rows=1_000))


def test_staging_writes_each_table_from_slices_and_frees_the_adapter_frames(tmp_path, monkeypatch):
    """The staged rows equal the whole conformed table, and the read result gives its frames up as they are
    staged (holding them all to the end was most of the staging step's memory)."""
    import polars as pl

    import warehouse.ingest as ingest
    from warehouse.conform import conform
    from warehouse.sources.base import SourceResult

    monkeypatch.setattr(ingest, "ROW_GROUP_ROWS", 700)
    frame = _shuffled_images(2_000)
    patients = pl.DataFrame({"patient_id": ["p1", "p2"], "sex": ["F", "M"]})
    result = SourceResult(tables={"images": frame, "patients": patients})
    store = Store(str(tmp_path / "wh"))
    staged = ingest.stage_dataset(store, ingest.ReadDataset("nih_cxr14", "src", result, "f" * 64, [], 0.0), run_id="r")
    assert result.tables == {}
    images = store.read_staged("images", staged.partitions["images"])
    assert images.equals(conform("images", frame, "nih_cxr14"))
    assert staged.rows["images"] == 2_000 and staged.rows["patients"] == 2 and staged.rows["studies"] == 0


def test_a_table_that_cannot_be_created_is_an_error_naming_it(tmp_path, monkeypatch):
    """A failed create is told apart from losing the race to another run, whose table then exists."""
    from deltalake import DeltaTable

    from warehouse.store import StoreError

    store = Store(str(tmp_path / "wh"))
    (tmp_path / "wh").mkdir()
    (tmp_path / "wh" / "studies").write_text("a file where the table's folder goes")
    with pytest.raises(StoreError, match=r"cannot open Delta table .*wh/studies"):
        store.ensure_table(TABLES["studies"])

    create = DeltaTable.create

    def lose_the_race(uri, **options):
        create(uri, **options)  # the other run's create lands first ...
        raise OSError("the log entry 0 exists already")  # ... so ours fails, as delta-rs reports it

    monkeypatch.setattr(DeltaTable, "create", staticmethod(lose_the_race))
    assert store.ensure_table(TABLES["patients"]).version() == 0, "the other run's table is taken"

    def fail(uri, **options):
        raise OSError("no space left on device")

    monkeypatch.setattr(DeltaTable, "create", staticmethod(fail))
    with pytest.raises(StoreError, match=r"cannot create Delta table .*wh/images: no space left"):
        store.ensure_table(TABLES["images"])


@pytest.mark.parametrize(
    "info",
    [
        {"mtime": 1_700_000_000.0, "created": 1.0},  # fsspec's local filesystem
        {"LastModified": datetime.fromtimestamp(1_700_000_000, UTC)},  # s3fs
        {"created": 1_700_000_000.0},
    ],
    ids=["local", "s3", "created-only"],
)
def test_staging_age_is_read_from_each_filesystems_own_field(info):
    """A staging folder's age decides whether it is removed: every filesystem names its timestamp differently."""
    from warehouse.store import _modified

    class Filesystem:
        def info(self, path):
            return info

    assert _modified(Filesystem(), "owner.json") == 1_700_000_000.0


def test_a_staging_folder_of_unknown_age_is_taken_as_live():
    """No timestamp at all (some object stores): never removed for its age, only when its owner is gone."""
    from warehouse.store import _modified

    class Filesystem:
        def info(self, path):
            return {"size": 0}

    before = time.time()
    assert before <= _modified(Filesystem(), "owner.json") <= time.time()


def test_a_publish_that_fails_between_two_commits_leaves_no_file_outside_the_log(
    tmp_path, cache_dir, raw_files, monkeypatch
):
    """The commit moves a table's staged files in before its log entry; when a later table's commit fails, the run
    ends failed and removes the files it moved but never committed, and no table's folder holds a file its log
    does not name."""
    from deltalake import DeltaTable

    source = nih_subset(raw_files, tmp_path / "nih", 50)
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=str(source)))
    real, commits = DeltaTable.create_write_transaction, []

    def fourth_fails(self, *args, **kwargs):
        commits.append(1)
        if len(commits) == 4:
            raise OSError("the object store went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", fourth_fails)
    with pytest.raises(OSError, match="went away"):
        wh.ingest(["nih_cxr14"])
    monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
    root = Path(wh.settings.warehouse)
    written = 0
    for table in TABLES:
        folder = root / table / "dataset=nih_cxr14"
        files = {str(p) for p in folder.rglob("*.parquet")} if folder.exists() else set()
        written += len(files)
        logged = set(DeltaTable(str(root / table)).file_uris()) if (root / table / "_delta_log").exists() else set()
        assert files <= logged, (table, sorted(files - logged))
    assert written >= 1, "the commits that landed keep their files"
    assert not list((root / "_staging" / "nih_cxr14").glob("*")), "the failed run's staging is gone"

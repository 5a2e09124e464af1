"""The flat cohort table image_labels agrees with the normalized tables it is derived from."""

from __future__ import annotations

import pyarrow as pa
import pytest

from warehouse import Warehouse

from .conftest import make_settings


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, cache_dir, public_data):
    wh = Warehouse(make_settings(tmp_path_factory.mktemp("image-labels"), cache_dir))
    wh.ingest(["nih_cxr14", "chexpert", "chexpert_plus"], say=lambda m: None)  # derives image_labels too
    return wh


def _rows(wh: Warehouse, sql: str) -> set[tuple]:
    return {tuple(r.values()) for r in wh.sql(sql).to_pylist()}


def test_cohort_counts_equal_the_three_way_join(warehouse):
    flat = _rows(
        warehouse,
        """
        SELECT dataset, sex, finding, value, is_frontal, count(*) FROM image_labels
        WHERE dataset IN ('nih_cxr14', 'chexpert') GROUP BY ALL""",
    )
    joined = _rows(
        warehouse,
        """
        SELECT i.dataset, p.sex, l.finding, l.value, i.is_frontal, count(*)
        FROM labels l JOIN images i USING (dataset, image_id) JOIN patients p USING (dataset, patient_id)
        WHERE i.dataset IN ('nih_cxr14', 'chexpert') GROUP BY ALL""",
    )
    assert flat == joined and len(flat) > 50


def test_every_image_level_label_has_a_row(warehouse):
    for dataset in ("nih_cxr14", "chexpert"):
        labels = warehouse.sql(f"SELECT count(*) FROM labels WHERE dataset = '{dataset}'").column(0)[0].as_py()
        flat = warehouse.sql(f"SELECT count(*) FROM image_labels WHERE dataset = '{dataset}'").column(0)[0].as_py()
        assert flat == labels


def test_a_linked_dataset_takes_images_and_sex_from_the_one_it_links_to(warehouse):
    expected = _rows(
        warehouse,
        """
        SELECT l.image_id, l.raw_label, l.method, p.sex FROM labels l
        JOIN images i ON i.dataset = 'chexpert' AND i.image_id = l.image_id
        JOIN patients p ON p.dataset = 'chexpert' AND p.patient_id = i.patient_id
        WHERE l.dataset = 'chexpert_plus'""",
    )
    got = _rows(warehouse, "SELECT image_id, raw_label, method, sex FROM image_labels WHERE dataset = 'chexpert_plus'")
    assert got == expected and len(got) > 100
    assert {sex for *_, sex in got} <= {"F", "M"}
    uids = _rows(warehouse, "SELECT DISTINCT image_uid FROM image_labels WHERE dataset = 'chexpert_plus'")
    assert uids and {u for (u,) in uids} == {f"chexpert:{image_id}" for image_id, *_ in got}


def test_a_linked_dataset_without_images_counts_the_images_of_its_studies(warehouse):
    """CheXpert Plus publishes no images: its split statistics count CheXpert's images of its studies."""
    expected = dict(
        _rows(
            warehouse,
            """
        SELECT s.split, count(*) FROM images i JOIN studies s ON s.study_id = i.study_id
        WHERE i.dataset = 'chexpert' AND s.dataset = 'chexpert_plus' GROUP BY ALL""",
        )
    )
    got = dict(_rows(warehouse, "SELECT split, images FROM split_stats WHERE dataset = 'chexpert_plus'"))
    assert got == {split: expected.get(split, 0) for split in got} and sum(got.values()) > 0
    own = dict(_rows(warehouse, "SELECT split, count(*) FROM images WHERE dataset = 'nih_cxr14' GROUP BY ALL"))
    assert dict(_rows(warehouse, "SELECT split, images FROM split_stats WHERE dataset = 'nih_cxr14'")) == own


def test_a_known_sex_or_age_wins_over_an_unknown_one_across_linked_datasets():
    """The linked dataset's patient says U and has no age; the dataset it links to knows both (and the reverse)."""
    import duckdb

    from warehouse.queries import named_query

    con = duckdb.connect()
    con.execute("""
        CREATE TABLE images AS SELECT * FROM (VALUES
            ('base', 'i1', 'base:i1', 's1', 'p1', 'train', 'PA', true),
            ('base', 'i2', 'base:i2', 's2', 'p2', 'train', 'PA', true))
            t(dataset, image_id, image_uid, study_id, patient_id, split, view_position, is_frontal);
        CREATE TABLE studies AS SELECT * FROM (VALUES
            ('base', 's1', 61.0), ('linked', 's1', NULL), ('base', 's2', NULL), ('linked', 's2', 47.0))
            t(dataset, study_id, age_years);
        CREATE TABLE patients AS SELECT * FROM (VALUES
            ('base', 'p1', 'F'), ('linked', 'p1', 'U'), ('base', 'p2', 'U'), ('linked', 'p2', 'M'))
            t(dataset, patient_id, sex);
        CREATE TABLE labels AS SELECT * FROM (VALUES
            ('linked', 's1', NULL, 'edema', 'Edema', 1::TINYINT, 'chexbert', NULL, NULL),
            ('linked', 's2', 'i2', 'edema', 'Edema', 0::TINYINT, 'chexbert', NULL, NULL))
            t(dataset, study_id, image_id, finding, raw_label, value, labeler, method, reader)""")
    query = named_query("stats", "image_labels")
    got = con.execute(query.sql, {"dataset": "linked", "linked": "base"}).fetchall()
    assert sorted((r[1], r[8], r[9]) for r in got) == [("i1", "F", 61.0), ("i2", "M", 47.0)]


def test_derived_tables_are_streamed_in_order_under_a_memory_limit(tmp_path, cache_dir, raw_files, monkeypatch):
    """The derived tables go from DuckDB to the staged files a batch at a time, in a connection held to a memory
    limit that spills to a scratch folder. The published image_labels hold exactly DuckDB's whole result, in its
    order, over many batches; the spill folder is gone afterwards, and nothing went to `.tmp` in the cwd."""
    import pyarrow.parquet as pq

    from warehouse import gated, publish_log, schema, stats
    from warehouse.queries import named_query

    from .conftest import nih_subset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stats, "DERIVE_BATCH_ROWS", 1000)
    monkeypatch.setattr(stats, "DERIVE_MEMORY_LIMIT", "64MB")
    spills: list = []
    real_scratch = gated.scratch_dir
    monkeypatch.setattr(gated, "scratch_dir", lambda kind: spills.append(real_scratch(kind)) or spills[-1])
    batches: dict[str, int] = {}

    def counted(con, table, *args):
        for batch in stats.compute_batches(con, table, *args):
            batches[table] = batches.get(table, 0) + 1
            yield batch

    monkeypatch.setattr(gated, "compute_batches", counted)
    limits = []

    def limited(*args, **kwargs):
        con = stats.derive_connection(*args, **kwargs)
        limits.append(
            con.sql("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
        )
        return con

    monkeypatch.setattr(gated, "derive_connection", limited)
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=str(nih_subset(raw_files, tmp_path / "nih", 3000))))
    wh.ingest(["nih_cxr14"])
    assert spills and not any(p.exists() for p in spills)
    assert limits == [("61.0 MiB", str(spills[0]))]
    assert not (tmp_path / ".tmp").exists()

    published = publish_log.adopted(wh.store)["nih_cxr14"]
    files = [
        f["url"] for f in wh.store.partition_files("image_labels", "nih_cxr14", published.versions["image_labels"])
    ]
    columns = [c for c in schema.TABLES["image_labels"].column_names if c != "dataset"]  # the Delta partition column
    streamed = pa.concat_tables([pq.read_table(f) for f in files]).select(columns)
    assert batches["image_labels"] >= 3

    con = stats.derive_connection(wh.store, {}, published)  # the published source tables, read as Delta files
    whole = con.sql(named_query("stats", "image_labels").sql, params={"dataset": "nih_cxr14", "linked": None})
    expected = whole.to_arrow_table().select(columns)
    con.close()
    assert streamed.num_rows == expected.num_rows > 3000
    assert streamed.cast(expected.schema).to_pylist() == expected.to_pylist()


def test_a_derived_table_duckdb_cannot_build_within_the_limit_is_built_again_without_it(
    tmp_path, cache_dir, raw_files, monkeypatch
):
    """Held to a limit too small to work in even by spilling (seen at 400 k images under 256 MB, now and then),
    a derived table's query runs again without the limit: the ingest publishes the same rows, not an error."""
    from warehouse import gated, publish_log, schema, stats

    from .conftest import nih_subset

    source = str(nih_subset(raw_files, tmp_path / "nih", 3000))
    built: dict[str, list[dict]] = {}
    for limit in ("256MB", "1MB"):
        monkeypatch.setattr(stats, "DERIVE_MEMORY_LIMIT", limit)
        calls: list[str] = []

        def counted(con, table, *args, calls=calls):
            calls.append(table)
            return stats.compute_batches(con, table, *args)

        monkeypatch.setattr(gated, "compute_batches", counted)
        wh = Warehouse(make_settings(tmp_path / limit, cache_dir, nih_cxr14=source))
        [result] = wh.ingest(["nih_cxr14"])
        assert result.status == "published", result.message
        versions = publish_log.adopted(wh.store)["nih_cxr14"].versions
        rows = {t.name: wh.store.read(t.name, "nih_cxr14", versions[t.name]).to_pylist() for t in schema.DERIVED_TABLES}
        built[limit] = rows
        retried = len(calls) - len(set(calls))
        assert (retried == 0) if limit == "256MB" else (retried >= 1), (limit, calls)
    assert built["1MB"] == built["256MB"]
    assert len(built["1MB"]["image_labels"]) > 3000

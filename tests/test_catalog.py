"""The catalog documents every table and column, and its counts agree with the data."""

from __future__ import annotations

from warehouse.schema import TABLES


def test_every_table_and_column_is_documented(public_warehouse):
    wh = public_warehouse
    documented = {
        (r["table_name"], r["column_name"]): r["description"]
        for r in wh.sql("SELECT table_name, column_name, description FROM catalog_columns").to_pylist()
    }
    con = wh.connect()
    try:
        for name in TABLES:
            actual = [row[0] for row in con.execute(f'DESCRIBE "{name}"').fetchall()]
            assert actual == TABLES[name].column_names, name
            for column in actual:
                assert documented.get((name, column), "").strip(), f"{name}.{column} has no description"
    finally:
        con.close()
    listed = set(wh.sql("SELECT table_name FROM catalog_tables").column(0).to_pylist())
    assert listed == set(TABLES)
    assert all(wh.sql("SELECT description FROM catalog_tables").column(0).to_pylist())


def test_catalog_counts_match_the_views(public_warehouse):
    wh = public_warehouse
    for row in wh.sql("SELECT table_name, rows, partitions FROM catalog_tables").to_pylist():
        actual = wh.sql(f'SELECT count(*) FROM "{row["table_name"]}"').column(0)[0].as_py()
        assert row["rows"] == actual, row["table_name"]
    parts = wh.sql("SELECT table_name, list(dataset ORDER BY dataset) FROM catalog_partitions GROUP BY 1").to_pylist()
    assert {r["table_name"]: r[list(r)[1]] for r in parts}["images"] == ["chexpert", "nih_cxr14"]


def test_datasets_carry_citation_and_source(public_warehouse):
    rows = {r["dataset"]: r for r in public_warehouse.sql("SELECT * FROM catalog_datasets").to_pylist()}
    for dataset in ("nih_cxr14", "chexpert"):
        assert rows[dataset]["ingested"]
        assert rows[dataset]["citation"] and rows[dataset]["source_fingerprint"]
    assert "Wang X" in rows["nih_cxr14"]["citation"]


def test_vocabularies_and_findings_are_queryable(public_warehouse):
    wh = public_warehouse
    sexes = wh.sql("SELECT value FROM catalog_vocabularies WHERE vocabulary='sex' ORDER BY position")
    assert sexes.column(0).to_pylist() == ["F", "M", "U"]
    unmapped = wh.sql("SELECT DISTINCT l.finding FROM labels l ANTI JOIN findings f USING (finding)")
    assert unmapped.num_rows == 0, "every NIH and CheXpert label maps into the harmonized vocabulary"


def test_columns_mark_each_tables_key(public_warehouse):
    """A table's key is its declared key within the dataset partition, plus the dataset itself."""
    rows = public_warehouse.sql("SELECT table_name, column_name FROM catalog_columns WHERE is_key").to_pylist()
    keys: dict[str, set[str]] = {}
    for r in rows:
        keys.setdefault(r["table_name"], set()).add(r["column_name"])
    assert keys["images"] == {"dataset", "image_id"} and keys["studies"] == {"dataset", "study_id"}
    assert keys == {name: {"dataset", *spec.key} for name, spec in TABLES.items()}


def test_a_build_needing_more_memory_than_its_limit_is_finished_without_it(public_warehouse, tmp_path, monkeypatch):
    """The catalog is built within BUILD_MEMORY_LIMIT; a warehouse whose image units need more at once than
    that still gets its catalog, with the same rows, instead of an out-of-memory error."""
    import duckdb
    import pytest

    from warehouse import catalog
    from warehouse.cohorts import IMAGE_UNITS_TABLE, image_units_sql
    from warehouse.sources import DATASETS, dataset_info

    limit = "8MB"
    datasets = [dataset_info(d) for d in DATASETS]
    linked = tuple(sorted(info.id for info in datasets if info.links_to))
    built = public_warehouse.settings.catalog
    con = duckdb.connect(str(built), read_only=True, config={"memory_limit": limit})
    try:
        with pytest.raises(duckdb.OutOfMemoryException):  # the premise: this limit is too small for these units
            con.execute(f"CREATE TEMP TABLE units AS {image_units_sql(linked)}")
    finally:
        con.close()

    monkeypatch.setattr(catalog, "BUILD_MEMORY_LIMIT", limit)
    rebuilt = tmp_path / "catalog.duckdb"
    catalog.build_catalog(public_warehouse.store, rebuilt, datasets=datasets)
    con = duckdb.connect(str(rebuilt), read_only=True)
    try:
        con.execute(f"ATTACH '{built}' AS first (READ_ONLY)")
        rows = con.execute(f"SELECT count(*) FROM {IMAGE_UNITS_TABLE}").fetchall()[0][0]
        first = con.execute(f"SELECT count(*) FROM first.{IMAGE_UNITS_TABLE}").fetchall()[0][0]
        differ = con.execute(
            f"SELECT count(*) FROM (SELECT * FROM {IMAGE_UNITS_TABLE} EXCEPT ALL SELECT * FROM first.{IMAGE_UNITS_TABLE})"
        ).fetchall()[0][0]
        setting = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        con.close()
    assert rows == first > 300_000 and differ == 0
    assert "8.0 MiB" not in setting, "the limit belongs to the build, not to the catalog file"

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

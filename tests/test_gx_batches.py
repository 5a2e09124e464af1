"""Great Expectations validates the staged frames without fingerprinting them.

GX hashes each pandas batch it loads, and a frame with a list column (labels.locations) cannot be hashed
by pandas, so GX would pickle the whole frame and digest it, twice per table: over half of a QBA ingest.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from warehouse import quality, schema


def _labels(labeler: str = "padchest") -> duckdb.DuckDBPyConnection:
    """Three PadChest-like label rows, one localized, as a staged `labels` table."""
    spec = schema.TABLES["labels"]
    rows = {
        "dataset": ["padchest"] * 3,
        "study_id": ["s1", "s1", "s2"],
        "image_id": [None, None, None],
        "finding": ["pleural_effusion", "nodule", None],
        "raw_label": ["pleural effusion", "nodule", "unmapped thing"],
        "value": [1, 1, 1],
        "labeler": [labeler, "padchest", "padchest"],
        "method": ["Physician"] * 3,
        "locations": [["loc left"], None, []],
        "reader": [None] * 3,
        "label_split": [None] * 3,
    }
    con = duckdb.connect()
    con.register("labels", pa.table({c.name: rows[c.name] for c in spec.columns}, spec.schema))
    return con


def _studies(*, without: str | None = None, **values: list) -> duckdb.DuckDBPyConnection:
    """A staged `studies` table with the given columns' values, every other column null (and one left out)."""
    spec = schema.TABLES["studies"]
    n = len(next(iter(values.values())))
    columns = [c for c in spec.columns if c.name != without]
    con = duckdb.connect()
    data = {c.name: values.get(c.name, [None] * n) for c in columns}
    con.register("studies", pa.table(data, pa.schema([c.field() for c in columns])))
    return con


def test_a_labels_frame_with_locations_is_validated_without_pickling_it(monkeypatch):
    con = _labels()
    quality._gx_context()  # GX and its engine as the gates load them

    from great_expectations.execution_engine import pandas_execution_engine

    def refuse(*args, **kwargs):
        raise AssertionError("GX pickled a staged frame to fingerprint it")

    monkeypatch.setattr(pandas_execution_engine, "pickle", type("NoPickle", (), {"dumps": staticmethod(refuse)}))
    outcomes = quality.validate_table(con, "labels")
    assert outcomes and all(o.passed for o in outcomes if o.blocking), [o.name for o in outcomes if not o.passed]


def test_a_failing_row_with_a_list_cell_is_reported_with_the_list():
    """The sample rows of a failed expectation come back as plain values, a list cell as a list."""
    outcomes = {o.name: o for o in quality.validate_table(_labels(labeler="physician"), "labels")}
    failed = outcomes["labeler_in_vocabulary"]
    assert not failed.passed and failed.blocking and failed.unexpected_count == 1
    assert [(r["labeler"], r["locations"]) for r in failed.sample] == [("physician", ["loc left"])]


def test_a_failing_float_is_reported_as_itself_and_a_missing_one_as_none():
    """A failed range check names its column and reason, and its sample keeps the out-of-range age as the
    float it is; a missing float (NaN once pandas has it) comes back as None, not NaN."""
    spec = schema.TABLES["studies"]
    con = _studies(dataset=["nih_cxr14"] * 2, study_id=["s1", "s2"], patient_id=["p1", "p2"], age_years=[150.5, 40.0])
    outcomes = {o.name: o for o in quality.validate_table(con, "studies")}
    age = outcomes["age_years_in_range"]
    assert (
        age.description == "expect_column_values_to_be_between on age_years: an age outside 0-120 years is a data error"
    )
    assert not age.passed and [(r["study_id"], r["age_years"]) for r in age.sample] == [("s1", 150.5)]
    floats = [c.name for c in spec.columns if pa.types.is_floating(c.type) and c.name != "age_years"]
    assert floats and all(age.sample[0][c] is None for c in floats)
    key = next(o for o in outcomes.values() if o.description.startswith("expect_compound_columns_to_be_unique"))
    assert key.description.startswith("expect_compound_columns_to_be_unique on dataset, study_id")


def test_an_expectation_that_cannot_run_fails_and_says_why():
    """A staged table that lacks a column an expectation reads must not pass that expectation: GX reports
    the error in the result instead of raising, and the gate turns it into a failed check with the reason."""
    con = _studies(dataset=["nih_cxr14"], study_id=["s1"], patient_id=["p1"], split=["train"], without="age_years")
    outcomes = {o.name: o for o in quality.validate_table(con, "studies")}
    age = outcomes["age_years_in_range"]
    assert not age.passed and age.blocking
    assert age.note.startswith("expectation could not run: ") and "age_years" in age.note
    key = next(o for o in outcomes.values() if o.description.startswith("expect_compound_columns_to_be_unique"))
    assert key.passed and key.note == "computed in SQL over all 1 rows", "uniqueness is counted in SQL, not by GX"
    keyless = {o.name: o for o in quality.validate_table(_studies(dataset=["x"], without="study_id"), "studies")}
    key = keyless["key_unique"]
    assert not key.passed and key.blocking and key.note.startswith("expectation could not run: ")
    assert "study_id" in key.note


def test_key_uniqueness_is_counted_in_sql_over_every_row_and_gx_does_not_hash_the_key():
    """GX's compound uniqueness hashes every row's key in pandas, the gate's largest allocation; the gate
    counts it in SQL. The count is every row of a repeated key, as GX's is; the sample names each key once."""
    from collections import Counter

    ids = ["s1", "s2", "s1", "s3", "s2", "s1", "s4"]
    con = _studies(dataset=["nih_cxr14"] * 7, study_id=ids, patient_id=[f"p{i}" for i in range(7)])
    key = {o.name: o for o in quality.validate_table(con, "studies")}["key_unique"]
    repeated = {k: n for k, n in Counter(ids).items() if n > 1}
    assert not key.passed and key.blocking and key.unexpected_count == sum(repeated.values()) == 5
    assert key.unexpected_percent == 100 * 5 / 7 and key.evaluated_rows == 7
    assert sorted((r["study_id"], r["copies"]) for r in key.sample) == sorted(repeated.items())
    run_by_gx = quality._validation_definition("studies").suite.expectations
    assert run_by_gx and "expect_compound_columns_to_be_unique" not in {e.expectation_type for e in run_by_gx}
    assert "key_unique" in {name for name, _, _ in quality.expectation_checks("studies")}, "still in the suite"


def test_a_key_repeated_with_nulls_in_it_is_counted_and_a_key_differing_in_one_column_is_not():
    """The key's hash finds candidates and the exact grouping decides: NULL parts of a key compare equal (as
    GX's pandas check has them), and a key that differs only in one column is its own key."""
    con = _labels()  # s1 pleural effusion, s1 nodule, s2 unmapped thing; image_id and reader NULL
    con.execute("CREATE TABLE more AS SELECT * FROM labels")
    con.execute("INSERT INTO more SELECT * FROM labels WHERE raw_label = 'nodule'")  # a repeated key
    con.execute("INSERT INTO more SELECT * REPLACE ('s3' AS study_id) FROM labels WHERE raw_label = 'nodule'")
    con.unregister("labels")
    con.execute("CREATE VIEW labels AS SELECT * FROM more")
    key = {o.name: o for o in quality.validate_table(con, "labels")}["key_unique"]
    assert not key.passed and key.unexpected_count == 2 and key.evaluated_rows == 5
    assert [(r["study_id"], r["raw_label"], r["image_id"], r["copies"]) for r in key.sample] == [
        ("s1", "nodule", None, 2)
    ]


def test_building_configurations_once_changes_no_outcome_and_is_undone(monkeypatch):
    """Validation reads each expectation's configuration from a per-validation memo; the outcomes must be the
    ones GX gives without it, failures and samples included, and GX's own property is back afterwards."""
    import contextlib

    from great_expectations.expectations.expectation import Expectation

    def staged():
        return _studies(
            dataset=["nih_cxr14", "nih_cxr14", "padchest"],
            study_id=["s1", "s1", None],
            patient_id=["p1", "p2", "p3"],
            split=["train", "bogus", "test"],
            age_years=[150.5, 40.0, -1.0],
        )

    original = vars(Expectation)["configuration"]
    memoized = [vars(o) for o in quality.validate_table(staged(), "studies")]
    assert vars(Expectation)["configuration"] is original
    monkeypatch.setattr(quality, "_configurations_built_once", contextlib.nullcontext)
    plain = [vars(o) for o in quality.validate_table(staged(), "studies")]
    assert memoized == plain
    failed = {o["name"] for o in plain if not o["passed"]}
    assert {"age_years_in_range", "key_unique", "study_id_not_null"} <= failed, failed


def test_a_validated_frame_is_not_kept_and_the_next_one_is_judged_on_its_own():
    """GX's cached data source kept each table's last frame (and the metrics on it) for the process's life:
    260 MB after NIH and CheXpert. Once validated, no frame of the table is reachable; a second, different
    frame of the same table gets its own outcome, not the first one's metrics."""
    import gc

    import pandas as pd

    n = 4321
    good = _studies(
        dataset=["nih_cxr14"] * n, study_id=[f"s{i}" for i in range(n)], patient_id=["p"] * n, split=["train"] * n
    )
    assert all(o.passed for o in quality.validate_table(good, "studies") if o.blocking)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, pd.DataFrame) and len(o) == n]

    bad = _studies(
        dataset=["nih_cxr14"] * n, study_id=["s0"] * n, patient_id=["p"] * n, split=["train"] * n
    )  # one study id, n times
    outcomes = {o.name: o for o in quality.validate_table(bad, "studies")}
    key = next(o for o in outcomes.values() if o.description.startswith("expect_compound_columns_to_be_unique"))
    assert not key.passed and key.unexpected_count == n

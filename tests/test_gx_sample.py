"""The sample Great Expectations validates for a table over GX_MAX_ROWS.

It must be the same rows for the same data however they are laid out (a re-run, another file order, more
threads), exactly GX_MAX_ROWS of them, drawn from the whole table rather than its first files, and the
prefilter that keeps DuckDB's top-N heap small must not change which rows they are.
"""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pytest

from warehouse import quality, schema

ROWS = 5_000


def _boxes(order: list[int], threads: int = 2, files: int = 1) -> duckdb.DuckDBPyConnection:
    """A staged `qa_answer_boxes`-like table of ROWS distinct rows, in the given row order, in `files` pieces."""
    spec = schema.TABLES["qa_answer_boxes"]
    data = {
        c.name: [f"{c.name}-{i}" if pa.types.is_string(c.field().type) else None for i in order] for c in spec.columns
    }
    data["box_index"] = [i % 7 for i in order]
    data["x1"] = [float(i) for i in order]
    table = pa.table({c.name: data[c.name] for c in spec.columns}, spec.schema)
    con = duckdb.connect(config={"threads": threads})
    step = -(-len(order) // files)
    con.register("pieces", table.slice(0, step))
    con.execute("CREATE TABLE qa_answer_boxes AS SELECT * FROM pieces")
    for start in range(step, len(order), step):
        con.register("pieces", table.slice(start, step))
        con.execute("INSERT INTO qa_answer_boxes SELECT * FROM pieces")
    return con


def _sampled(con: duckdb.DuckDBPyConnection, **options) -> pa.Table:
    return con.sql(quality.sample_sql("qa_answer_boxes", ROWS, **options)).to_arrow_table()


@pytest.fixture
def limit(monkeypatch) -> int:
    monkeypatch.setattr(quality, "GX_MAX_ROWS", 600)
    return 600


def test_a_table_at_the_limit_is_validated_whole(monkeypatch):
    monkeypatch.setattr(quality, "GX_MAX_ROWS", ROWS)
    assert _sampled(_boxes(list(range(ROWS)))).num_rows == ROWS


def test_the_sample_is_the_limit_of_distinct_rows_from_across_the_table(limit):
    sample = _sampled(_boxes(list(range(ROWS))))
    ids = sample.column("x1").to_pylist()
    assert len(ids) == limit and len(set(ids)) == limit
    assert all(0 <= i < ROWS for i in ids)
    # a head or a tail of the table would sit in one end; a hash sample spreads over every fifth of it
    assert {int(i) * 5 // ROWS for i in ids} == {0, 1, 2, 3, 4}
    assert 0.35 < sum(i < ROWS / 2 for i in ids) / limit < 0.65


def test_the_same_rows_in_the_same_order_whatever_the_layout(limit):
    first = _sampled(_boxes(list(range(ROWS)), threads=1, files=1))
    shuffled = list(range(ROWS))
    random.Random(7).shuffle(shuffled)
    again = _sampled(_boxes(shuffled, threads=2, files=9))
    assert again.equals(first)


def test_the_prefilter_does_not_change_the_sample(limit):
    con = _boxes(list(range(ROWS)))
    assert "WHERE" in quality.sample_sql("qa_answer_boxes", ROWS)
    assert _sampled(con).equals(_sampled(con, prefilter=False))


def test_validation_runs_on_the_sample_and_says_so(limit):
    con = _boxes(list(range(ROWS)))
    outcomes = [o for o in quality.validate_table(con, "qa_answer_boxes") if o.name != quality.KEY_CHECK]
    assert outcomes and {o.evaluated_rows for o in outcomes} == {limit}
    assert {o.note for o in outcomes} == {f"validated on a reproducible sample of {limit:,} of {ROWS:,} rows"}


def test_a_prefilter_that_keeps_too_few_falls_back_to_the_whole_table(limit, monkeypatch):
    con = _boxes(list(range(ROWS)))
    real = quality.sample_sql

    def starved(table: str, total: int, prefilter: bool = True) -> str:  # a prefilter keeping a few rows
        sql = real(table, total, prefilter=prefilter)
        return sql.replace(" ORDER BY", " AND x1 < 10 ORDER BY") if prefilter else sql

    monkeypatch.setattr(quality, "sample_sql", starved)
    assert 0 < con.sql(starved("qa_answer_boxes", ROWS)).to_arrow_table().num_rows < limit
    outcomes = [o for o in quality.validate_table(con, "qa_answer_boxes") if o.name != quality.KEY_CHECK]
    assert {o.evaluated_rows for o in outcomes} == {limit}

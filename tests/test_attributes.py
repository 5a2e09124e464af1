"""values.attributes, built columnar, gives each row the entries a plain Python loop over the row gives,
also inside a group_by (where it must run once over the column, not once per group)."""

from __future__ import annotations

import random

import polars as pl

from warehouse.sources import values

MISSING = ("nan", "None")


def _expected(row: dict, keys: dict[str, str]) -> list[dict] | None:
    entries = [
        {"key": key, "value": str(row[column])}
        for key, column in keys.items()
        if row[column] is not None and str(row[column]).strip() != "" and str(row[column]) not in MISSING
    ]
    return entries or None


def test_attributes_match_a_row_by_row_recount():
    rng = random.Random(7)
    words = [None, "", "  ", "nan", "None", "x", "1.5", "a b", "value"]
    frame = pl.DataFrame(
        {
            "": [rng.choice(words) for _ in range(3000)],
            "Field B": [rng.choice(words) for _ in range(3000)],
            "n": [rng.choice([None, 0, 7]) for _ in range(3000)],
            "g": [i // 4 for i in range(3000)],
        }
    )
    keys = {"row_index": "", "Field B": "Field B", "n": "n"}  # key -> column, in the entries' order
    expr = values.attributes({key: pl.col(column) for key, column in keys.items()}, MISSING)
    got = frame.select(expr.alias("a"))["a"].to_list()
    assert got == [_expected(row, keys) for row in frame.iter_rows(named=True)]
    assert any(entry is None for entry in got) and any(entry and len(entry) == 3 for entry in got)
    grouped = frame.group_by("g", maintain_order=True).agg(expr.first().alias("a"))
    firsts = {}
    for row in frame.iter_rows(named=True):
        firsts.setdefault(row["g"], _expected(row, keys))
    assert grouped["a"].to_list() == [firsts[g] for g in grouped["g"].to_list()]
    assert frame.head(0).select(expr.alias("a")).height == 0

"""The structural half of every GX suite, generated from warehouse/schema.py.

The canonical column list, the not-null columns and the closed value sets are facts of the schema,
so the suites take them from it and cannot drift from it: a column added, made required or given a
vocabulary in schema.py is checked at the next ingest. expectations/<table>.json keeps only the
rules the schema cannot say (ranges, keys, cross-column orderings, sets that are not a vocabulary).
"""

from __future__ import annotations

from . import schema

GENERATED_TYPES = ("expect_table_columns_to_match_ordered_list", "expect_column_values_to_not_be_null")
VOCABULARY_TYPE = "expect_column_values_to_be_in_set"
# `dataset` is written by conform() from the partition being ingested, never by an adapter
FILLED_BY_CONFORM = ("dataset",)


def structural_expectations(table: str) -> list[dict]:
    """GX 1.x expectation configs: the ordered columns, each required column, each closed vocabulary."""
    spec = schema.TABLES[table]
    out = [
        _expectation(
            "expect_table_columns_to_match_ordered_list",
            {"column_list": list(spec.column_names)},
            "columns_match_schema",
            "the canonical column order (warehouse/schema.py)",
        )
    ]
    for column in spec.columns:
        if not column.nullable and column.name not in FILLED_BY_CONFORM:
            out.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    {"column": column.name},
                    f"{column.name}_not_null",
                    "required by the schema",
                )
            )
    for column in spec.columns:
        if column.vocabulary:
            out.append(
                _expectation(
                    VOCABULARY_TYPE,
                    {"column": column.name, "value_set": list(schema.VOCABULARIES[column.vocabulary])},
                    f"{column.name}_in_vocabulary",
                    f"the closed vocabulary {column.vocabulary!r} of the schema",
                )
            )
    return out


def generated_overlap(table: str, hand_written: list[dict]) -> list[str]:
    """Hand-written expectations that restate a generated one (they belong to the schema instead)."""
    generated = {(e["type"], e["kwargs"].get("column")) for e in structural_expectations(table)}
    return [
        e["meta"]["name"]
        for e in hand_written
        if (e["type"] in GENERATED_TYPES and (e["type"], e["kwargs"].get("column")) in generated)
        or (e["type"] == VOCABULARY_TYPE and (e["type"], e["kwargs"].get("column")) in generated)
    ]


def _expectation(kind: str, kwargs: dict, name: str, why: str) -> dict:
    return {
        "type": kind,
        "kwargs": kwargs,
        "meta": {"name": name, "why": why, "generated": "schema"},
        "severity": "critical",
    }

"""Which canonical table refers to which, declared once beside the schema.

The schema gives each table its key; this says which columns of one table point at the key of
another. Every reference holds within one dataset, so `dataset` is part of each join and is left
out here. The data dictionary draws its entity-relationship diagram from these declarations, and
tests/test_relations.py checks each one against the schema. The integrity checks that enforce the
references on the data are SQL (expectations/integrity.sql).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import schema


@dataclass(frozen=True)
class Reference:
    table: str  # the referring table
    columns: tuple[str, ...]  # its columns, in the order of the referenced key
    to_table: str  # the referenced table
    to_columns: tuple[str, ...]  # the referenced table's key columns

    @property
    def label(self) -> str:
        return ", ".join(self.columns)


def _ref(table: str, columns: str, to_table: str, to_columns: str | None = None) -> Reference:
    cols = tuple(columns.split())
    return Reference(table, cols, to_table, tuple(to_columns.split()) if to_columns else cols)


REFERENCES: tuple[Reference, ...] = (
    _ref("studies", "patient_id", "patients"),
    _ref("images", "study_id", "studies"),
    _ref("images", "patient_id", "patients"),
    _ref("reports", "study_id", "studies"),
    _ref("labels", "study_id", "studies"),
    _ref("labels", "image_id", "images"),
    _ref("boxes", "image_id", "images"),
    _ref("qa_questions", "study_id", "studies"),
    _ref("qa_answers", "study_id question_id", "qa_questions"),
    _ref("qa_answers", "study_id question_id parent_answer_id", "qa_answers", "study_id question_id answer_id"),
    _ref("qa_answer_boxes", "study_id question_id answer_id", "qa_answers"),
    _ref("qa_answer_boxes", "image_id", "images"),
    _ref("image_labels", "image_id", "images"),
)


def references(tables: Iterable[str] | None = None) -> list[Reference]:
    """The references among the named tables (default: every table of the schema)."""
    names = set(schema.TABLES if tables is None else tables)
    return [r for r in REFERENCES if r.table in names and r.to_table in names]

"""The quality gates on their own: every check trips on a planted defect, and blocks publishing.

One warehouse is published from good sources (an NIH subset with boxes, MIMIC-CXR and
MIMIC-Ext-CXR-QBA samples); each case then damages one thing and runs the gated path again. A
defect is planted in a copy of a source file where the adapter passes it through (a duplicated
line, a patient in two splits, a box on an unknown image); where the adapter would absorb it (it
quarantines a missing id, nulls an age of 400, maps an unknown view to OTHER), the dataset is
staged normally and the staged Parquet is rewritten before the gate. `columns_match_schema` guards
drift between the canonical schema and the suite (staged files always hold the schema's columns),
so its defect is a schema that grew a column the suite does not list. Either way the named check must fail, the publish must be
refused, and the published tables and catalog must stay as they were.

Expected counts in the end-to-end tests are counted here from the sample files (csv, zipfile, json).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from warehouse import Warehouse, publish_log, quality, schema
from warehouse.gated import GatedIngest, IngestBlocked, check_name
from warehouse.ingest import save_staged
from warehouse.samples import mimic_cxr as mimic_cxr_samples
from warehouse.samples import mimic_qba as qba_samples
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.store import partition_columns
from warehouse.views import staged_files_sql

from .conftest import make_settings, nih_subset

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # the folder of a null partition value, as Hive readers (DuckDB) read it

NIH_ROWS = 320  # the first 320 rows of the real file include images with boxes
PATIENTS, SEED, QUESTIONS = 6, 5, 4
ENTRY, BBOX = "Data_Entry_2017_v2020.csv", "BBox_List_2017.csv"
SPLIT_CSV, CHEXPERT_CSV, REPORTS_ZIP = (
    mimic_cxr_samples.SPLIT_FILE,
    mimic_cxr_samples.CHEXPERT_FILE,
    mimic_cxr_samples.REPORTS_ZIP_FILE,
)
# Data_Entry fields: 0 Image Index, 1 Finding Labels, 2 Follow-up #, 3 Patient ID, 4 Patient Age,
# 5 Patient Gender, 6 View Position, 7 Width, 8 Height, 9 spacing x, 10 spacing y.
# BBox fields: 0 Image Index, 1 Finding Label, 2 x, 3 y, 4 w, 5 h.


# --- the intended severity of every check, written by hand (not read from the code) ----------------
BLOCKING, WARNING = "blocking", "warning"
INTENDED_SEVERITY = {
    **{
        f"boxes__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "image_id_not_null",
            "key_unique",
            "width_positive",
            "height_positive",
            "x_not_negative",
            "y_not_negative",
            "box_index_not_null",
            "raw_label_not_null",
        )
    },
    **{
        f"images__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "image_id_not_null",
            "study_id_not_null",
            "patient_id_not_null",
            "key_unique",
            "split_in_vocabulary",
            "view_position_in_vocabulary",
            "width_positive",
            "height_positive",
            "pixel_spacing_positive",
            "pixel_spacing_y_positive",
            "split_not_null",
            "view_position_not_null",
            "image_uid_not_null",
        )
    },
    **{
        f"labels__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "study_id_not_null",
            "finding_in_vocabulary",
            "raw_label_not_null",
            "key_unique",
            "value_in_vocabulary",
            "labeler_in_vocabulary",
            "label_split_in_vocabulary",
            "value_not_null",
            "labeler_not_null",
        )
    },
    **{
        f"patients__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "patient_id_not_null",
            "key_unique",
            "sex_in_vocabulary",
            "birth_year_plausible",
            "race_in_vocabulary",
            "ethnicity_in_vocabulary",
            "sex_not_null",
        )
    },
    **{
        f"qa_answer_boxes__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "answer_id_not_null",
            "image_id_not_null",
            "key_unique",
            "box_x_ordered",
            "box_y_ordered",
            "study_id_not_null",
            "split_not_null",
            "question_id_not_null",
            "box_index_not_null",
            "split_in_vocabulary",
        )
    },
    **{
        f"qa_answers__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "answer_id_not_null",
            "question_id_not_null",
            "key_unique",
            "split_in_vocabulary",
            "answer_type_in_vocabulary",
            "quality_grade_in_vocabulary",
            "answer_level_not_negative",
            "study_id_not_null",
            "split_not_null",
        )
    },
    **{
        f"qa_questions__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "question_id_not_null",
            "study_id_not_null",
            "key_unique",
            "split_in_vocabulary",
            "quality_grade_in_vocabulary",
            "num_answers_positive",
            "patient_id_not_null",
            "split_not_null",
            "question_type_not_null",
            "quality_grade_not_null",
        )
    },
    **{
        f"quarantine__{n}": BLOCKING
        for n in ("columns_match_schema", "source_file_not_null", "reason_not_null", "column_name_not_null")
    },
    **{
        f"reports__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "study_id_not_null",
            "key_unique",
            "full_text_not_null",
            "language_known",
            "tokens_findings_positive",
            "tokens_impression_positive",
            "patient_id_not_null",
        )
    },
    **{
        f"studies__{n}": BLOCKING
        for n in (
            "columns_match_schema",
            "study_id_not_null",
            "patient_id_not_null",
            "key_unique",
            "split_in_vocabulary",
            "age_years_in_range",
            "weight_kg_in_range",
            "split_not_null",
        )
    },
    **{
        f"integrity__{n}": BLOCKING
        for n in (
            "image_study_exists",
            "image_patient_matches_study",
            "image_split_matches_study",
            "study_patient_exists",
            "patient_in_one_split",
            "label_study_exists",
            "label_image_exists",
            "report_study_exists",
            "report_patient_matches_study",
            "question_study_exists",
            "question_patient_matches_study",
            "box_image_exists",
            "answer_question_exists",
            "answer_parent_exists",
            "answer_box_answer_exists",
        )
    },
    "integrity__quarantine_share": WARNING,  # a few unreadable rows are reported, the rest still publishes
    **{f"volume__{n}": BLOCKING for n in ("not_empty", "no_shrink", "expected_counts")},
}


def declared_checks() -> dict[str, bool]:
    """Every check the code declares, by the name people read, with whether it blocks."""
    checks = {
        f"{t}__{name}": blocking for t in quality.suite_tables() for name, blocking, _ in quality.expectation_checks(t)
    }
    checks.update({f"integrity__{c.name}": c.blocking for c in quality.integrity_checks()})
    checks.update({f"volume__{o.name}": o.blocking for o in quality.volume_gate("nih_cxr14", {}, [], None)})
    return checks


def test_every_check_has_its_intended_severity():
    declared = declared_checks()
    assert set(declared) == set(INTENDED_SEVERITY), "a check was added or removed: state its intended severity here"
    wrong = {
        name: ("blocking" if b else "warning")
        for name, b in declared.items()
        if b != (INTENDED_SEVERITY[name] == BLOCKING)
    }
    assert wrong == {}, "these checks do not have the severity intended for them"


def test_an_expectation_marked_warning_does_not_block(monkeypatch):
    """No shipped suite has a warning expectation yet; the first one added must report, not block."""
    shipped = quality.suite("images")
    extra = {
        "type": "expect_column_values_to_not_be_null",
        "kwargs": {"column": "path"},
        "meta": {"name": "path_mostly_present"},
        "severity": "warning",
    }
    monkeypatch.setattr(quality, "suite", lambda table: {**shipped, "expectations": [*shipped["expectations"], extra]})
    checks = {name: blocking for name, blocking, _ in quality.expectation_checks("images")}
    assert checks["path_mostly_present"] is False and checks["columns_match_schema"] is True


def test_the_structural_expectations_follow_the_schema(monkeypatch):
    """A column made required, or given a vocabulary, in schema.py is checked without editing a suite."""
    spec = schema.TABLES["images"]
    grown = dataclasses.replace(
        spec, columns=(*spec.columns, schema._c("detector", pa.string(), "new", nullable=False, vocabulary="sex"))
    )
    monkeypatch.setitem(schema.TABLES, "images", grown)
    quality.suite.cache_clear()
    try:
        by_name = {e["meta"]["name"]: e for e in quality.suite("images")["expectations"]}
        assert by_name["columns_match_schema"]["kwargs"]["column_list"][-1] == "detector"
        assert by_name["detector_not_null"]["kwargs"] == {"column": "detector"}
        assert by_name["detector_in_vocabulary"]["kwargs"]["value_set"] == list(schema.SEX)
        assert "width_positive" in by_name, "the hand-written rules stay"
    finally:
        monkeypatch.undo()
        quality.suite.cache_clear()


def test_a_suite_restating_the_schema_is_refused(tmp_path, monkeypatch):
    doc = json.loads((quality.EXPECTATIONS_ROOT / "studies.json").read_text())
    doc["expectations"].append(
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "study_id"},
            "meta": {"name": "study_id_required"},
        }
    )
    for path in quality.EXPECTATIONS_ROOT.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "studies.json").write_text(json.dumps(doc))
    monkeypatch.setattr(quality, "EXPECTATIONS_ROOT", tmp_path)
    quality.suite.cache_clear()
    try:
        with pytest.raises(ValueError, match="study_id_required restate the schema"):
            quality.suite("studies")
    finally:
        monkeypatch.undo()
        quality.suite.cache_clear()


def test_dagster_asset_checks_carry_the_intended_severity():
    from pipelines.definitions import defs

    specs = {s.key.name: s.blocking for c in defs.asset_checks for s in c.check_specs}
    assert specs == {name: severity == BLOCKING for name, severity in INTENDED_SEVERITY.items()}


# --- source damage -------------------------------------------------------------------------------
def _edit_lines(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite a plain text file line by line (lines keep their newline)."""
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))


def _set_fields(line: str, **fields: str) -> str:
    """A csv line with some fields replaced, by index (`f7="0"`)."""
    parts = line.rstrip("\n").split(",")
    for key, value in fields.items():
        parts[int(key[1:])] = value
    return ",".join(parts) + "\n"


def entry_line(index: int, **fields: str) -> Callable[[Path], None]:
    """Damage one data line of the NIH Data_Entry file (index 1 = the first data line)."""

    def damage(folder: Path) -> None:
        _edit_lines(
            folder / ENTRY, lambda lines: [*lines[:index], _set_fields(lines[index], **fields), *lines[index + 1 :]]
        )

    return damage


def duplicate_entry_line(index: int) -> Callable[[Path], None]:
    """The same image listed twice, as a careless concatenation of two releases does."""

    def damage(folder: Path) -> None:
        _edit_lines(folder / ENTRY, lambda lines: [*lines, lines[index]])

    return damage


def extra_field(*indexes: int) -> Callable[[Path], None]:
    """Lines with one field too many: the adapter quarantines them whole."""

    def damage(folder: Path) -> None:
        _edit_lines(
            folder / ENTRY,
            lambda lines: [line.rstrip("\n") + ",extra\n" if i in indexes else line for i, line in enumerate(lines)],
        )

    return damage


def box_line(index: int = 1, **fields: str) -> Callable[[Path], None]:
    """Damage one box of the NIH BBox file."""

    def damage(folder: Path) -> None:
        _edit_lines(
            folder / BBOX, lambda lines: [*lines[:index], _set_fields(lines[index], **fields), *lines[index + 1 :]]
        )

    return damage


def nih_patient_in_two_splits(folder: Path) -> None:
    """Official split lists that put one of patient 1's three images in test, the others in train."""
    images = [line.split(",", 1)[0] for line in (folder / ENTRY).read_text().splitlines()[1:]]
    (folder / "train_val_list.txt").write_text("".join(f"{i}\n" for i in images if i != "00000001_001.png"))
    (folder / "test_list.txt").write_text("00000001_001.png\n")


def _edit_gz_csv(path: Path, edit: Callable[[list[dict]], list[dict]]) -> None:
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(edit(rows))
    path.write_bytes(gzip.compress(out.getvalue().encode()))


def _split_rows(folder: Path) -> list[dict]:
    with gzip.open(folder / SPLIT_CSV, "rt", newline="") as f:
        return list(csv.DictReader(f))


def mimic_patient_in_two_splits(folder: Path) -> None:
    """Every image of one study of a train patient with several studies moved to test in the split file."""
    rows = _split_rows(folder)
    studies: dict[str, set] = {}
    for r in rows:
        if r["split"] == "train":
            studies.setdefault(r["subject_id"], set()).add(r["study_id"])
    subject = next(s for s, ids in sorted(studies.items()) if len(ids) > 1)
    moved = min(studies[subject])
    _edit_gz_csv(
        folder / SPLIT_CSV, lambda rows: [dict(r, split="test") if r["study_id"] == moved else r for r in rows]
    )


def mimic_study_in_two_splits(folder: Path) -> None:
    """One image of a train study with several images moved to test: the study's images disagree."""
    rows = _split_rows(folder)
    per_study: dict[str, list] = {}
    for r in rows:
        if r["split"] == "train":
            per_study.setdefault(r["study_id"], []).append(r["dicom_id"])
    dicom = next(ids[-1] for _, ids in sorted(per_study.items()) if len(ids) > 1)
    _edit_gz_csv(
        folder / SPLIT_CSV, lambda rows: [dict(r, split="test") if r["dicom_id"] == dicom else r for r in rows]
    )


def mimic_label_for_unknown_study(folder: Path) -> None:
    """A CheXpert label row for a study the metadata does not list (a label file from another release)."""
    _edit_gz_csv(folder / CHEXPERT_CSV, lambda rows: [*rows, dict(rows[0], study_id="59999999")])


def mimic_report_for_unknown_study(folder: Path) -> None:
    """A report in the zip for a study the metadata does not list."""
    with zipfile.ZipFile(folder / REPORTS_ZIP) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".txt"))
        text = archive.read(name)
    with zipfile.ZipFile(folder / REPORTS_ZIP, "a") as archive:
        archive.writestr(name.rsplit("/", 1)[0] + "/s59999999.txt", text)


# --- staged Parquet rewrites (for defects the adapter would absorb) -------------------------------------
def first_row(column: str, value: str) -> str:
    """SQL over the staged rows `t`: the first row's column set to a SQL value."""
    return (
        f'SELECT * EXCLUDE (_n) FROM (SELECT * REPLACE (CASE WHEN _n = 1 THEN {value} ELSE "{column}" END '
        f'AS "{column}") FROM (SELECT *, row_number() OVER () AS _n FROM t))'
    )


DUPLICATE_FIRST_ROW = "SELECT * FROM t UNION ALL (SELECT * FROM t LIMIT 1)"


def drop_first(column: str) -> str:
    """SQL over `t`: the rows without the smallest value of the column (a lost parent row)."""
    return f'SELECT * FROM t WHERE "{column}" IS DISTINCT FROM (SELECT min("{column}") FROM t)'


def rewrite_staged(ingest: GatedIngest, table: str, sql: str) -> None:
    """Replace a staged table's rows by `sql` over them, in the run's own staged files (Delta data files: the
    partition values in the folder names, each sub-partition's rows in its own folder)."""
    staged = ingest.staged()
    partition = staged.partitions[table]
    spec = schema.TABLES[table]
    target = pa.schema([f.with_nullable(True) for f in spec.schema if f.name not in partition_columns(spec)])
    con = duckdb.connect()
    try:
        con.register("_empty", pa.schema([f.with_nullable(True) for f in spec.schema]).empty_table())
        files = partition.urls()
        source = f"({staged_files_sql(spec, files)})" if files else "_empty"
        con.execute(f"CREATE TEMP TABLE t AS SELECT * FROM {source}")
        rows = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    for path in partition.urls():
        Path(path).unlink()
    key = spec.subpartition
    groups = [(None, rows)]
    if key:  # a null value goes where the writer puts it, the folder a Hive reader reads as null
        values = rows[key].unique().to_pylist()
        groups = [(v, rows.filter(pc.is_null(rows[key]) if v is None else pc.equal(rows[key], v))) for v in values]
    partition.files = []
    for i, (value, part) in enumerate(g for g in groups if g[1].num_rows):
        folder = NULL_PARTITION if value is None else value
        rel = f"{key}={folder}/part-{i:05d}.parquet" if key else f"part-{i:05d}.parquet"
        path = Path(partition.folder, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.select(target.names).cast(target), path)
        stats = json.dumps({"numRecords": part.num_rows})
        partition.files.append({"path": rel, "rows": part.num_rows, "bytes": path.stat().st_size, "stats": stats})
    partition.rows = rows.num_rows
    save_staged(ingest.store, staged)


# --- the cases ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defect:
    check: str  # the check that must fail, as people read it
    dataset: str
    source: Callable[[Path], None] | None = None  # damages a copy of the dataset's source folder
    staged: tuple[tuple[str, str], ...] = ()  # (table, SQL over its staged rows `t`) rewrites
    new_column: str | None = None  # the canonical schema grew a column the suite lacks

    @property
    def id(self) -> str:
        how = "source" if self.source and not self.staged else "staged" if self.staged else "schema"
        return f"{self.check}[{self.dataset},{how}]"


def staged(dataset: str, check: str, sql: str, source=None, *, table: str | None = None) -> Defect:
    """A rewrite of the staged rows of the check's own table (`<table>__<check>`); an integrity check names
    the table it damages."""
    table = table or check.split("__", 1)[0]
    assert table in schema.TABLES, f"{check}: name the table to damage"
    return Defect(check, dataset, source=source, staged=((table, sql),))


def new_column(dataset: str, table: str) -> Defect:
    return Defect(f"{table}__columns_match_schema", dataset, new_column=table)


NIH, MIMIC, QBA = "nih_cxr14", "mimic_cxr", "mimic_qba"
COLUMN_FEEDERS = {
    "boxes": NIH,
    "images": NIH,
    "labels": NIH,
    "patients": NIH,
    "quarantine": NIH,
    "studies": NIH,
    "reports": MIMIC,
    "qa_questions": QBA,
    "qa_answers": QBA,
    "qa_answer_boxes": QBA,
}
BAD_LINES = extra_field(7)  # one quarantined line, so the quarantine has a row to damage

DEFECTS = [
    *(new_column(dataset, table) for table, dataset in COLUMN_FEEDERS.items()),
    # boxes: the BBox file's values pass through the adapter as written
    staged(NIH, "boxes__image_id_not_null", first_row("image_id", "NULL")),
    staged(NIH, "boxes__key_unique", DUPLICATE_FIRST_ROW),
    Defect("boxes__width_positive", NIH, box_line(1, f4="0")),
    Defect("boxes__height_positive", NIH, box_line(1, f5="-12.5")),
    Defect("boxes__x_not_negative", NIH, box_line(1, f2="-3")),
    Defect("boxes__y_not_negative", NIH, box_line(2, f3="-0.5")),
    # (a box line naming an unknown image is quarantined by the adapter; the check guards the staged rows)
    staged(NIH, "integrity__box_image_exists", first_row("image_id", "'00099999_000'"), table="boxes"),
    # images
    staged(NIH, "images__image_id_not_null", first_row("image_id", "NULL")),
    staged(NIH, "images__study_id_not_null", first_row("study_id", "NULL")),
    staged(NIH, "images__patient_id_not_null", first_row("patient_id", "NULL")),
    Defect("images__key_unique", NIH, duplicate_entry_line(10)),
    staged(NIH, "images__split_in_vocabulary", first_row("split", "'validation'")),
    staged(NIH, "images__view_position_in_vocabulary", first_row("view_position", "'Lateral'")),
    Defect("images__width_positive", NIH, entry_line(4, f7="0")),
    Defect("images__height_positive", NIH, entry_line(5, f8="0")),
    Defect("images__pixel_spacing_positive", NIH, entry_line(6, f9="0")),
    Defect("images__pixel_spacing_y_positive", NIH, entry_line(6, f10="-0.143")),
    # labels
    staged(NIH, "labels__study_id_not_null", first_row("study_id", "NULL")),
    staged(NIH, "labels__finding_in_vocabulary", first_row("finding", "'pleural_efusion'")),
    staged(NIH, "labels__raw_label_not_null", first_row("raw_label", "NULL")),
    Defect("labels__key_unique", NIH, entry_line(3, f1="Effusion|Hernia|Effusion")),
    staged(NIH, "labels__value_in_vocabulary", first_row("value", "2")),
    staged(NIH, "labels__labeler_in_vocabulary", first_row("labeler", "'nlp'")),
    staged(NIH, "labels__label_split_in_vocabulary", first_row("label_split", "'validation'")),
    # patients
    staged(NIH, "patients__race_in_vocabulary", first_row("race", "'W'")),
    staged(NIH, "patients__ethnicity_in_vocabulary", first_row("ethnicity", "'latino'")),
    staged(NIH, "patients__patient_id_not_null", first_row("patient_id", "NULL")),
    staged(NIH, "patients__key_unique", DUPLICATE_FIRST_ROW),
    staged(NIH, "patients__sex_in_vocabulary", first_row("sex", "'Male'")),
    staged(NIH, "patients__birth_year_plausible", first_row("birth_year", "1700")),
    # quarantine: a damaged line gives it a row, which is then damaged
    staged(NIH, "quarantine__source_file_not_null", first_row("source_file", "NULL"), BAD_LINES),
    staged(NIH, "quarantine__reason_not_null", first_row("reason", "NULL"), BAD_LINES),
    # studies
    staged(NIH, "studies__study_id_not_null", first_row("study_id", "NULL")),
    staged(NIH, "studies__patient_id_not_null", first_row("patient_id", "NULL")),
    Defect("studies__key_unique", NIH, duplicate_entry_line(20)),
    staged(NIH, "studies__split_in_vocabulary", first_row("split", "'holdout'")),
    staged(NIH, "studies__age_years_in_range", first_row("age_years", "121")),  # just past the limit
    staged(NIH, "studies__weight_kg_in_range", first_row("weight_kg", "0")),
    # reports
    staged(MIMIC, "reports__study_id_not_null", first_row("study_id", "NULL")),
    staged(MIMIC, "reports__key_unique", DUPLICATE_FIRST_ROW),
    staged(MIMIC, "reports__full_text_not_null", first_row("full_text", "NULL")),
    staged(MIMIC, "reports__language_known", first_row("language", "'fr'")),
    staged(MIMIC, "reports__tokens_findings_positive", first_row("tokens_findings", "0")),
    staged(MIMIC, "reports__tokens_impression_positive", first_row("tokens_impression", "0")),
    # QA tables
    staged(QBA, "qa_questions__question_id_not_null", first_row("question_id", "NULL")),
    staged(QBA, "qa_questions__study_id_not_null", first_row("study_id", "NULL")),
    staged(QBA, "qa_questions__key_unique", DUPLICATE_FIRST_ROW),
    staged(QBA, "qa_questions__split_in_vocabulary", first_row("split", "'validate'")),
    staged(QBA, "qa_questions__quality_grade_in_vocabulary", first_row("quality_grade", "'E'")),
    staged(QBA, "qa_questions__num_answers_positive", first_row("num_answers", "0")),
    staged(QBA, "qa_answers__answer_id_not_null", first_row("answer_id", "NULL")),
    staged(QBA, "qa_answers__question_id_not_null", first_row("question_id", "NULL")),
    staged(QBA, "qa_answers__key_unique", DUPLICATE_FIRST_ROW),
    staged(QBA, "qa_answers__split_in_vocabulary", first_row("split", "'dev'")),
    staged(QBA, "qa_answers__answer_type_in_vocabulary", first_row("answer_type", "'summary'")),
    staged(QBA, "qa_answers__quality_grade_in_vocabulary", first_row("quality_grade", "'A+++'")),
    staged(QBA, "qa_answers__answer_level_not_negative", first_row("answer_level", "-1")),
    staged(QBA, "qa_answer_boxes__answer_id_not_null", first_row("answer_id", "NULL")),
    staged(QBA, "qa_answer_boxes__image_id_not_null", first_row("image_id", "NULL")),
    staged(QBA, "qa_answer_boxes__key_unique", DUPLICATE_FIRST_ROW),
    staged(QBA, "qa_answer_boxes__box_x_ordered", first_row("x2", "x1")),
    staged(QBA, "qa_answer_boxes__box_y_ordered", first_row("y2", "y1 - 1")),
    # required columns and closed vocabularies the schema declares (warehouse/suite_structure.py generates them)
    *(staged(NIH, f"boxes__{c}_not_null", first_row(c, "NULL")) for c in ("box_index", "raw_label")),
    *(staged(NIH, f"images__{c}_not_null", first_row(c, "NULL")) for c in ("split", "view_position", "image_uid")),
    *(staged(NIH, f"labels__{c}_not_null", first_row(c, "NULL")) for c in ("value", "labeler")),
    staged(NIH, "patients__sex_not_null", first_row("sex", "NULL")),
    *(
        staged(QBA, f"qa_answer_boxes__{c}_not_null", first_row(c, "NULL"))
        for c in ("study_id", "split", "question_id", "box_index")
    ),
    staged(QBA, "qa_answer_boxes__split_in_vocabulary", first_row("split", "'validation'")),
    *(staged(QBA, f"qa_answers__{c}_not_null", first_row(c, "NULL")) for c in ("study_id", "split")),
    *(
        staged(QBA, f"qa_questions__{c}_not_null", first_row(c, "NULL"))
        for c in ("patient_id", "split", "question_type", "quality_grade")
    ),
    staged(NIH, "quarantine__column_name_not_null", first_row("column_name", "NULL"), BAD_LINES),
    staged(MIMIC, "reports__patient_id_not_null", first_row("patient_id", "NULL")),
    staged(NIH, "studies__split_not_null", first_row("split", "NULL")),
    # integrity
    staged(NIH, "integrity__image_study_exists", drop_first("study_id"), table="studies"),
    staged(
        NIH,
        "integrity__image_patient_matches_study",
        first_row("patient_id", "(SELECT max(patient_id) FROM t)"),
        table="images",
    ),
    Defect("integrity__image_split_matches_study", MIMIC, mimic_study_in_two_splits),
    staged(NIH, "integrity__study_patient_exists", drop_first("patient_id"), table="patients"),
    Defect("integrity__patient_in_one_split", NIH, nih_patient_in_two_splits),
    Defect("integrity__patient_in_one_split", MIMIC, mimic_patient_in_two_splits),
    Defect("integrity__label_study_exists", MIMIC, mimic_label_for_unknown_study),
    staged(NIH, "integrity__label_image_exists", first_row("image_id", "'00099999_000'"), table="labels"),
    Defect("integrity__report_study_exists", MIMIC, mimic_report_for_unknown_study),
    staged(
        MIMIC,
        "integrity__report_patient_matches_study",
        first_row("patient_id", "(SELECT max(patient_id) FROM t)"),
        table="reports",
    ),
    staged(QBA, "integrity__question_study_exists", first_row("study_id", "'99999999'"), table="qa_questions"),
    staged(
        QBA,
        "integrity__question_patient_matches_study",
        first_row("patient_id", "(SELECT max(patient_id) FROM t)"),
        table="qa_questions",
    ),
    staged(
        QBA, "integrity__answer_question_exists", first_row("question_id", "'no-such-question'"), table="qa_answers"
    ),
    staged(
        QBA,
        "integrity__answer_parent_exists",
        "SELECT * REPLACE (CASE WHEN parent_answer_id IS NOT NULL AND _n = 1 THEN '999999' "
        "ELSE parent_answer_id END AS parent_answer_id) FROM "
        "(SELECT *, row_number() OVER (ORDER BY parent_answer_id NULLS LAST) AS _n FROM t)",
        table="qa_answers",
    ),
    staged(QBA, "integrity__answer_box_answer_exists", first_row("answer_id", "'999999'"), table="qa_answer_boxes"),
]
WARNING_DEFECTS = {"integrity__quarantine_share": extra_field(3, 9)}  # 2 of 40 lines: 5 % rejected


def test_every_declared_check_has_a_planted_defect():
    """A new check without a case here fails this test."""
    covered = {d.check for d in DEFECTS} | set(WARNING_DEFECTS)
    declared = {name for name in declared_checks() if not name.startswith("volume__")}  # tests/test_volume.py
    assert covered == declared
    blocking = {name for name, b in declared_checks().items() if b}
    assert {d.check for d in DEFECTS} == blocking - {n for n in blocking if n.startswith("volume__")}


# --- the published warehouse the defects try to replace ----------------------------------------------
@dataclass
class Published:
    root: Path
    cache: Path
    sources: dict[str, Path]
    results: dict
    state: dict | None = None

    def settings(self, **sources: Path):
        return make_settings(self.root, self.cache, **{**self.sources, **sources})


def write_sources(folder: Path, raw_files) -> dict[str, Path]:
    """An NIH subset of the real file, and MIMIC-CXR + QBA samples of one shared cohort."""
    cohort = plan_mimic_cohort(PATIENTS, SEED)
    mimic_cxr_samples.write_samples(folder / MIMIC, cohort=cohort, seed=SEED)
    qba_samples.write_samples(folder / QBA, cohort=cohort, seed=SEED, questions_per_study=QUESTIONS)
    return {NIH: nih_subset(raw_files, folder / NIH, NIH_ROWS), MIMIC: folder / MIMIC, QBA: folder / QBA}


@pytest.fixture(scope="module")
def published(tmp_path_factory, cache_dir, raw_files) -> Published:
    root = tmp_path_factory.mktemp("gates")
    pub = Published(root, cache_dir, write_sources(root / "sources", raw_files), {})
    settings = pub.settings()
    wh = Warehouse(settings)
    for dataset in (NIH, MIMIC, QBA):
        pub.results[dataset] = GatedIngest(settings, wh.store, dataset).run()
    wh.refresh_catalog()
    pub.state = published_state(settings)
    return pub


def published_state(settings) -> dict:
    """What a reader sees: the adopted publish of each dataset, each table's Delta version and the rows
    the catalog answers with (the Dagster test also rebuilds the catalog after a blocked run)."""
    wh = Warehouse(settings)
    versions = {t: wh.store.delta(t).version() for t in schema.TABLES if wh.store.delta(t) is not None}
    counts = " UNION ALL ".join(
        f"SELECT '{t}' AS t, dataset, count(*) AS n FROM \"{t}\" GROUP BY ALL"
        for t in schema.TABLES
        if not schema.TABLES[t].derived
    )
    rows = wh.sql(f"SELECT * FROM ({counts}) ORDER BY ALL").to_pylist()
    adopted = {d: p.run_id for d, p in publish_log.adopted(wh.store).items()}
    return {"adopted": adopted, "versions": versions, "rows": rows}


def damaged_copy(published: Published, dataset: str, damage, folder: Path) -> Path:
    target = folder / dataset
    shutil.copytree(published.sources[dataset], target)
    damage(target)
    return target


def run_gate(ingest: GatedIngest, defect: Defect, monkeypatch) -> list[quality.CheckOutcome]:
    """Stage, plant the staged damage, gate: the steps of GatedIngest.run() with a hand in between."""
    if defect.new_column:
        spec = schema.TABLES[defect.new_column]
        grown = dataclasses.replace(spec, columns=(*spec.columns, schema._c("added_later", pa.string(), "new")))
        monkeypatch.setitem(schema.TABLES, defect.new_column, grown)
    ingest.stage()
    for table, sql in defect.staged:
        rewrite_staged(ingest, table, sql)
    outcomes = ingest.gate()
    monkeypatch.undo()
    return outcomes


# pytest-xdist keeps a file's tests on one worker: the second half of the cases runs from
# tests/test_gates_planted.py, so both halves run side by side
FIRST_HALF, SECOND_HALF = DEFECTS[: len(DEFECTS) // 2], DEFECTS[len(DEFECTS) // 2 :]


@pytest.mark.parametrize("defect", FIRST_HALF, ids=lambda d: d.id)
def test_planted_defect_fails_its_check_and_blocks_publishing(published, defect, tmp_path, monkeypatch):
    check_planted_defect(published, defect, tmp_path, monkeypatch)


def check_planted_defect(published, defect, tmp_path, monkeypatch) -> None:
    """Stage the damaged dataset, gate it: the named check fails and blocks, and nothing readers see changes."""
    sources = (
        {defect.dataset: damaged_copy(published, defect.dataset, defect.source, tmp_path)} if defect.source else {}
    )
    settings = published.settings(**sources)
    ingest = GatedIngest(settings, Warehouse(settings).store, defect.dataset)
    outcomes = run_gate(ingest, defect, monkeypatch)

    failed = {check_name(o): o for o in outcomes if not o.passed}
    assert defect.check in failed, f"{defect.check} passed; failing instead: {sorted(failed)}"
    outcome = failed[defect.check]
    ran = outcome.note is None or (outcome.name == "key_unique" and outcome.note.startswith("computed in SQL over all"))
    assert outcome.blocking and ran, "the check ran (not 'not applicable') and blocks"
    if outcome.name == "key_unique":
        assert outcome.unexpected_count >= 1 and outcome.sample[0]["copies"] >= 2, "it names the repeated key"
    if outcome.kind == "integrity":
        assert outcome.unexpected_count >= 1 and outcome.sample, "an integrity failure names its rows"
    with pytest.raises(IngestBlocked):
        ingest.publish(checks_passed=0, checks_failed=sum(not o.passed and o.blocking for o in outcomes))
    result = ingest.block(outcomes=outcomes)
    assert result.status == "blocked" and defect.check in result.failed_checks and defect.check in result.message
    assert published_state(settings) == published.state, "a blocked run changed what readers see"
    assert not list((published.root / "warehouse" / "_staging" / defect.dataset).glob("*")), "staged files stay"


# --- warnings report, never block -----------------------------------------------------------------
def test_quarantine_share_warns_and_the_dataset_still_publishes(tmp_path, cache_dir, raw_files):
    folder = nih_subset(raw_files, tmp_path / "nih", 40)
    WARNING_DEFECTS["integrity__quarantine_share"](folder)
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=folder)
    result = GatedIngest(settings, Warehouse(settings).store, NIH).run()
    outcome = {check_name(o): o for o in result.outcomes}["integrity__quarantine_share"]
    assert not outcome.passed and not outcome.blocking
    assert outcome.sample == [{"rejected_rows": 2, "image_rows": 38}]
    assert result.status == "published" and result.rows["images"] == 38


# --- studies with study-level labels and QA tables, through the real gated path ------------------------
def _gz_csv(path: Path) -> list[dict]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def expected_counts(sources: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Rows per table, counted from the sample files with csv, zipfile and json."""
    meta = _gz_csv(sources[MIMIC] / mimic_cxr_samples.METADATA_FILE)
    with zipfile.ZipFile(sources[MIMIC] / REPORTS_ZIP) as archive:
        reports = sum(1 for n in archive.namelist() if n.startswith("files/") and n.endswith(".txt"))
    questions = answers = boxes = 0
    qa_studies = set()
    with zipfile.ZipFile(sources[QBA] / "qa.zip") as archive:
        for name in archive.namelist():
            doc = json.loads(archive.read(name))
            qa_studies.add(doc["study_id"])
            for q in doc["questions"]:
                questions += 1
                stack = list(q["answers"])
                while stack:
                    a = stack.pop()
                    answers += 1
                    boxes += sum(len(loc["bboxes"]) for loc in a["localization"].values())
                    stack += a["sub_answers"]
    return {
        MIMIC: {
            "images": len(meta),
            "studies": len({r["study_id"] for r in meta}),
            "patients": len({r["subject_id"] for r in meta}),
            "reports": reports,
        },
        QBA: {"studies": len(qa_studies), "qa_questions": questions, "qa_answers": answers, "qa_answer_boxes": boxes},
    }


def study_level_labels(sources: dict[str, Path]) -> int:
    """CheXpert and NegBio rows: one label per non-blank cell, on a study (no image)."""
    total = 0
    for name in (mimic_cxr_samples.CHEXPERT_FILE, mimic_cxr_samples.NEGBIO_FILE):
        total += sum(
            1 for r in _gz_csv(sources[MIMIC] / name) for label in mimic_cxr_samples.CHEXPERT_LABELS if r[label] != ""
        )
    return total


def test_mimic_and_qba_pass_every_gate_and_publish_the_counted_rows(published):
    for dataset in (MIMIC, QBA):
        result = published.results[dataset]
        assert result.status == "published", result.message
        assert {check_name(o) for o in result.outcomes} == set(declared_checks())
        assert [check_name(o) for o in result.outcomes if not o.passed] == []
    applied = {
        check_name(o) for o in published.results[QBA].outcomes if not (o.note or "").startswith("not applicable")
    }
    assert {
        "integrity__answer_question_exists",
        "integrity__answer_parent_exists",
        "integrity__answer_box_answer_exists",
        "qa_answers__key_unique",
    } <= applied, "QA checks really ran"
    wh = Warehouse(published.settings())
    count = lambda sql, *params: wh.sql(sql, list(params)).column(0)[0].as_py()
    for dataset, tables in expected_counts(published.sources).items():
        assert all(tables.values()), f"an empty sample proves nothing: {tables}"
        published_rows = {t: count(f"SELECT count(*) FROM {t} WHERE dataset = ?", dataset) for t in tables}
        assert published_rows == tables == {t: published.results[dataset].rows[t] for t in tables}, dataset
    labels = count(
        "SELECT count(*) FROM labels WHERE dataset = 'mimic_cxr' AND labeler IN ('chexpert', 'negbio') "
        "AND image_id IS NULL"
    )
    assert labels == study_level_labels(published.sources) > 0


def test_mimic_and_qba_through_dagster_pass_and_a_split_leak_is_blocked(tmp_path, cache_dir, raw_files, published):
    import dagster as dg

    from pipelines import runner
    from pipelines.definitions import defs

    settings = make_settings(tmp_path, cache_dir, mimic_cxr=published.sources[MIMIC], mimic_qba=published.sources[QBA])
    runs = runner.ingest(settings, [MIMIC, QBA], dagster_instance=dg.DagsterInstance.ephemeral())
    every_check = len(defs.resolve_asset_graph().asset_check_keys)
    for run in runs:
        assert (run.status, run.checks_failed, run.checks_passed) == ("published", [], every_check), run.error
    expected = expected_counts(published.sources)
    for run in runs:
        assert {t: run.rows[t] for t in expected[run.dataset]} == expected[run.dataset]
    before = published_state(settings)

    leaked = damaged_copy(published, MIMIC, mimic_patient_in_two_splits, tmp_path / "leak")
    leaking = make_settings(tmp_path, cache_dir, mimic_cxr=leaked, mimic_qba=published.sources[QBA])
    [run] = runner.ingest(leaking, [MIMIC], dagster_instance=dg.DagsterInstance.ephemeral())
    assert run.status == "blocked" and run.checks_failed == ["integrity__patient_in_one_split"]
    assert published_state(leaking) == before


def test_datasets_ingested_side_by_side_publish_what_one_at_a_time_publishes(
    tmp_path, cache_dir, published, monkeypatch
):
    """`cxr ingest` runs datasets in two processes: the same rows land as the library's one-by-one ingest
    (the module's warehouse), QBA starts only once MIMIC-CXR, whose publish it links to, has published, and
    every worker's progress reaches this process."""
    import dagster as dg

    from pipelines import runner

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")  # what runner.instance() sets, undone after the test
    (tmp_path / "dagster").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster")  # the pooled event log
    settings = make_settings(tmp_path, cache_dir, **{d: str(p) for d, p in published.sources.items()})
    events: list[tuple[str, str, str]] = []
    runs = runner.ingest(settings, [QBA, MIMIC, NIH], workers=2, on_event=lambda *e: events.append(e))

    assert [(r.dataset, r.status, r.checks_failed) for r in runs] == [
        (QBA, "published", []),
        (MIMIC, "published", []),
        (NIH, "published", []),
    ], [r.error for r in runs]
    ends = [(d, kind) for d, kind, _ in events if kind in ("start", "published")]
    assert ends.index((QBA, "start")) > ends.index((MIMIC, "published")), ends
    assert {d for d, kind in ends if kind == "start"} == {QBA, MIMIC, NIH, "catalog"}
    assert sum(1 for _, kind, _ in events if kind == "step") >= 3 * 3, "each run's steps were relayed"
    assert published_state(settings)["rows"] == published.state["rows"]
    for dataset, tables in expected_counts(published.sources).items():
        assert {t: next(r for r in runs if r.dataset == dataset).rows[t] for t in tables} == tables

    home = runner.instance()
    recorded = {r.run_id: r for r in home.get_runs()}
    assert all(recorded[r.run_id].status == dg.DagsterRunStatus.SUCCESS for r in runs), "the workers' runs persist"
    assert {recorded[r.run_id].tags.get("dagster/partition") for r in runs} == {QBA, MIMIC, NIH}


# --- tables above the GX sampling limit ----------------------------------------------------------------
@dataclass(frozen=True)
class SampledDuplicate:
    table: str
    key: tuple[str, ...]  # the key as the suite declares it, written out here
    limit: int  # GX_MAX_ROWS for the test: the table is larger
    defect: Defect


SAMPLED = {
    # the same image listed twice in the source file: 321 image rows, GX sees 10 of them
    "images": SampledDuplicate(
        "images", ("image_id",), 10, Defect("images__key_unique", NIH, duplicate_entry_line(200))
    ),
    # two boxes of one image at the same index under different labels: GX sees 1 of 3 rows
    "boxes": SampledDuplicate(
        "boxes",
        ("image_id", "box_index"),
        1,
        staged(
            NIH,
            "boxes__key_unique",
            "SELECT * FROM t UNION ALL (SELECT * REPLACE ('Mass' AS raw_label) "
            "FROM t WHERE raw_label <> 'Mass' LIMIT 1)",
        ),
    ),
}


def _sample_duplicates(ingest: GatedIngest, case: SampledDuplicate) -> tuple[int, int, int]:
    """(rows, duplicated keys over every row, duplicated keys in the sample GX validates)."""
    key = ", ".join(case.key)
    dupes = "SELECT count(*) FROM (SELECT {k} FROM {rel} GROUP BY ALL HAVING count(*) > 1)"
    with quality.staged_connection(ingest.store, ingest.staged_files()) as con:
        total = quality.scalar(con, f"SELECT count(*) FROM {case.table}")
        sample = f"({quality.sample_sql(case.table, total)})"
        return (
            total,
            quality.scalar(con, dupes.format(k=key, rel=case.table)),
            quality.scalar(con, dupes.format(k=key, rel=sample)),
        )


@pytest.mark.parametrize("table", sorted(SAMPLED))
def test_a_duplicate_key_a_sample_misses_is_still_blocked(published, table, tmp_path, monkeypatch):
    """GX sees a sample of a large table; the key recount in SQL must see every row."""
    case = SAMPLED[table]
    monkeypatch.setattr(quality, "GX_MAX_ROWS", case.limit)
    sources = {NIH: damaged_copy(published, NIH, case.defect.source, tmp_path)} if case.defect.source else {}
    settings = published.settings(**sources)
    ingest = GatedIngest(settings, Warehouse(settings).store, NIH)
    ingest.stage()
    for name, sql in case.defect.staged:
        rewrite_staged(ingest, name, sql)
    total, dupes, sample_dupes = _sample_duplicates(ingest, case)
    assert total > case.limit and dupes == 1 and sample_dupes == 0, "the sample GX sees holds no duplicate"

    outcomes = ingest.gate()
    by_name = {check_name(o): o for o in outcomes}
    key = by_name[f"{table}__key_unique"]
    assert not key.passed and key.blocking and key.unexpected_count == 2, "the row and its copy"
    assert key.evaluated_rows == total and key.note == f"computed in SQL over all {total:,} rows"
    assert key.sample and key.sample[0]["copies"] == 2
    other = next(o for o in outcomes if o.table == table and o.name != "key_unique" and o.kind == "expectation")
    assert other.evaluated_rows == case.limit, "the rest of the suite ran on the sample"
    with pytest.raises(IngestBlocked):
        ingest.publish(checks_passed=0, checks_failed=sum(not o.passed and o.blocking for o in outcomes))
    result = ingest.block(outcomes=outcomes)
    assert result.status == "blocked" and f"{table}__key_unique" in result.failed_checks
    assert published_state(settings) == published.state


# --- the gates' own memory ---------------------------------------------------------------------------------
def test_the_gates_sql_is_held_to_a_memory_limit_and_spills_to_a_folder_it_removes(published, monkeypatch):
    """The key counts and integrity joins run over every staged row; DuckDB holds them to GATE_MEMORY_LIMIT,
    spilling to a scratch folder. Held to a small limit, every check comes out the same; held to one too small for
    DuckDB to work in, a statement runs again without it, so the gate still answers."""
    settings = published.settings()
    ingest = GatedIngest(settings, Warehouse(settings).store, QBA)
    ingest.stage()
    try:
        roomy = [(check_name(o), o.passed, o.unexpected_count, o.evaluated_rows) for o in ingest.gate()]
        monkeypatch.setattr(quality, "GATE_MEMORY_LIMIT", "16MB")
        with quality.staged_connection(ingest.store, ingest.staged_files()) as con:
            limit, folder = con.execute(
                "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
            ).fetchall()[0]
            assert limit in ("16.0 MiB", "15.2 MiB") and Path(folder).is_dir(), (limit, folder)
        assert not Path(folder).exists(), "the spill folder goes with the connection"
        assert all(passed for _, passed, _, _ in roomy), [r for r in roomy if not r[1]]
        assert any(name.startswith("integrity__answer") for name, *_ in roomy)
        for limit in ("64MB", "4MB"):  # 4 MB: the answers' NOT EXISTS cannot run in it, even spilling
            monkeypatch.setattr(quality, "GATE_MEMORY_LIMIT", limit)
            squeezed = [(check_name(o), o.passed, o.unexpected_count, o.evaluated_rows) for o in ingest.gate()]
            assert squeezed == roomy, limit
    finally:
        ingest.block(error="test over")
    assert published_state(settings) == published.state

"""CheXpert Plus: reports, demographics and CheXbert labels for the CheXpert v1.0 images.

Format notes (docs/datasets.md section 3; checked against the format-faithful sample, not the real
credentialed files):
- `df_chexpert_plus_240401.csv`: 27 columns, one row per image, the study's report and sections
  repeated on each of its images. Reports span lines inside quoted fields, so physical lines are
  not records. `path_to_image` is CheXpert's own `train|valid/patientNNNNN/studyN/viewN_<view>.jpg`
  without the release folder.
- `chexbert_labels/{findings,impression,report}_fixed.json`: JSON Lines, one record per
  `path_to_image` with the 14 CheXpert labels (1.0 / 0.0 / -1.0 / null), each the CheXbert reading
  of one text scope: section_findings, section_impression, or the whole report.

Linking: CheXpert Plus re-releases CheXpert's patients and images, so every id is built exactly as
the chexpert adapter builds it, from the same path pattern (chexpert.PATH_PATTERN): patient
`patientNNNNN`, study `patientNNNNN/studyN`, image `patientNNNNN/studyN/viewN_frontal`. This
partition holds what Plus adds under those ids (race, ethnicity, sex, age, report text, CheXbert
labels); images are left to the chexpert partition, whose `images` rows are the same files (Plus's
PNG and DICOM copies only change the extension), so queries join the two datasets on study_id or
image_id instead of reading duplicated image rows. Valid-split studies join only where CheXpert's
valid.csv was ingested.

Section mapping (report columns -> canonical sections):
  section_clinical_history, section_history -> indication (both, in that order, when both exist)
  section_comparison -> comparison; section_findings -> findings; section_impression -> impression
  section_narrative (exam name and date, or the whole free-text body), section_technique,
  section_procedure_comments, section_end_of_impression (the attestation), section_summary (the
  triage code, e.g. "1-NORMAL"), section_accession_number -> full_text only.
[U] per docs/datasets.md: in a minority of real rows the columns do not follow the headers (the
documented sample row has its IMPRESSION body in section_findings). We keep the columns as Stanford
published them rather than re-splitting the text, because CheXbert's findings/impression labels were
read from those same columns, so a label's `method` and the report section it describes agree;
full_text is always the `report` column, with every header kept.

Nothing read is dropped (SOURCE_FIELDS): `patient_report_date_order` is studies.follow_up_number and
orders visit_order (no dates: days_since_* are null); `recent_bmi` goes to studies.source_attributes;
`insurance_type`, `interpreter_needed`, `deceased` and `deid_patient_id` (the patient's first row's) to
patients.source_attributes. race / ethnicity are harmonized (values.race, values.ethnicity), the words
kept in race_source / ethnicity_source. path_to_dcm, frontal_lateral and ap_pa describe the images,
which the linked chexpert partition holds (same files, same views).

What happens to bad input (quarantine rows name the file, record, line and column, with the record
as written):
- the CSV: a wrong header, an empty or header-only file, a truncated gzip or a stray quote (records
  span lines, so nobody can tell where one ends) is a SourceError naming the file and line. A record
  of the wrong width or with bytes that are not UTF-8 is quarantined whole; so is one whose
  path_to_image is not a CheXpert path, or repeats an earlier record's (one row per image). An age
  that is unreadable or out of range is quarantined (column `age`); the study keeps a null age_years.
- a label file: an empty one, or a truncated gzip, is a SourceError. A line that is not a JSON
  object, is not UTF-8, has a key that is not path_to_image or one of the 14 labels (a renamed label
  would otherwise vanish), a value that is not a number or null, or a path already labelled on an
  earlier line is quarantined whole; a fractional value is quarantined alone (column `value`).
"""

from __future__ import annotations

import io
import json

import polars as pl

from .. import findings, text
from . import values
from .base import DatasetInfo, SourceError, SourceFolder, SourceResult
from .chexpert import PATH_PATTERN
from .csvread import Rejects, read_csv
from .longitudinal import with_visits
from .quarantine import QUARANTINE_COLUMNS, quarantine_rows

INFO = DatasetInfo(
    id="chexpert_plus",
    name="CheXpert Plus",
    version="2024-04-01 (df_chexpert_plus_240401.csv)",
    access="registration",
    default_data="samples",
    tables=("patients", "studies", "reports", "labels"),
    citation="Chambon P, Delbrouck J-B, Sounack T, et al. CheXpert Plus: Augmenting a Large Chest X-ray Dataset "
    "with Text Radiology Reports, Patient Demographics and Additional Image Formats. arXiv:2405.19538, "
    "2024.",
    homepage="https://aimi.stanford.edu/datasets/chexpert-plus",
    links_to="chexpert",
    licence='unknown',
    licence_url=None,
    licence_note='Distributed by Stanford AIMI after sign-in and a research use agreement; the licence text was not confirmed here.',
    bibtex="""@article{chambon2024chexpertplus,
  author = {Chambon, Pierre and Delbrouck, Jean-Benoit and Sounack, Thomas and Huang, Shih-Cheng and Chen, Zhihong and Varma, Maya and Truong, Steven QH and Chuong, Chu The and Langlotz, Curtis P.},
  title = {{CheXpert Plus}: Augmenting a Large Chest X-ray Dataset with Text Radiology Reports, Patient Demographics and Additional Image Formats},
  journal = {arXiv preprint arXiv:2405.19538},
  year = {2024}
}""",
)

CSV_FILE = "df_chexpert_plus_240401.csv"
HEADER = (
    "path_to_image,path_to_dcm,frontal_lateral,ap_pa,deid_patient_id,patient_report_date_order,report,"
    "section_narrative,section_clinical_history,section_history,section_comparison,section_technique,"
    "section_procedure_comments,section_findings,section_impression,section_end_of_impression,section_summary,"
    "section_accession_number,age,sex,race,ethnicity,interpreter_needed,insurance_type,recent_bmi,deceased,split"
)
# Every column as text: a bad age or BMI must not cost the image row its report (age_source keeps it).
COLUMNS = {name: "VARCHAR" for name in HEADER.split(",")}
SECTION_SOURCES = {
    "indication": ("section_clinical_history", "section_history"),
    "comparison": ("section_comparison",),
    "findings": ("section_findings",),
    "impression": ("section_impression",),
}
_LINKED = "linked:chexpert."  # the value is the linked chexpert partition's (its images rows)
SOURCE_FIELDS = {
    CSV_FILE: {
        "path_to_image": ("studies.study_id", "patients.patient_id", "labels.image_id"),
        "path_to_dcm": _LINKED + "images.path",
        "frontal_lateral": _LINKED + "images.view_source",
        "ap_pa": _LINKED + "images.view_source",
        "deid_patient_id": "patients.source_attributes",
        "patient_report_date_order": ("studies.follow_up_number", "studies.visit_order"),
        "report": "reports.full_text",
        **{
            c: "reports.full_text"
            for c in (
                "section_narrative",
                "section_technique",
                "section_procedure_comments",
                "section_end_of_impression",
                "section_summary",
                "section_accession_number",
            )
        },
        "section_clinical_history": "reports.indication",
        "section_history": "reports.indication",
        "section_comparison": "reports.comparison",
        "section_findings": "reports.findings",
        "section_impression": "reports.impression",
        "age": ("studies.age_years", "studies.age_source"),
        "sex": ("patients.sex", "patients.sex_source"),
        "race": ("patients.race", "patients.race_source"),
        "ethnicity": ("patients.ethnicity", "patients.ethnicity_source"),
        "interpreter_needed": "patients.source_attributes",
        "insurance_type": "patients.source_attributes",
        "recent_bmi": "studies.source_attributes",
        "deceased": "patients.source_attributes",
        "split": "studies.split",
    }
}
LABEL_FILES = {
    "findings": "chexbert_labels/findings_fixed.json",
    "impression": "chexbert_labels/impression_fixed.json",
    "report": "chexbert_labels/report_fixed.json",
}
LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
LABEL_SCHEMA = {"path_to_image": pl.String, **{label: pl.Float64 for label in LABELS}}
PATH_PARTS = ["path", "patient_id", "study", "view"]


class CheXpertPlus:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [src.require(CSV_FILE), *(n for n in map(src.first_existing, LABEL_FILES.values()) if n)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        """`related` (the chexpert source) is not read: the ids link by construction, joins are queries."""
        say = progress or (lambda _: None)
        csv_file = src.require(CSV_FILE)
        say(f"reading {csv_file}")
        rows, quarantine = _read_rows(src, csv_file)
        labels, files = [], [csv_file]
        for method, name in LABEL_FILES.items():
            found = src.first_existing(name)
            if found:
                say(f"reading {found}")
                frame, rejected = _read_labels(src, found, method)
                labels.append(frame)
                quarantine += rejected
                files.append(found)
        missing = [name for name in LABEL_FILES.values() if not src.first_existing(name)]
        tables = {
            "patients": _patients(rows),
            "studies": _studies(rows),
            "reports": _reports(rows, src.display(csv_file)),
            "labels": findings.with_findings(pl.concat(labels), "chexbert") if labels else pl.DataFrame(),
        }
        notes = [f"label file(s) not found, their labels are missing: {', '.join(missing)}"] if missing else []
        return SourceResult(tables, quarantine, files, notes)


def _with_ids(frame: pl.DataFrame, path_column: str) -> pl.DataFrame:
    """patient_id, study_id and image_id from a CheXpert path, exactly as the chexpert adapter makes them."""
    return (
        frame.with_columns(
            pl.col(path_column).str.extract_groups(PATH_PATTERN).struct.rename_fields(PATH_PARTS).alias("_parts")
        )
        .unnest("_parts")
        .with_columns(
            (pl.col("patient_id") + "/" + pl.col("study")).alias("study_id"),
            (pl.col("patient_id") + "/" + pl.col("study") + "/" + pl.col("view")).alias("image_id"),
        )
    )


def _read_rows(src: SourceFolder, name: str) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The image rows with their CheXpert ids; rows that cannot be used and bad ages are quarantined."""
    read = read_csv(
        src, name, columns=COLUMNS, header=HEADER, target_table="studies", one_line_records=False, require_rows=True
    )
    rejects = Rejects(read, src.display(name))
    rows = _with_ids(read.frame, "path_to_image")
    rejects.add(
        rows.filter(pl.col("path").is_null()),
        table="studies",
        column="path_to_image",
        reason="path_to_image is not <split>/patientN/studyN/viewN_<frontal|lateral>.jpg",
    )
    rows = rows.filter(pl.col("path").is_not_null())
    repeated = rows.with_columns(pl.col("_row").first().over("path_to_image").alias("_first")).filter(
        pl.col("_row") != pl.col("_first")
    )
    rejects.add(
        repeated.with_columns(
            pl.format(
                "path_to_image repeats data record {}: an image has one row, so this one is not used", "_first"
            ).alias("_reason")
        ),
        table="studies",
        column="path_to_image",
    )
    rows = rows.filter(pl.col("_row") == pl.col("_row").first().over("path_to_image"))
    problem = values.age_problem(pl.col("age"))
    rejects.add(
        rows.filter(problem.is_not_null()).with_columns(
            (problem + "; the study keeps a null age_years").alias("_reason")
        ),
        table="studies",
        column="age",
    )
    return rows, [read.rejects, *rejects.frames()]


def _patients(rows: pl.DataFrame) -> pl.DataFrame:
    """Demographics are written per image but constant per patient: the patient's first row speaks."""
    return (
        rows.group_by("patient_id", maintain_order=True)
        .agg(
            pl.col("sex").first().alias("sex_source"),
            pl.col("race").first().alias("race_source"),
            pl.col("ethnicity").first().alias("ethnicity_source"),
            values.source_attributes(SOURCE_FIELDS[CSV_FILE], "patients").first().alias("source_attributes"),
        )
        .with_columns(
            values.sex(pl.col("sex_source")).alias("sex"),
            values.race(pl.col("race_source")).alias("race"),
            values.ethnicity(pl.col("ethnicity_source")).alias("ethnicity"),
        )
    )


def _studies(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per study; age is the float text CheXpert Plus writes ('62.0').

    As in the chexpert adapter, an age of 0 means unknown (CheXpert's train.csv has three, and Plus
    takes its ages from the same records), so age_years is null there; age_source keeps what was written.
    """
    age = values.age_years(pl.col("age_source"))
    studies = (
        rows.group_by("study_id", maintain_order=True)
        .agg(
            pl.col("patient_id").first(),
            pl.col("split").first(),
            pl.col("age").first().alias("age_source"),
            pl.col("patient_report_date_order")
            .first()
            .str.strip_chars()
            .cast(pl.Float64, strict=False)
            .cast(pl.Int32, strict=False)
            .alias("follow_up_number"),
            values.source_attributes(SOURCE_FIELDS[CSV_FILE], "studies").first().alias("source_attributes"),
        )
        .with_columns(pl.when(age > 0).then(age).alias("age_years"))
    )
    return with_visits(studies, [pl.col("follow_up_number")])


def _reports(rows: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """One report per study from its first image row; sections per SECTION_SOURCES, full_text = report."""
    firsts = rows.group_by("study_id", maintain_order=True).first()
    stripped = firsts.with_columns(text.blank_to_null(c) for group in SECTION_SOURCES.values() for c in group)
    reports = stripped.select(
        "study_id",
        "patient_id",
        *(
            pl.concat_str([pl.col(c) for c in sources], separator="\n", ignore_nulls=True).alias(section)
            if len(sources) > 1
            else pl.col(sources[0]).alias(section)
            for section, sources in SECTION_SOURCES.items()
        ),
        pl.col("report").alias("full_text"),
        pl.lit("en").alias("language"),
        pl.lit(source_file).alias("source_file"),
    ).with_columns(pl.when(pl.col("indication") != "").then(pl.col("indication")).alias("indication"))
    return text.with_token_counts(reports)


# --- CheXbert labels ------------------------------------------------------------------------
def _read_labels(src: SourceFolder, name: str, method: str) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Long label rows (one per image and stated label) of one JSON Lines file, bad lines quarantined."""
    shown = src.display(name)
    data = src.read_bytes(name)
    if not data.strip():
        raise SourceError(shown, "is empty: a label file holds one JSON record per image")
    records, bad_lines = _label_records(data, shown)
    records = _with_ids(records, "path_to_image")
    long = (
        records.filter(pl.col("path").is_not_null())
        .unpivot(index=["study_id", "image_id", "_row"], on=list(LABELS), variable_name="raw_label", value_name="value")
        .filter(pl.col("value").is_not_null())
    )
    # 1/0/-1 become Int8; another whole number passes through for the checks to catch; anything else
    # (1.5, 1e9) cannot be an Int8 label value and is quarantined.
    whole = (pl.col("value") == pl.col("value").round()) & (pl.col("value").abs() <= 127)
    labels = long.filter(whole).select(
        "study_id",
        "image_id",
        "raw_label",
        pl.col("value").cast(pl.Int8),
        pl.lit("chexbert").alias("labeler"),
        pl.lit(method).alias("method"),
    )
    bad_path = records.filter(pl.col("path").is_null())
    fractional = long.filter(~whole).select("_row", pl.format("{}: {}", "raw_label", "value").alias("value"))
    return labels, [
        bad_lines,
        _line_quarantine(
            bad_path,
            data,
            shown,
            column="path_to_image",
            reason="path_to_image is not <split>/patientN/studyN/viewN_<frontal|lateral>.jpg",
        ),
        _line_quarantine(
            fractional,
            data,
            shown,
            column="value",
            reason="label value is not a whole number (1, 0, -1 or null expected)",
        ),
    ]


def _line_quarantine(bad: pl.DataFrame, data: bytes, shown: str, *, column: str, reason: str) -> pl.DataFrame:
    """Quarantine rows for bad JSON Lines records; `_row` is the line number, the line is the raw record."""
    rows = quarantine_rows(
        _with_raw_lines(bad, data),
        target_table="labels",
        source_file=shown,
        column=column,
        reason=reason,
        one_line_rows=False,
    )
    return rows.with_columns(pl.col("row_number").alias("line_number"))


def _with_raw_lines(bad: pl.DataFrame, data: bytes) -> pl.DataFrame:
    """`_raw`: each bad record's source line (found by its `_row` line number; only bad rows pay for it)."""
    if bad.is_empty():
        return bad.with_columns(_raw=pl.lit(None, pl.String))
    lines = data.decode("utf-8", "replace").split("\n")
    return bad.with_columns(pl.Series("_raw", [lines[n - 1] for n in bad["_row"]], dtype=pl.String))


def _label_records(data: bytes, shown: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The file's records with `_row` (their line number), and its unreadable lines as quarantine.

    polars parses the whole file at once; only when it refuses (a malformed line, bytes that are not
    UTF-8), finds a key or type the format does not have or a path twice, or blank lines would shift
    line numbers, is the file read line by line to find the bad lines.
    """
    if b"\n\n" not in data.rstrip(b"\n"):
        try:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        except pl.exceptions.PolarsError:
            frame = None
        if frame is not None and _fits_label_schema(frame):
            frame = frame.select(
                pl.col(k).cast(t) if k in frame.columns else pl.lit(None, t).alias(k) for k, t in LABEL_SCHEMA.items()
            )
            return (
                frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("_row")),
                pl.DataFrame(schema=QUARANTINE_COLUMNS),
            )
    return _label_records_by_line(data, shown)


def _fits_label_schema(frame: pl.DataFrame) -> bool:
    """Only known keys, numeric or null labels, a path string on every record, no path twice."""
    numeric = (pl.Float64, pl.Int64, pl.Null)
    return (
        set(frame.columns) <= set(LABEL_SCHEMA)
        and frame.schema.get("path_to_image") == pl.String
        and all(frame.schema[k] in numeric for k in LABELS if k in frame.columns)
        and frame["path_to_image"].null_count() == 0
        and frame["path_to_image"].is_unique().all()
    )


def _label_records_by_line(data: bytes, shown: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    good: list[dict] = []
    bad: list[dict] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.strip():
            continue
        record, problem = _parse_label_line(raw)
        if record is not None and record["path_to_image"] in seen:
            first = seen[record["path_to_image"]]
            problem = f"path_to_image is already labelled on line {first}; this line is not used"
        if record is None or problem:  # a line without a record always has a problem
            bad.append(
                {
                    "target_table": "labels",
                    "source_file": shown,
                    "row_number": number,
                    "line_number": number,
                    "column_name": "",
                    "value": None,
                    "reason": problem,
                    "raw_record": line,
                }
            )
        else:
            seen[record["path_to_image"]] = number
            good.append({**{k: record.get(k) for k in LABEL_SCHEMA}, "_row": number})
    frame = pl.DataFrame(good, schema={**LABEL_SCHEMA, "_row": pl.Int64})
    return frame, pl.DataFrame(bad, schema=QUARANTINE_COLUMNS)


def _parse_label_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(record, None) for a good line, else (None, why it is not one)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text: {e}"
    try:
        record = json.loads(text)
    except ValueError as e:
        return None, f"not a JSON object: {e}"
    problem = _label_record_problem(record)
    return (None, problem) if problem else (record, None)


def _label_record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "record is not a JSON object"
    if not isinstance(record.get("path_to_image"), str):
        return "record has no path_to_image string"
    unknown = sorted(set(record) - set(LABEL_SCHEMA))
    if unknown:
        return f"keys that are not path_to_image or a CheXbert label: {', '.join(unknown)}"
    wrong = [k for k in LABELS if not (record.get(k) is None or type(record[k]) in (int, float))]
    return f"label value is not a number or null: {', '.join(wrong)}" if wrong else None


ADAPTER = CheXpertPlus()

"""PadChest: PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv, one row per image.

Format notes, checked against the real file (160,861 rows; 109,931 studies; 67,625 patients):
- The header starts with ',' : column 0 is an unnamed pandas index (0-based row number). The
  README's `ExposureTime_DICOM` and `LabelCUIS` are really `ExposureTime` and `labelCUIS`.
- Some fields hold newlines (the CUI lists), so a data record is not a physical line.
- Missing values are written the pandas way, as the text `nan` (PatientSex_DICOM 4 rows,
  ViewPosition_DICOM 69k rows, Labels / Report of 103 / 99 rows); PatientBirth is empty in 6.
- `ImageID` is `<StudyID>_<suffix>.png` in every row. The image id is the file stem (as NIH's
  is); the path keeps the name as written: `<ImageDir>/<ImageID>`.
- `Projection` (PA 91,728, L 49,579, AP_horizontal 14,346, AP 4,559, COSTAL 630, EXCLUDE 11 and
  `UNK` 8, a value docs/datasets.md does not list) is the curated view and gives view_position;
  view_source is `Projection/ViewPosition_DICOM`, the raw DICOM tag kept as detail when present.
- Report, ReportID, MethodLabel and the label columns repeat on every image of a study, so
  reports and labels are study-level (labels have no image_id). Reports are Spanish, stemmed,
  sentences joined with ' . ', without section headers: only full_text is filled.
- `Labels` is a Python list literal (`['normal', ' pleural effusion']`): entries are stripped of
  spaces; `normal`, `exclude`, `suboptimal study`, `unchanged` are kept as labels. 103 rows have
  `nan` instead of a list: one quarantine row each (column Labels), the image still ingested.
  In 3,041 rows the list holds an empty entry '' and in 669 a label twice: no label row for ''
  and one row per distinct label. An empty Labels field (none in the real file) means no labels.
- `LabelsLocalizationsBySentence` is a list of sentences (each `[labels…, 'loc …'…]`) for the
  39,053 `MethodLabel = Physician` studies, but one flat list for the `RNN_model` studies, and
  13 rows have a `nan` sentence. A label's locations are the 'loc …' entries of the groups it
  is in, a group being one sentence, or in a flat list a run of labels and the 'loc …' entries
  right after them (in the Physician sentences locations always follow their labels).
  [U] per docs/datasets.md: the flat RNN lists are read the same way; nothing documents them.
- Age: no age column. age_years = year(StudyDate_DICOM) - PatientBirth (a year, written
  `1930.0`), so it is the age reached in the study's calendar year, possibly 1 year more than
  the exact age. age_source keeps PatientBirth as written.
- One StudyID (216840111366964012558082906712010004190248051) has images under two PatientIDs
  (two under one, one under the other; same date, birth year and sex). A study has one patient,
  so the study keeps the patient holding most of its images (the first seen on a tie) and the
  other rows go to quarantine with both ids in the reason: nothing is lost, and the partition
  still passes its key checks. 12 patients have two
  sexes and 356 two birth years across studies: a patient keeps their earliest study's values,
  each study's age uses its own row's birth year.
- No official split: every row is `unassigned` (said in the dataset's notes).
- Nothing is dropped: SOURCE_FIELDS names every column's destination. Canonical: Manufacturer_DICOM
  (studies.manufacturer, the study's first image's), Pediatric (`PED` / `No`, studies.pediatric),
  MethodProjection (images.projection_method). The other DICOM columns (Modality, Photometric…,
  SpatialResolution_DICOM, exposure, window, bits; the unnamed pandas index as `row_index`) go to
  images.source_attributes; ReportID, Localizations and the UMLS CUI lists (labelCUIS,
  LocalizationsCUIS) to studies.source_attributes. SpatialResolution_DICOM is DICOM (0018,1050), the
  detector's limiting resolution, not the pixel spacing, so it is not put in pixel_spacing_*. Values
  spelled `nan` or `None` (pandas' missing values) are left out of source_attributes.
- visit_order orders a patient's studies by StudyDate_DICOM (then StudyID); days_since_* from the dates.

What happens to a bad row (each quarantine row names the file, data record, physical line and
column, and carries the record as written in the file):
- a record the CSV reader cannot split (too many or too few fields, bytes that are not UTF-8):
  quarantined whole by csvread. A stray quote opening a field, after which nobody can tell where
  records end, is a SourceError naming the file and line; a quote inside an unquoted field is a
  character of the value. A wrong header, an empty or header-only file or a truncated gzip: SourceError.
- an empty ImageID, StudyID or PatientID (empty, blank or `nan`): quarantined with that column; the
  image is not loaded, since it could not be keyed or attached to its study and patient.
- a value that does not convert (StudyDate_DICOM, PatientBirth, Rows_DICOM, Columns_DICOM): quarantined
  with its column; the image is loaded with that value null.
- a birth year giving an age below 0 or over values.MAX_AGE_YEARS: quarantined (column PatientBirth,
  table studies); the study is loaded with a null age_years and age_source as written.
- Labels: empty means the image has no labels (not an error); `nan` (pandas' missing value) or text
  that is not a list of quoted strings is quarantined (table labels): the study gets no label rows
  from it and the image is loaded.
- a second image under the same ImageID is not caught here: the images key check blocks the ingest.
"""

from __future__ import annotations

import polars as pl

from .. import findings, text
from . import values
from .base import DatasetInfo, SourceFolder, SourceResult
from .csvread import Rejects, read_csv
from .longitudinal import days_of, with_visits

INFO = DatasetInfo(
    id="padchest",
    name="PadChest",
    version="01.02.19 (160K)",
    access="registration",
    default_data="public",
    tables=("patients", "studies", "images", "reports", "labels"),
    citation="Bustos A, Pertusa A, Salinas JM, de la Iglesia-Vayá M. PadChest: A large chest x-ray image dataset "
    "with multi-label annotated reports. Medical Image Analysis 2020;66:101797.",
    homepage="https://bimcv.cipf.es/bimcv-projects/padchest/",
    licence='unknown',
    licence_url=None,
    licence_note='Requested from BIMCV under its research use agreement; the licence text was not confirmed here.',
    bibtex="""@article{bustos2020padchest,
  author = {Bustos, Aurelia and Pertusa, Antonio and Salinas, Jose-Maria and de la Iglesia-Vay{\\'a}, Maria},
  title = {{PadChest}: A large chest x-ray image dataset with multi-label annotated reports},
  journal = {Medical Image Analysis},
  volume = {66},
  pages = {101797},
  year = {2020},
  doi = {10.1016/j.media.2020.101797}
}""",
)

FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
SOURCE_COLUMNS = (
    "",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
)
HEADER = ",".join(SOURCE_COLUMNS)
# Everything is read as text: values are converted here, so one bad value is quarantined
# without losing the image row it sits in.
COLUMNS = {(name or "row_index"): "VARCHAR" for name in SOURCE_COLUMNS}
NA = "nan"  # how the file (written by pandas) spells a missing value
MISSING_WORDS = (NA, "None")  # pandas' spellings of missing values, left out of source_attributes
_IMAGE_ATTRIBUTES = (
    "Modality_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
)
SOURCE_FIELDS = {
    FILE: {
        "": "images.source_attributes",  # pandas' unnamed index, kept under the key `row_index`
        "ImageID": ("images.image_id", "images.path"),
        "ImageDir": "images.path",
        "StudyDate_DICOM": ("studies.study_date", "studies.visit_order", "studies.days_since_first"),
        "StudyID": "studies.study_id",
        "PatientID": "patients.patient_id",
        "PatientBirth": ("patients.birth_year", "studies.age_years", "studies.age_source"),
        "PatientSex_DICOM": ("patients.sex", "patients.sex_source"),
        "ViewPosition_DICOM": "images.view_source",
        "Projection": ("images.view_position", "images.view_source"),
        "MethodProjection": "images.projection_method",
        "Pediatric": "studies.pediatric",
        "Manufacturer_DICOM": "studies.manufacturer",
        "Rows_DICOM": "images.height",
        "Columns_DICOM": "images.width",
        **{name: "images.source_attributes" for name in _IMAGE_ATTRIBUTES},
        "ReportID": "studies.source_attributes",
        "Report": "reports.full_text",
        "MethodLabel": "labels.method",
        "Labels": "labels.raw_label",
        "Localizations": "studies.source_attributes",
        "LabelsLocalizationsBySentence": "labels.locations",
        "labelCUIS": "studies.source_attributes",
        "LocalizationsCUIS": "studies.source_attributes",
    }
}
ATTRIBUTE_KEYS = {"": "row_index"}  # the key a source_attributes entry has when it is not the column's name
VIEW_WORDS = {"UNK": "UNKNOWN"}  # PadChest's own word, before the shared harmonizer
LIST_LITERAL = r"^\[\s*(?:'[^']*'\s*(?:,\s*'[^']*'\s*)*)?\]$"
QUOTED = r"'[^']*'"


class PadChest:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [src.require(FILE)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        name = src.require(FILE)
        where = src.display(name)
        read = read_csv(
            src, name, columns=COLUMNS, header=HEADER, target_table="images", one_line_records=False, require_rows=True
        )
        rejects = Rejects(read, where)
        rows = _with_ids(read.frame, rejects)
        rows = _one_patient_per_study(rows, rejects)
        rows = _parse_values(rows, rejects)
        rows = _check_labels(rows, rejects)
        quarantine = [read.rejects, *rejects.frames()]
        reports, notes = _reports(rows, name)
        notes.append("no official split in the source: every image is 'unassigned'")
        tables = {
            "patients": _patients(rows),
            "studies": _studies(rows),
            "images": _images(rows),
            "reports": reports,
            "labels": _labels(rows),
        }
        return SourceResult(tables, quarantine, [name], notes)


def _blank_id(column: str) -> pl.Expr:
    """An id that is missing: null, blank, or pandas' `nan`."""
    text = pl.col(column).str.strip_chars()
    return pl.col(column).is_null() | (text == "") | (text == NA)


def _with_ids(rows: pl.DataFrame, rejects: Rejects) -> pl.DataFrame:
    """Rows that have the three ids; the others are quarantined (an image needs all of them)."""
    for column in ("ImageID", "StudyID", "PatientID"):
        missing = _blank_id(column)
        rejects.add(
            rows.filter(missing),
            table="images",
            column=column,
            reason=f"{column} is empty; an image row needs ImageID, StudyID and PatientID, so it is not loaded",
        )
        rows = rows.filter(~missing)
    return rows


def _one_patient_per_study(rows: pl.DataFrame, rejects: Rejects) -> pl.DataFrame:
    """Rows filing a study under a second patient are quarantined; the majority patient keeps it."""
    counts = (
        rows.with_row_index("_order").group_by("StudyID", "PatientID").agg(pl.len().alias("_n"), pl.col("_order").min())
    )
    shared = counts.filter(pl.col("StudyID").is_duplicated())
    if shared.is_empty():
        return rows
    keep = (
        shared.sort("_n", "_order", descending=[True, False])
        .group_by("StudyID", maintain_order=True)
        .agg(pl.col("PatientID").first().alias("_kept"), pl.col("PatientID").alias("_all"))
    )
    marked = rows.join(keep, on="StudyID", how="left", maintain_order="left")
    moved = marked.filter(pl.col("_kept").is_not_null() & (pl.col("PatientID") != pl.col("_kept")))
    for (study,), group in moved.group_by("StudyID", maintain_order=True):
        rejects.add(
            group.drop("_kept", "_all"),
            table="images",
            column="PatientID",
            reason=f"StudyID {study} is filed under patients {', '.join(group['_all'][0])}; "
            f"the study is kept under {group['_kept'][0]}",
        )
    return marked.filter(pl.col("_kept").is_null() | (pl.col("PatientID") == pl.col("_kept"))).drop("_kept", "_all")


def _parse_values(rows: pl.DataFrame, rejects: Rejects) -> pl.DataFrame:
    """Typed copies of the text columns we use; a value that does not convert is quarantined.

    The image keeps its row with that value null. `_age` is the study year minus the birth year;
    out of range (values.age_problem) it is null and quarantined under PatientBirth.
    """
    parsed = {
        "_study_date": (
            pl.col("StudyDate_DICOM").str.strptime(pl.Date, "%Y%m%d", strict=False),
            "StudyDate_DICOM",
            "not a YYYYMMDD date",
        ),
        "_birth": (pl.col("PatientBirth").cast(pl.Float64, strict=False).fill_nan(None), "PatientBirth", "not a year"),
        "_height": (pl.col("Rows_DICOM").cast(pl.Int32, strict=False), "Rows_DICOM", "not an integer"),
        "_width": (pl.col("Columns_DICOM").cast(pl.Int32, strict=False), "Columns_DICOM", "not an integer"),
    }
    rows = rows.with_columns(expr.alias(name) for name, (expr, _, _) in parsed.items())
    for name, (_, column, why) in parsed.items():
        rejects.add(
            rows.filter(pl.col(name).is_null() & pl.col(column).is_not_null() & (pl.col(column) != NA)),
            table="images",
            column=column,
            reason=f"{column} is {why}",
        )
    age = pl.col("_study_date").dt.year() - pl.col("_birth")
    problem = values.age_problem(age)
    rejects.add(
        rows.filter(problem.is_not_null()).with_columns(
            pl.format(
                "age from PatientBirth and StudyDate_DICOM ({}) {}; the study's age_years is null",
                age,
                problem.str.strip_prefix("age "),
            ).alias("_reason")
        ),
        table="studies",
        column="PatientBirth",
    )
    return rows.with_columns(values.age_years(age).alias("_age"))


def _check_labels(rows: pl.DataFrame, rejects: Rejects) -> pl.DataFrame:
    """`_labels_ok`: Labels is a list of quoted strings, or empty (no labels); anything else is quarantined."""
    empty = pl.col("Labels").is_null() | (pl.col("Labels").str.strip_chars() == "")
    parsable = empty | pl.col("Labels").str.contains(LIST_LITERAL).fill_null(False)
    bad = rows.filter(~parsable).with_columns(
        pl.when(pl.col("Labels").str.strip_chars() == NA)
        .then(
            pl.lit(
                f"Labels is '{NA}' (pandas' missing value), not a list: the study gets no label rows from "
                "it; the image is loaded"
            )
        )
        .otherwise(
            pl.lit(
                "Labels is not a Python list of quoted strings (like ['normal', 'pneumonia']): the "
                "study gets no label rows from it; the image is loaded"
            )
        )
        .alias("_reason")
    )
    rejects.add(bad, table="labels", column="Labels")
    return rows.with_columns(parsable.alias("_labels_ok"))


def _na_to_null(column: str) -> pl.Expr:
    return pl.when(pl.col(column) == NA).then(None).otherwise(pl.col(column))


def _images(rows: pl.DataFrame) -> pl.DataFrame:
    view = values.view_position(pl.col("Projection").replace(VIEW_WORDS))
    dicom_view = _na_to_null("ViewPosition_DICOM")
    return rows.select(
        pl.col("ImageID").str.replace(r"\.png$", "").alias("image_id"),
        pl.col("StudyID").alias("study_id"),
        pl.col("PatientID").alias("patient_id"),
        pl.lit("unassigned").alias("split"),
        view.alias("view_position"),
        pl.concat_str([pl.col("Projection"), dicom_view], separator="/", ignore_nulls=True).alias("view_source"),
        values.is_frontal(view).alias("is_frontal"),
        pl.col("_width").alias("width"),
        pl.col("_height").alias("height"),
        (pl.col("ImageDir") + "/" + pl.col("ImageID")).alias("path"),
        _na_to_null("MethodProjection").alias("projection_method"),
        _attributes("images"),
    )


def _attributes(table: str) -> pl.Expr:
    columns = {
        ATTRIBUTE_KEYS.get(n, n): pl.col(COLUMNS_OF.get(n, n))
        for n in values.attribute_fields(SOURCE_FIELDS[FILE], table)
    }
    return values.attributes(columns, MISSING_WORDS).alias("source_attributes")


COLUMNS_OF = {"": "row_index"}  # source column -> the frame's column


def _studies(rows: pl.DataFrame) -> pl.DataFrame:
    return with_visits(
        rows.with_columns(_attributes("studies").alias("_attributes"))
        .group_by("StudyID", "PatientID", maintain_order=True)
        .agg(
            pl.col("_study_date").first(),
            pl.col("_age").first(),
            pl.col("PatientBirth").first(),
            _na_to_null("Manufacturer_DICOM").drop_nulls().first().alias("_manufacturer"),
            _na_to_null("Pediatric").drop_nulls().first().alias("_pediatric"),
            pl.col("_attributes").first(),
        )
        .select(
            pl.col("StudyID").alias("study_id"),
            pl.col("PatientID").alias("patient_id"),
            pl.lit("unassigned").alias("split"),
            pl.col("_study_date").alias("study_date"),
            pl.col("_age").cast(pl.Float32).alias("age_years"),
            pl.col("PatientBirth").alias("age_source"),
            pl.col("_manufacturer").alias("manufacturer"),
            pl.col("_pediatric")
            .replace_strict({"PED": True, "No": False}, default=None, return_dtype=pl.Boolean)
            .alias("pediatric"),
            pl.col("_attributes").alias("source_attributes"),
        ),
        [pl.col("study_date")],
        days_of(pl.col("study_date")),
    )


def _patients(rows: pl.DataFrame) -> pl.DataFrame:
    return (
        rows.sort("_study_date", "StudyID", nulls_last=True, maintain_order=True)
        .group_by("PatientID", maintain_order=True)
        .agg(pl.col("PatientSex_DICOM").first(), pl.col("_birth").first())
        .select(
            pl.col("PatientID").alias("patient_id"),
            values.sex(_na_to_null("PatientSex_DICOM")).alias("sex"),
            pl.col("PatientSex_DICOM").alias("sex_source"),
            pl.col("_birth").cast(pl.Int16).alias("birth_year"),
        )
    )


def _reports(rows: pl.DataFrame, name: str) -> tuple[pl.DataFrame, list[str]]:
    per_study = rows.group_by("StudyID", "PatientID", maintain_order=True).agg(pl.col("Report").first())
    missing = per_study.filter(pl.col("Report").is_null() | (pl.col("Report") == NA))
    reports = per_study.join(missing, on=["StudyID", "PatientID"], how="anti").select(
        pl.col("StudyID").alias("study_id"),
        pl.col("PatientID").alias("patient_id"),
        *(pl.lit(None, pl.String).alias(section) for section in text.SECTIONS),
        pl.col("Report").alias("full_text"),
        pl.lit("es").alias("language"),
        pl.lit(name).alias("source_file"),
    )
    notes = (
        [f"{missing.height} studies have no report (Report is '{NA}' or empty): no reports row"]
        if missing.height
        else []
    )
    return text.with_token_counts(reports), notes


def _labels(rows: pl.DataFrame) -> pl.DataFrame:
    """Study-level positive labels with the MethodLabel and the sentence localizations."""
    studies = (
        rows.filter("_labels_ok")
        .group_by("StudyID", maintain_order=True)
        .agg(pl.col("Labels", "LabelsLocalizationsBySentence", "MethodLabel").first())
    )
    labels = (
        studies.select("StudyID", "MethodLabel", pl.col("Labels").str.extract_all(QUOTED).alias("raw_label"))
        .explode("raw_label")
        .with_columns(_unquote("raw_label"))
        .filter(pl.col("raw_label").is_not_null() & (pl.col("raw_label") != ""))
        .unique(["StudyID", "raw_label"], keep="first", maintain_order=True)
    )
    labels = labels.join(_label_locations(studies), on=["StudyID", "raw_label"], how="left")
    labels = labels.select(
        pl.col("StudyID").alias("study_id"),
        "raw_label",
        pl.lit(1, pl.Int8).alias("value"),
        pl.lit("padchest").alias("labeler"),
        pl.col("MethodLabel").alias("method"),
        pl.when(pl.col("locations").list.len() > 0).then(pl.col("locations")).alias("locations"),
    )
    return findings.with_findings(labels, "padchest")


def _unquote(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars("'").str.strip_chars()


def _label_locations(studies: pl.DataFrame) -> pl.DataFrame:
    """(StudyID, raw_label, locations): the 'loc …' entries of every group the label is in."""
    tokens = (
        studies.select(
            "StudyID", pl.col("LabelsLocalizationsBySentence").str.extract_all(r"\[|" + QUOTED).alias("token")
        )
        .explode("token")
        .filter(pl.col("token").is_not_null())
        .with_columns(
            (pl.col("token") == "[").alias("_opens"),
            _unquote("token").alias("item"),
        )
        .with_columns((~pl.col("_opens") & pl.col("item").str.starts_with("loc ")).alias("_is_loc"))
    )
    label_after_loc = (
        ~pl.col("_opens") & ~pl.col("_is_loc") & pl.col("_is_loc").shift(1).over("StudyID").fill_null(False)
    )
    tokens = tokens.with_columns(
        (pl.col("_opens") | label_after_loc).cast(pl.Int32).cum_sum().over("StudyID").alias("_group")
    ).filter(~pl.col("_opens") & (pl.col("item") != ""))
    in_group = tokens.filter(~pl.col("_is_loc")).select("StudyID", "_group", pl.col("item").alias("raw_label"))
    locs = tokens.filter(pl.col("_is_loc")).select("StudyID", "_group", pl.col("item").alias("location"))
    return (
        in_group.join(locs, on=["StudyID", "_group"], how="left", maintain_order="left")
        .group_by("StudyID", "raw_label", maintain_order=True)
        .agg(pl.col("location").drop_nulls().unique(maintain_order=True).alias("locations"))
    )


ADAPTER = PadChest()

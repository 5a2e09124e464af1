"""MIMIC-CXR 2.1.0 with MIMIC-CXR-JPG 2.1.0, plus sex, age and race from MIMIC-IV hosp beside them.

The files are credentialed; these notes follow docs/datasets.md section 2 and were checked against
the format-faithful generator (warehouse/samples/mimic_cxr.py), not the real files.

- IDs are kept exactly as every CSV writes them: subject_id `10000032`, study_id `50414267`,
  dicom_id as the image id. The `p`/`s` prefixes exist only in folder and file names, so we do not
  add them. MIMIC-Ext-CXR-QBA writes `p10000032` / `s50414267` for the same people: join it with
  `'s' || study_id` (or have its adapter strip the prefix, which is what `links_to` assumes).
- mimic-cxr-2.0.0-metadata.csv.gz is the image list (one row per DICOM): Rows = height, Columns =
  width, StudyDate a shifted YYYYMMDD integer (years 2100-2200, stored as a DATE). StudyTime (a
  float whose leading zeros are lost, `80556.875` = 08:05:56.875) is studies.study_time. A study's
  date and time are its earliest image's. visit_order orders a patient's studies by date and time
  (then study id); days_since_first / days_since_previous are fractional days from date + time.
- PerformedProcedureStepDescription (the study's first image's) is studies.procedure;
  ProcedureCodeSequence_CodeMeaning goes to studies.source_attributes; ViewCodeSequence_CodeMeaning
  is images.view_code_meaning and PatientOrientationCodeSequence_CodeMeaning (Erect, Recumbent)
  images.patient_orientation. SOURCE_FIELDS names every metadata column's destination.
- ViewPosition words (PA, AP, LATERAL, LL, AP AXIAL, XTABLE LATERAL, AP LLD, SWIMMERS, …, blank)
  go through values.view_position; decubitus, oblique and axial views become OTHER, blank UNKNOWN.
- mimic-cxr-2.0.0-split.csv.gz is per image; `validate` becomes `valid`. An image it does not
  list is `unassigned`.
- mimic-cxr-2.0.0-chexpert/negbio.csv.gz: one row per study, 14 label columns whose order differs
  from the documentation (alphabetical, `No Finding` after `Lung Opacity`), so columns are taken
  by name from the header. 1.0 / 0.0 / -1.0, blank = unmentioned (no row). Study-level labels:
  image_id is null. Studies without a findings or impression section have no row in either file.
- mimic-cxr-2.1.0-test-set-labeled.csv (plain CSV, optional): study_id + 14 labels from one
  radiologist, `Airspace Opacity` for lung opacity (mapped in vocab/finding_map.csv).
- Reports: mimic-cxr-reports.zip, members `files/pXX/pNNNNNNNN/sNNNNNNNN.txt` (plus directory
  members, skipped), read member by member and never extracted; without the zip, an extracted
  `files/` tree of the same .txt files. Sectioning: see mimic_reports.py. The reports come
  through `SourceResult.batches` so the ~228k texts are never all in memory. A member that cannot
  be read or decoded as UTF-8 is a quarantine row naming the member. Before any report is read, the
  zip's directory is checked: a member path that leaves the archive (absolute or `..`) is a
  SourceError naming it (the archive is refused whole, as for QBA), and so is a zip with no report
  member at all, so an empty zip never publishes an empty reports table.
- Image paths follow the JPG release: `files/p10/p10000032/s50414267/<dicom_id>.jpg`.

Demographics come from MIMIC-IV when the root also holds `mimiciv/<version>/hosp/patients.csv.gz`
and `admissions.csv.gz` (`core/` instead of `hosp/` in MIMIC-IV 1.0; the highest version wins):
- sex from `gender`; birth_year = anchor_year - anchor_age; age at a study = anchor_age +
  (StudyDate year - anchor_year), on the same shifted calendar. anchor_age 91 stands for "over 89
  at anchor_year", so such ages (91 and up) are lower bounds, not ages; age_source keeps
  `anchor_age 91, anchor_year 2180` so they can be told apart.
- race is per admission (`race`, `ethnicity` before MIMIC-IV 2.0) and can disagree within a
  patient. One value per patient: the most frequent informative value (UNKNOWN, UNABLE TO
  OBTAIN and PATIENT DECLINED TO ANSWER only count when nothing else was recorded), ties broken
  by the most recent admission. MIMIC's words mix race and ethnicity (`HISPANIC/LATINO - PUERTO
  RICAN`): the word is kept in `race_source`, `race` is harmonized (values.hispanic_race) and
  `ethnicity` is `hispanic` when the word says so, else `unknown` (values.ethnicity_from_race).
- MIMIC-IV patients.dod is patients.death_date; anchor_year_group goes to patients.source_attributes
  (anchor_age / anchor_year are in studies.age_source). The latest admission's insurance, language and
  marital_status go to patients.source_attributes (keys `admissions.insurance`, ...); the other
  admissions columns (times, locations, hospital_expire_flag) are per admission and stay in the file.
- CXR patients absent from MIMIC-IV keep sex U and no age; the coverage is a note of the result.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from typing import NamedTuple

import polars as pl

from .. import findings, text
from . import values
from .base import ZIP_MEMBER_ERRORS, DatasetInfo, SourceError, SourceFolder, SourceResult
from .csvread import first_line, read_csv
from .longitudinal import days_of, with_visits
from .mimic_reports import sections
from .qba_stream import leaves_root
from .quarantine import QUARANTINE_COLUMNS, quarantine_rows

INFO = DatasetInfo(
    id="mimic_cxr",
    name="MIMIC-CXR / MIMIC-CXR-JPG",
    version="2.1.0 (metadata, split and labels 2.0.0; test-set labels 2.1.0)",
    access="credentialed",
    default_data="samples",
    tables=("patients", "studies", "images", "reports", "labels"),
    citation="Johnson AEW, Pollard TJ, Berkowitz SJ, et al. MIMIC-CXR, a de-identified publicly available "
    "database of chest radiographs with free-text reports. Sci Data 2019;6:317. Johnson AEW, Pollard TJ, "
    "Greenbaum NR, et al. MIMIC-CXR-JPG, a large publicly available database of labeled chest "
    "radiographs. arXiv:1901.07042.",
    homepage="https://physionet.org/content/mimic-cxr-jpg/2.1.0/",
    licence='PhysioNet Credentialed Health Data License 1.5.0',
    licence_url='https://physionet.org/content/mimic-cxr-jpg/view-license/2.1.0/',
    licence_note='Credentialed access on PhysioNet: credentialed users who sign the PhysioNet Credentialed Health Data Use Agreement 1.5.0. Also cite the PhysioNet standard citation (Goldberger et al., Circulation 2000).',
    bibtex="""@article{johnson2019mimiccxr,
  author = {Johnson, Alistair E. W. and Pollard, Tom J. and Berkowitz, Seth J. and Greenbaum, Nathaniel R. and Lungren, Matthew P. and Deng, Chih-ying and Mark, Roger G. and Horng, Steven},
  title = {{MIMIC-CXR}, a de-identified publicly available database of chest radiographs with free-text reports},
  journal = {Scientific Data},
  volume = {6},
  pages = {317},
  year = {2019},
  doi = {10.1038/s41597-019-0322-0}
}
@misc{johnson2024mimiccxrjpg,
  author = {Johnson, Alistair and Lungren, Matthew and Peng, Yifan and Lu, Zhiyong and Mark, Roger and Berkowitz, Seth and Horng, Steven},
  title = {{MIMIC-CXR-JPG} - chest radiographs with structured labels (version 2.1.0)},
  publisher = {PhysioNet},
  year = {2024},
  doi = {10.13026/jsn5-t979}
}""",
)

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
LABEL_FILES = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
TEST_SET_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"
REPORTS_ZIP = "mimic-cxr-reports.zip"
REPORTS_TREE = "files/p*/p*/s*.txt"

METADATA_COLUMNS = {
    "dicom_id": "VARCHAR",
    "subject_id": "VARCHAR",
    "study_id": "VARCHAR",
    "PerformedProcedureStepDescription": "VARCHAR",
    "ViewPosition": "VARCHAR",
    "Rows": "INTEGER",
    "Columns": "INTEGER",
    "StudyDate": "VARCHAR",
    "StudyTime": "VARCHAR",
    "ProcedureCodeSequence_CodeMeaning": "VARCHAR",
    "ViewCodeSequence_CodeMeaning": "VARCHAR",
    "PatientOrientationCodeSequence_CodeMeaning": "VARCHAR",
}
METADATA_HEADER = ",".join(METADATA_COLUMNS)
SOURCE_FIELDS = {
    "mimic-cxr-2.0.0-metadata.csv": {
        "dicom_id": ("images.image_id", "images.path"),
        "subject_id": "patients.patient_id",
        "study_id": "studies.study_id",
        "PerformedProcedureStepDescription": "studies.procedure",
        "ViewPosition": ("images.view_position", "images.view_source"),
        "Rows": "images.height",
        "Columns": "images.width",
        "StudyDate": ("studies.study_date", "studies.visit_order"),
        "StudyTime": ("studies.study_time", "studies.days_since_first"),
        "ProcedureCodeSequence_CodeMeaning": "studies.source_attributes",
        "ViewCodeSequence_CodeMeaning": "images.view_code_meaning",
        "PatientOrientationCodeSequence_CodeMeaning": "images.patient_orientation",
    },
    "patients.csv": {  # mimiciv/<version>/hosp/patients.csv.gz
        "subject_id": "patients.patient_id",
        "gender": ("patients.sex", "patients.sex_source"),
        "anchor_age": ("studies.age_years", "studies.age_source", "patients.birth_year"),
        "anchor_year": ("studies.age_years", "studies.age_source", "patients.birth_year"),
        "anchor_year_group": "patients.source_attributes",
        "dod": "patients.death_date",
    },
}
SPLIT_COLUMNS = {"dicom_id": "VARCHAR", "study_id": "VARCHAR", "subject_id": "VARCHAR", "split": "VARCHAR"}
SPLIT_HEADER = ",".join(SPLIT_COLUMNS)
SPLIT_WORDS = {"train": "train", "validate": "valid", "test": "test"}
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
TEST_SET_LABELS = tuple("Airspace Opacity" if label == "Lung Opacity" else label for label in CHEXPERT_LABELS)

REPORT_MEMBER = re.compile(r"^files/p\d\d/p(\d+)/s(\d+)\.txt$")
REPORT_BATCH_ROWS = 20_000
RAW_TEXT_LIMIT = 64 << 10  # quarantine keeps the raw text of an unreadable report up to this size

MIMIC_IV_PATIENTS_HEADER = "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
MIMIC_IV_PATIENTS_COLUMNS = {
    "subject_id": "VARCHAR",
    "gender": "VARCHAR",
    "anchor_age": "INTEGER",
    "anchor_year": "INTEGER",
    "anchor_year_group": "VARCHAR",
    "dod": "VARCHAR",
}
_ADMISSIONS_TAIL = "insurance,language,marital_status,{race},edregtime,edouttime,hospital_expire_flag"
MIMIC_IV_ADMISSIONS_HEADERS = (
    # 2.2 and later [V: docs/datasets.md, mimic-code create.sql]
    "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,"
    "discharge_location," + _ADMISSIONS_TAIL.format(race="race"),
    # [U] per docs/datasets.md: 2.0/2.1 are believed to have `race` but not yet admit_provider_id
    "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,discharge_location,"
    + _ADMISSIONS_TAIL.format(race="race"),
    # 1.0 (core/admissions.csv.gz), where the column was `ethnicity`
    "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,discharge_location,"
    + _ADMISSIONS_TAIL.format(race="ethnicity"),
)
ADMISSION_ATTRIBUTES = ("admissions.insurance", "admissions.language", "admissions.marital_status")
UNINFORMATIVE_RACE = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")


class MimicCxr:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        names = [src.require(METADATA_FILE)]
        names += [n for n in map(src.first_existing, (SPLIT_FILE, *LABEL_FILES.values(), TEST_SET_FILE)) if n]
        names += _report_files(src)
        mimic_iv = _mimic_iv_files(src)
        return names + [n for n in (mimic_iv.patients, mimic_iv.admissions) if n]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        say = progress or (lambda message: None)
        quarantine: list[pl.DataFrame] = []
        notes: list[str] = []
        metadata_file = src.require(METADATA_FILE)
        say("reading image metadata")
        images = _images(src, metadata_file, quarantine)
        split_file = src.first_existing(SPLIT_FILE)
        images = _with_split(src, split_file, images, quarantine, notes)
        files = [metadata_file] + ([split_file] if split_file else [])

        say("reading labels")
        labels, label_files = _labels(src, quarantine, notes)
        demographics = _demographics(src, images, quarantine, notes)
        tables = {
            "patients": demographics.patients,
            "studies": _studies(images, demographics.anchors),
            "images": _image_table(images),
            "labels": labels,
        }
        report_files = _report_files(src)
        batches = None
        if report_files:
            if report_files == [REPORTS_ZIP]:
                _check_zip(src, REPORTS_ZIP)
            batches = _report_batches(src, report_files, quarantine, notes, say)
        else:
            tables["reports"] = pl.DataFrame()
            notes.append(
                f"no {REPORTS_ZIP} and no extracted files/ tree of reports: the reports table is empty "
                "(MIMIC-CXR-JPG alone does not ship them)"
            )
        return SourceResult(tables, quarantine, files + label_files + report_files + demographics.files, notes, batches)


# --- images, studies, splits -------------------------------------------------------------------


def _images(src: SourceFolder, name: str, quarantine: list[pl.DataFrame]) -> pl.DataFrame:
    """Metadata rows with ids; rows without an id, and dates that are not dates, are quarantined."""
    read = read_csv(src, name, columns=METADATA_COLUMNS, header=METADATA_HEADER, target_table="images")
    quarantine.append(read.rejects)
    rows = read.frame.with_columns(_raw=pl.lit(None, pl.String))
    for column in ("dicom_id", "study_id", "subject_id"):
        missing = rows.filter(pl.col(column).is_null())
        quarantine.append(
            quarantine_rows(
                missing,
                target_table="images",
                source_file=src.display(name),
                column=column,
                reason=f"{column} is blank",
            )
        )
        rows = rows.filter(pl.col(column).is_not_null())
    rows = rows.with_columns(
        pl.col("StudyDate").str.strptime(pl.Date, "%Y%m%d", strict=False).alias("study_date"),
        _study_time(pl.col("StudyTime")).alias("study_time"),
    )
    bad_date = rows.filter(pl.col("StudyDate").is_not_null() & pl.col("study_date").is_null())
    quarantine.append(
        quarantine_rows(
            bad_date,
            target_table="studies",
            source_file=src.display(name),
            column="StudyDate",
            reason="StudyDate is not a YYYYMMDD date; the image is kept and its date left null",
        )
    )
    return rows


def _study_time(raw: pl.Expr) -> pl.Expr:
    """StudyTime as a time of day: `80556.875` is 08:05:56.875 (a float, leading zeros lost)."""
    t = raw.cast(pl.Float64, strict=False)
    whole = t.floor().cast(pl.Int64)
    ok = (t >= 0) & (t < 240000) & ((whole // 100) % 100 < 60) & (whole % 100 < 60)
    return pl.when(ok).then(
        pl.time(
            (whole // 10000).cast(pl.Int32),
            ((whole // 100) % 100).cast(pl.Int32),
            (whole % 100).cast(pl.Int32),
            ((t - t.floor()) * 1_000_000).round().clip(0, 999_999).cast(pl.Int32),
        )
    )


def _with_split(
    src: SourceFolder, name: str | None, images: pl.DataFrame, quarantine: list[pl.DataFrame], notes: list[str]
) -> pl.DataFrame:
    """Each image's official split (per dicom_id), `unassigned` where the split file is silent."""
    if name is None:
        notes.append(f"no {SPLIT_FILE}[.gz]: every image's split is 'unassigned'")
        return images.with_columns(split=pl.lit("unassigned"))
    read = read_csv(src, name, columns=SPLIT_COLUMNS, header=SPLIT_HEADER, target_table="images")
    quarantine.append(read.rejects)
    split = read.frame.select("dicom_id", pl.col("split").alias("split_source")).unique("dicom_id", keep="first")
    joined = images.join(split, on="dicom_id", how="left")
    unlisted = joined.filter(pl.col("split_source").is_null()).height
    if unlisted:
        notes.append(f"{unlisted} images are not in {name}: split 'unassigned'")
    return joined.with_columns(
        pl.col("split_source")
        .replace_strict(SPLIT_WORDS, default=pl.col("split_source"))
        .fill_null("unassigned")
        .alias("split")
    )


def _image_table(images: pl.DataFrame) -> pl.DataFrame:
    view = values.view_position(pl.col("ViewPosition"))
    return images.select(
        pl.col("dicom_id").alias("image_id"),
        "study_id",
        pl.col("subject_id").alias("patient_id"),
        "split",
        view.alias("view_position"),
        pl.col("ViewPosition").alias("view_source"),
        values.is_frontal(view).alias("is_frontal"),
        pl.col("Columns").alias("width"),
        pl.col("Rows").alias("height"),
        pl.format(
            "files/p{}/p{}/s{}/{}.jpg", pl.col("subject_id").str.slice(0, 2), "subject_id", "study_id", "dicom_id"
        ).alias("path"),
        pl.col("PatientOrientationCodeSequence_CodeMeaning").alias("patient_orientation"),
        pl.col("ViewCodeSequence_CodeMeaning").alias("view_code_meaning"),
    )


def _studies(images: pl.DataFrame, anchors: pl.DataFrame) -> pl.DataFrame:
    """One row per study; age from the MIMIC-IV anchor (null for patients MIMIC-IV does not have)."""
    studies = (
        images.sort("study_date", "study_time", nulls_last=True, maintain_order=True)
        .group_by("study_id", maintain_order=True)
        .agg(
            pl.col("subject_id").first().alias("patient_id"),
            pl.col("split").first(),
            pl.col("study_date").first(),
            pl.col("study_time").first(),
            pl.col("PerformedProcedureStepDescription").drop_nulls().first().alias("procedure"),
            values.source_attributes(SOURCE_FIELDS["mimic-cxr-2.0.0-metadata.csv"], "studies")
            .drop_nulls()
            .first()
            .alias("source_attributes"),
        )
    )
    studies = studies.join(anchors, on="patient_id", how="left")
    studies = with_visits(
        studies, [pl.col("study_date"), pl.col("study_time")], days_of(pl.col("study_date"), pl.col("study_time"))
    )
    return studies.select(
        "study_id",
        "patient_id",
        "split",
        "study_date",
        pl.col("study_time").dt.strftime("%H:%M:%S%.f").alias("study_time"),
        "procedure",
        "source_attributes",
        "visit_order",
        "days_since_first",
        "days_since_previous",
        (pl.col("anchor_age") + pl.col("study_date").dt.year() - pl.col("anchor_year"))
        .cast(pl.Float32)
        .alias("age_years"),
        pl.when(pl.col("anchor_age").is_not_null())
        .then(pl.format("anchor_age {}, anchor_year {}", "anchor_age", "anchor_year"))
        .alias("age_source"),
    )


# --- labels --------------------------------------------------------------------------------------


def _labels(src: SourceFolder, quarantine: list[pl.DataFrame], notes: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """CheXpert, NegBio and (when present) the radiologist test-set labels, one row per stated label."""
    frames, files = [], []
    for labeler, name in LABEL_FILES.items():
        found = src.first_existing(name)
        if found is None:
            notes.append(f"no {name}[.gz]: no {labeler} labels")
            continue
        frames.append(_label_file(src, found, labeler, ("subject_id", "study_id"), CHEXPERT_LABELS, quarantine))
        files.append(found)
    found = src.first_existing(TEST_SET_FILE)
    if found:
        frames.append(_label_file(src, found, "radiologist", ("study_id",), TEST_SET_LABELS, quarantine))
        files.append(found)
    if not frames:
        return pl.DataFrame(), files
    return pl.concat(frames), files


def _label_file(
    src: SourceFolder,
    name: str,
    labeler: str,
    ids: tuple[str, ...],
    labels: tuple[str, ...],
    quarantine: list[pl.DataFrame],
) -> pl.DataFrame:
    header, columns = _columns_by_name(src, name, ids, labels)
    read = read_csv(src, name, columns=columns, header=header, target_table="labels")
    quarantine.append(read.rejects)
    rows = read.frame.with_columns(_raw=pl.lit(None, pl.String))
    quarantine.append(
        quarantine_rows(
            rows.filter(pl.col("study_id").is_null()),
            target_table="labels",
            source_file=src.display(name),
            column="study_id",
            reason="study_id is blank",
        )
    )
    long = (
        rows.filter(pl.col("study_id").is_not_null())
        .select("_row", "study_id", *labels)
        .unpivot(index=["_row", "study_id"], variable_name="raw_label", value_name="value")
        .filter(pl.col("value").is_not_null())
    )
    # 2.0 breaks the contract but is stored (checks flag it); 0.5 or 1e9 cannot be stored as TINYINT at all.
    storable = (pl.col("value") == pl.col("value").round()) & pl.col("value").is_between(-128, 127)
    quarantine.append(_label_value_rejects(long.filter(~storable), src.display(name)))
    long = long.filter(storable).select(
        "study_id",
        pl.lit(None, pl.String).alias("image_id"),
        "raw_label",
        pl.col("value").cast(pl.Int8),
        pl.lit(labeler).alias("labeler"),
    )
    return findings.with_findings(long, labeler)


def _columns_by_name(
    src: SourceFolder, name: str, ids: tuple[str, ...], labels: tuple[str, ...]
) -> tuple[str, dict[str, str]]:
    """The header as found and its columns typed by name, once it holds exactly the expected names."""
    header = first_line(src, name)
    found = next(csv.reader(io.StringIO(header)))
    expected = (*ids, *labels)
    if sorted(found) != sorted(expected):
        raise SourceError(
            src.display(name),
            "unexpected header (columns are matched by name, in any order).\n"
            f"  found:    {header}\n  expected: {','.join(expected)}",
            line=1,
        )
    return header, {column: "VARCHAR" if column in ids else "FLOAT" for column in found}


def _label_value_rejects(bad: pl.DataFrame, file: str) -> pl.DataFrame:
    """Label values that are numbers but could only be stored by rounding or overflowing."""
    return bad.select(
        pl.lit("labels").alias("target_table"),
        pl.lit(file).alias("source_file"),
        pl.col("_row").alias("row_number"),
        (pl.col("_row") + 1).alias("line_number"),
        pl.col("raw_label").alias("column_name"),
        pl.col("value").cast(pl.String).alias("value"),
        pl.lit("label value is not a small whole number (expected 1.0, 0.0, -1.0 or blank)").alias("reason"),
        pl.lit(None, pl.String).alias("raw_record"),
    ).cast(pl.Schema(QUARANTINE_COLUMNS))


# --- MIMIC-IV demographics ---------------------------------------------------------------------


class _MimicIvFiles(NamedTuple):
    version: str | None = None
    patients: str | None = None
    admissions: str | None = None


class _Demographics(NamedTuple):
    patients: pl.DataFrame
    anchors: pl.DataFrame  # patient_id, anchor_age, anchor_year of the linked patients
    files: list[str]


def _mimic_iv_files(src: SourceFolder) -> _MimicIvFiles:
    """The newest `mimiciv/<version>/{hosp,core}/` folder holding patients.csv[.gz]."""
    found: dict[str, str] = {}
    for module in ("hosp", "core"):
        for pattern in ("patients.csv", "patients.csv.gz"):
            for name in src.glob(f"mimiciv/*/{module}/{pattern}"):
                found.setdefault(name.split("/")[1], name)
    if not found:
        return _MimicIvFiles()
    version = max(found, key=_version_key)
    folder = found[version].rsplit("/", 1)[0]
    return _MimicIvFiles(version, found[version], src.first_existing(f"{folder}/admissions.csv"))


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.\-_]", version))


def _demographics(
    src: SourceFolder, images: pl.DataFrame, quarantine: list[pl.DataFrame], notes: list[str]
) -> _Demographics:
    """Patients (sex, race, birth year) and per-patient age anchors for every CXR subject."""
    cxr = images.select(pl.col("subject_id").alias("patient_id")).unique(maintain_order=True)
    no_anchor = pl.DataFrame(schema={"patient_id": pl.String, "anchor_age": pl.Int32, "anchor_year": pl.Int32})
    mimic_iv = _mimic_iv_files(src)
    if mimic_iv.patients is None:
        notes.append(
            "no mimiciv/<version>/hosp/patients.csv.gz beside MIMIC-CXR: sex is U, age and race are null "
            "for every patient (MIMIC-CXR itself carries no demographics)"
        )
        return _Demographics(cxr.with_columns(sex=pl.lit("U")), no_anchor, [])
    read = read_csv(
        src,
        mimic_iv.patients,
        columns=MIMIC_IV_PATIENTS_COLUMNS,
        header=MIMIC_IV_PATIENTS_HEADER,
        target_table="patients",
    )
    quarantine.append(read.rejects)
    linked = read.frame.rename({"subject_id": "patient_id"}).unique("patient_id", keep="first")
    patients = cxr.join(linked, on="patient_id", how="left").with_columns(
        pl.col("gender").alias("sex_source"),
        pl.when(pl.col("gender").is_null()).then(pl.lit("U")).otherwise(values.sex(pl.col("gender"))).alias("sex"),
        (pl.col("anchor_year") - pl.col("anchor_age")).cast(pl.Int16).alias("birth_year"),
    )
    n_linked = patients["anchor_year"].is_not_null().sum()
    notes.append(
        f"MIMIC-IV {mimic_iv.version} demographics for {100 * n_linked / max(cxr.height, 1):.1f}% of CXR "
        f"patients ({n_linked} of {cxr.height}); the others keep sex U and no age"
    )
    files = [mimic_iv.patients]
    if mimic_iv.admissions:
        race = _race(src, mimic_iv.admissions, cxr, quarantine, notes)
        files.append(mimic_iv.admissions)
    else:
        race = pl.DataFrame(schema={"patient_id": pl.String, "race": pl.String})
        notes.append(f"no admissions.csv.gz beside {mimic_iv.patients}: race is null")
    patients = patients.join(race, on="patient_id", how="left")
    for column in ADMISSION_ATTRIBUTES:
        if column not in patients.columns:
            patients = patients.with_columns(pl.lit(None, pl.String).alias(column))
    patients = patients.with_columns(
        pl.coalesce(
            pl.col("dod").str.slice(0, 10).str.strptime(pl.Date, "%Y-%m-%d", strict=False),
            pl.col("dod").str.slice(0, 10).str.strptime(pl.Date, "%m/%d/%Y", strict=False),
        ).alias("death_date"),
        values.attributes(
            {"anchor_year_group": pl.col("anchor_year_group"), **{c: pl.col(c) for c in ADMISSION_ATTRIBUTES}}
        ).alias("source_attributes"),
    )
    anchors = patients.select("patient_id", "anchor_age", "anchor_year").filter(pl.col("anchor_age").is_not_null())
    if mimic_iv.admissions:
        # one field mixes race and Hispanic origin (docs/datasets.md, "Race and ethnicity")
        patients = patients.with_columns(
            pl.col("race").alias("race_source"),
            values.hispanic_race(pl.col("race")).alias("race"),
            values.ethnicity_from_race(pl.col("race")).alias("ethnicity"),
        )
    else:
        patients = patients.with_columns(
            pl.lit(None, pl.String).alias("race_source"),
            pl.lit("not_recorded").alias("race"),
            pl.lit("not_recorded").alias("ethnicity"),
        )
    return _Demographics(
        patients.select(
            "patient_id",
            "sex",
            "sex_source",
            "race",
            "race_source",
            "ethnicity",
            "birth_year",
            "death_date",
            "source_attributes",
        ),
        anchors,
        files,
    )


def _race(
    src: SourceFolder, name: str, cxr: pl.DataFrame, quarantine: list[pl.DataFrame], notes: list[str]
) -> pl.DataFrame:
    """One race per CXR patient from their admissions (rule in the module docstring)."""
    header = first_line(src, name)
    if header not in MIMIC_IV_ADMISSIONS_HEADERS:
        expected = "\n  ".join(MIMIC_IV_ADMISSIONS_HEADERS)
        raise SourceError(
            src.display(name), f"unexpected header.\n  found:    {header}\n  expected: {expected}", line=1
        )
    columns = dict.fromkeys(header.split(","), "VARCHAR")
    read = read_csv(src, name, columns=columns, header=header, target_table="patients")
    quarantine.append(read.rejects)
    race_column = "race" if "race" in columns else "ethnicity"
    admissions = read.frame.select(
        pl.col("subject_id").alias("patient_id"),
        "admittime",
        pl.col(race_column).str.strip_chars().alias("race"),
        *(pl.col(c.removeprefix("admissions.")).alias(c) for c in ADMISSION_ATTRIBUTES),
    )
    latest = (
        admissions.join(cxr, on="patient_id", how="semi")
        .sort("admittime", nulls_last=True)
        .group_by("patient_id")
        .agg(pl.col(c).drop_nulls().last() for c in ADMISSION_ATTRIBUTES)
    )
    admissions = admissions.join(cxr, on="patient_id", how="semi").filter(
        pl.col("race").is_not_null() & (pl.col("race") != "")
    )
    ranked = (
        admissions.group_by("patient_id", "race")
        .agg(pl.len().alias("n"), pl.col("admittime").max().alias("last"))
        .with_columns(informative=~pl.col("race").str.to_uppercase().is_in(UNINFORMATIVE_RACE))
        .sort(["patient_id", "informative", "n", "last"], descending=[False, True, True, True], nulls_last=True)
        .group_by("patient_id", maintain_order=True)
        .agg(pl.col("race").first(), pl.len().alias("n_values"))
    )
    conflicting = ranked.filter(pl.col("n_values") > 1).height
    notes.append(
        f"race: {conflicting} of {ranked.height} CXR patients with admissions have differing "
        f"`{race_column}` values across admissions; one is kept per patient (most frequent informative "
        f"value, ties to the latest admission); the per-admission values stay only in {name}"
    )
    return cxr.join(ranked.select("patient_id", "race"), on="patient_id", how="left").join(
        latest, on="patient_id", how="left"
    )


# --- reports -------------------------------------------------------------------------------------


def _report_files(src: SourceFolder) -> list[str]:
    """The reports zip, or else every .txt of an extracted files/ tree (empty list: no reports here)."""
    if src.exists(REPORTS_ZIP):
        return [REPORTS_ZIP]
    return src.glob(REPORTS_TREE)


def _check_zip(src: SourceFolder, name: str) -> None:
    """Fail before anything is staged: no zip, a member path that leaves the archive, or no report in it.

    Reads only the central directory.
    """
    where = src.display(name)
    with src.open(name) as raw:
        if not zipfile.is_zipfile(raw):
            raise SourceError(where, "is not a readable zip archive (no end-of-archive record)")
        try:
            names = [info.filename for info in zipfile.ZipFile(raw).infolist()]
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise SourceError(where, f"is not a readable zip archive ({e})") from None
    for member in names:
        if leaves_root(member):
            raise SourceError(
                where,
                f"member {member!r} has a path that leaves the dataset "
                "(absolute or '..'); the archive is refused and nothing is ingested",
            )
    if not any(REPORT_MEMBER.match(member) for member in names):
        raise SourceError(
            where, f"holds no report files (files/pXX/pNNNNNNNN/sNNNNNNNN.txt) among its {len(names)} members"
        )


def _report_batches(
    src: SourceFolder, report_files: list[str], quarantine: list[pl.DataFrame], notes: list[str], say
) -> Iterator[tuple[str, pl.DataFrame]]:
    """Sectioned reports in chunks of REPORT_BATCH_ROWS, read one member (or file) at a time."""
    members = _zip_members(src, report_files[0]) if report_files == [REPORTS_ZIP] else _tree_files(src, report_files)
    rows: list[dict] = []
    bad: list[dict] = []
    total = 0
    for location, name, data in members:
        row = _report_row(location, name, data)
        if "reason" in row:
            bad.append(row | {"source_file": src.display(location)})
            continue
        rows.append(row)
        if len(rows) == REPORT_BATCH_ROWS:
            total += len(rows)
            say(f"reports: {total} read")
            yield "reports", _reports_frame(rows)
            rows = []
    if rows:
        total += len(rows)
        yield "reports", _reports_frame(rows)
    if bad:
        quarantine.append(pl.DataFrame(bad, schema=QUARANTINE_COLUMNS))
    notes.append(
        f"{total} reports read from {report_files[0] if report_files == [REPORTS_ZIP] else 'files/'}"
        + (f", {len(bad)} unreadable (quarantined)" if bad else "")
    )


def _zip_members(src: SourceFolder, name: str) -> Iterator[tuple[str, str, bytes | Exception]]:
    """(where, member name, bytes or the error reading it) for every file member, in archive order."""
    with src.open(name) as raw:
        try:
            archive = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise SourceError(src.display(name), f"is not a readable zip archive ({e})") from None
        with archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                try:
                    data: bytes | Exception = archive.read(info)
                except ZIP_MEMBER_ERRORS as e:
                    data = e
                yield f"{name}:{info.filename}", info.filename, data


def _tree_files(src: SourceFolder, names: list[str]) -> Iterator[tuple[str, str, bytes | Exception]]:
    for name in names:
        try:
            data: bytes | Exception = src.fs.cat_file(src.path(name))
        except OSError as e:
            data = e
        yield name, name, data


def _report_row(location: str, name: str, data: bytes | Exception) -> dict:
    """A report row, or a quarantine row (it has a `reason`) when the member cannot be used."""
    match = REPORT_MEMBER.match(name)
    reason, raw = None, None
    if match is None:
        reason = "not a report member (expected files/pXX/pNNNNNNNN/sNNNNNNNN.txt)"
    elif isinstance(data, Exception):
        reason = f"cannot be read ({type(data).__name__}: {data})"
    else:
        try:
            report = data.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not UTF-8 text ({e})"
            raw = data[:RAW_TEXT_LIMIT].decode("utf-8", "backslashreplace")
    if reason:
        return {
            "target_table": "reports",
            "source_file": location,
            "row_number": None,
            "line_number": None,
            "column_name": "",
            "value": None,
            "reason": reason,
            "raw_record": raw,
        }
    assert match is not None, "a member with no reason to reject it matched REPORT_MEMBER"
    return {
        "study_id": match.group(2),
        "patient_id": match.group(1),
        **sections(report),
        "full_text": report,
        "source_file": location,
    }


def _reports_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows,
        schema={
            "study_id": pl.String,
            "patient_id": pl.String,
            "indication": pl.String,
            "comparison": pl.String,
            "findings": pl.String,
            "impression": pl.String,
            "full_text": pl.String,
            "source_file": pl.String,
        },
    )
    return text.with_token_counts(frame.with_columns(language=pl.lit("en")))


ADAPTER = MimicCxr()

"""Format-faithful samples of MIMIC-CXR 2.1.0, MIMIC-CXR-JPG 2.1.0 and the MIMIC-IV hosp demographics.

The real files are credentialed, so adapters are built and tested against these copies. Everything
here follows `docs/datasets.md` section 2: file names, column order, value spellings
(`validate`, `Airspace Opacity`, StudyTime with its leading zeros lost), gzip where the real file is
gzipped, and report text that the official sectioner (mimic-code `section_parser.py`) parses the
way it parses the real reports. Where datasets.md marks a fact uncertain, the choice made is
flagged in a comment starting "[U] per docs/datasets.md".

The shared cohort plan (`warehouse.samples.cohort`) drives subjects, studies, splits, dates and
images, so the MIMIC-Ext-CXR-QBA generator can describe the same people. Every random choice comes
from a `random.Random` seeded by a string naming the seed and the thing being drawn (one stream per
person, per study, per MIMIC-IV patient), so output is byte-identical on re-run and switching off
one part (MIMIC-IV) never changes another.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import re
import zipfile
from bisect import bisect
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate, groupby
from pathlib import Path
from typing import TYPE_CHECKING

from warehouse.samples.cohort import MIMIC_SPLITS, StudySpec, plan_mimic_cohort

if TYPE_CHECKING:
    from _csv import Writer as CsvWriter  # what csv.writer() returns; the csv module names no such type


class _Weighted:
    """A weighted value table with precomputed cumulative weights (rng.choices is slow in hot loops)."""

    def __init__(self, weights: dict[str, float]):
        self.values = tuple(weights)
        self.cumulative = tuple(accumulate(weights.values()))

    def pick(self, rng: random.Random) -> str:
        return self.values[bisect(self.cumulative, rng.random() * self.cumulative[-1])]


# --- file names and headers (exact, as the real files have them) -----------------------------

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
NEGBIO_FILE = "mimic-cxr-2.0.0-negbio.csv.gz"
TEST_SET_LABELED_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"
IMAGE_FILENAMES_FILE = "IMAGE_FILENAMES"
RECORD_LIST_FILE = "cxr-record-list.csv.gz"
STUDY_LIST_FILE = "cxr-study-list.csv.gz"
PROVIDER_LIST_FILE = "cxr-provider-list.csv.gz"
REPORTS_ZIP_FILE = "mimic-cxr-reports.zip"
MIMIC_IV_PATIENTS_FILE = "mimiciv/3.1/hosp/patients.csv.gz"
MIMIC_IV_ADMISSIONS_FILE = "mimiciv/3.1/hosp/admissions.csv.gz"

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
# The real CSVs are alphabetical with `No Finding` between `Lung Opacity` and `Pleural Effusion`.
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
LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_LABELS)
# [U] per docs/datasets.md: the test-set column order is not documented. We use the CheXpert
# competition order that Stanford's radiologist-labelling tooling (which says "Airspace Opacity")
# uses; adapters must join these columns by name anyway.
TEST_SET_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Airspace Opacity",
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
TEST_SET_COLUMNS = ("study_id", *TEST_SET_LABELS)
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "dicom_id", "path")
STUDY_LIST_COLUMNS = ("subject_id", "study_id", "path")
PROVIDER_LIST_COLUMNS = ("study_id", "ordering_provider_id", "attending_provider_id", "resident_provider_id")
MIMIC_IV_PATIENTS_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")
MIMIC_IV_ADMISSIONS_COLUMNS = (
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "deathtime",
    "admission_type",
    "admit_provider_id",
    "admission_location",
    "discharge_location",
    "insurance",
    "language",
    "marital_status",
    "race",
    "edregtime",
    "edouttime",
    "hospital_expire_flag",
)

PATHOLOGIES = tuple(label for label in CHEXPERT_LABELS if label not in ("No Finding", "Support Devices"))
LABEL_VALUES = {"pos": "1.0", "unc": "-1.0", "neg": "0.0"}

# Report structures and their published shares (mimic-code stats notebook): 83.2 % impression
# (64 % of those also have findings), 12.2 % findings only, 4.6 % last paragraph only, and 8 of
# 227,835 with nothing the sectioner can use. Only those 8 get no CheXpert/NegBio row: 227,827 of
# 227,835 studies are labelled, so the last-paragraph-only reports are labelled from that paragraph.
STRUCTURE_WEIGHTS = _Weighted(
    {
        "impression_and_findings": 0.536,
        "impression_only": 0.296,
        "findings_only": 0.122,
        "last_paragraph": 0.046,
        "no_sections": 8 / 227_835,
    }
)
# The normalizer in section_parser.py counts 1,802 `conclusion` and 2 `impresson` headers.
IMPRESSION_HEADERS = _Weighted({"IMPRESSION": 0.9918, "CONCLUSION": 0.0080, "IMPRESSON": 0.0002})
# [U] per docs/datasets.md: "2,414 studies have no CheXpert label at all; every study has a NegBio
# label". We read that as no CheXpert row (the real file might instead hold all-blank rows).
CHEXPERT_MISSING_RATE = 2_414 / 227_827
TEST_SET_LABELED_RATE = 687 / 3_269  # labelled test-set studies / test-split studies
ADDENDUM_RATE = 0.02  # [U] per docs/datasets.md: the share of reports with an addendum is not published
NON_ASCII_REPORTS = 2  # the real zip has 4 non-ASCII members in 227,835
MIMIC_IV_UNLINKED_RATE = 0.15  # ~11k of 65k CXR patients have no MIMIC-IV row
MIMIC_IV_ONLY_PATIENT_SHARE = 0.25  # extra MIMIC-IV patients never imaged (the real ratio is far higher)

_ZIP_DATE_TIME = (2019, 9, 19, 0, 0, 0)  # fixed member timestamp so the zip is byte-identical on re-run
_TITLE_LINE = " " * 33 + "FINAL REPORT"
# [U] per docs/datasets.md: only "addenda at the top, separated by a full line of underscores" is
# documented; the title of the addendum block and the exact underscore run are our choice.
_ADDENDUM_TITLE_LINE = " " * 32 + "FINAL ADDENDUM"
_ADDENDUM_SEPARATOR = " " + "_" * 78
_WRAP_WIDTH = 78  # body lines are " " + text, so at most 79 characters


# --- deterministic writers ------------------------------------------------------------------


@contextmanager
def _gzip_csv(path: Path, header: tuple[str, ...]) -> Iterator[CsvWriter]:
    """Open a gzip CSV stream with mtime 0 and no file name in the header, so bytes never vary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
            writer = csv.writer(text, lineterminator="\n")  # pandas-style \n rows, minimal quoting
            writer.writerow(header)
            yield writer


@contextmanager
def _plain_csv(path: Path, header: tuple[str, ...]) -> Iterator[CsvWriter]:
    """Open an uncompressed CSV (the test-set file is the one plain CSV in the release)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        yield writer


def _zip_info(name: str, is_dir: bool) -> zipfile.ZipInfo:
    """Fixed timestamp and Unix attributes keep zip bytes identical across runs and machines."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
    info.create_system = 3
    if is_dir:
        info.external_attr = (0o40755 << 16) | 0x10
    else:
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _patient_dir(subject_id: int) -> str:
    """`files/p10/p10000032`: the bucket is the first two digits of the subject id."""
    return f"files/p{str(subject_id)[:2]}/p{subject_id}"


def _study_stem(subject_id: int, study_id: int) -> str:
    return f"{_patient_dir(subject_id)}/s{study_id}"


class _ReportArchive:
    """Streams reports into mimic-cxr-reports.zip with the real archive's directory members.

    The real zip holds `files/`, one member per `files/pXX/` bucket and one per patient folder
    (65,399 directory members), and nine empty patient folders that match no metadata row.
    """

    def __init__(self, zip_path: Path, extract_root: Path | None, empty_patient_dirs: list[int]):
        self._zip = zipfile.ZipFile(zip_path, "w")
        self._extract_root = extract_root
        self._pending_empty = sorted(empty_patient_dirs)
        self._dirs_written: set[str] = set()
        self._add_dir("files/")

    def _add_dir(self, name: str) -> None:
        if name in self._dirs_written:
            return
        self._dirs_written.add(name)
        self._zip.writestr(_zip_info(name, is_dir=True), b"")
        if self._extract_root is not None:
            (self._extract_root / name).mkdir(parents=True, exist_ok=True)

    def _add_patient_dirs(self, subject_id: int) -> None:
        self._add_dir(f"files/p{str(subject_id)[:2]}/")
        self._add_dir(f"{_patient_dir(subject_id)}/")

    def start_patient(self, subject_id: int) -> None:
        """Write any empty residue folders that sort first, then this patient's folders."""
        while self._pending_empty and self._pending_empty[0] < subject_id:
            self._add_patient_dirs(self._pending_empty.pop(0))
        self._add_patient_dirs(subject_id)

    def add_report(self, subject_id: int, study_id: int, text: str) -> None:
        """Reports sit next to their study folder: `files/pXX/pNNNNNNNN/sNNNNNNNN.txt`."""
        name = f"{_study_stem(subject_id, study_id)}.txt"
        data = text.encode("utf-8")
        self._zip.writestr(_zip_info(name, is_dir=False), data)
        if self._extract_root is not None:
            (self._extract_root / name).write_bytes(data)

    def close(self) -> None:
        for subject_id in self._pending_empty:
            self._add_patient_dirs(subject_id)
        self._zip.close()


# --- people ------------------------------------------------------------------------------------

# [U] per docs/datasets.md: the MIMIC-IV v2+ race value set is not confirmed. These are the v2.x/3.x
# spellings; weights give ~60 % white, ~17 % black, ~6 % hispanic, ~4 % asian, rest other/unknown.
RACE_WEIGHTS = _Weighted(
    {
        "WHITE": 0.520,
        "WHITE - OTHER EUROPEAN": 0.025,
        "WHITE - RUSSIAN": 0.015,
        "WHITE - EASTERN EUROPEAN": 0.006,
        "WHITE - BRAZILIAN": 0.004,
        "PORTUGUESE": 0.005,
        "BLACK/AFRICAN AMERICAN": 0.145,
        "BLACK/CAPE VERDEAN": 0.012,
        "BLACK/CARIBBEAN ISLAND": 0.008,
        "BLACK/AFRICAN": 0.005,
        "HISPANIC/LATINO - PUERTO RICAN": 0.018,
        "HISPANIC OR LATINO": 0.012,
        "HISPANIC/LATINO - DOMINICAN": 0.012,
        "HISPANIC/LATINO - GUATEMALAN": 0.004,
        "HISPANIC/LATINO - SALVADORAN": 0.004,
        "HISPANIC/LATINO - MEXICAN": 0.002,
        "HISPANIC/LATINO - COLUMBIAN": 0.002,
        "HISPANIC/LATINO - HONDURAN": 0.001,
        "HISPANIC/LATINO - CUBAN": 0.001,
        "HISPANIC/LATINO - CENTRAL AMERICAN": 0.001,
        "SOUTH AMERICAN": 0.002,
        "ASIAN": 0.015,
        "ASIAN - CHINESE": 0.014,
        "ASIAN - SOUTH EAST ASIAN": 0.005,
        "ASIAN - ASIAN INDIAN": 0.004,
        "ASIAN - KOREAN": 0.002,
        "OTHER": 0.045,
        "UNKNOWN": 0.055,
        "UNABLE TO OBTAIN": 0.012,
        "PATIENT DECLINED TO ANSWER": 0.008,
        "AMERICAN INDIAN/ALASKA NATIVE": 0.003,
        "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER": 0.001,
        "MULTIPLE RACE/ETHNICITY": 0.002,
    }
)
# What a second admission records instead, when registration disagrees with the first.
_RACE_CONFLICTS = ("UNKNOWN", "UNABLE TO OBTAIN", "OTHER", "PATIENT DECLINED TO ANSWER", "MULTIPLE RACE/ETHNICITY")
_RACE_SIBLINGS = {
    "WHITE": "WHITE - OTHER EUROPEAN",
    "WHITE - OTHER EUROPEAN": "WHITE",
    "BLACK/AFRICAN AMERICAN": "BLACK/CAPE VERDEAN",
    "BLACK/CAPE VERDEAN": "BLACK/AFRICAN AMERICAN",
    "HISPANIC/LATINO - PUERTO RICAN": "HISPANIC OR LATINO",
    "HISPANIC OR LATINO": "HISPANIC/LATINO - DOMINICAN",
    "ASIAN": "ASIAN - CHINESE",
    "ASIAN - CHINESE": "ASIAN",
}
# [U] per docs/datasets.md: v3.x writes full language names (v2.x wrote ENGLISH / ?); value set from memory.
LANGUAGE_WEIGHTS = _Weighted(
    {
        "English": 0.880,
        "Spanish": 0.035,
        "Russian": 0.015,
        "Chinese": 0.015,
        "Portuguese": 0.008,
        "Haitian": 0.006,
        "Kabuverdianu": 0.005,
        "Vietnamese": 0.003,
        "Other": 0.004,
        "Arabic": 0.002,
        "Modern Greek (1453-)": 0.001,
        "Italian": 0.001,
        "Polish": 0.001,
        "Korean": 0.001,
        "French": 0.001,
        "American Sign Language": 0.0005,
        "Japanese": 0.0005,
        "": 0.005,
    }
)
INSURANCE_WEIGHTS = _Weighted(
    {"Medicare": 0.45, "Private": 0.30, "Medicaid": 0.18, "Other": 0.05, "No charge": 0.003, "": 0.01}
)
MARITAL_WEIGHTS = _Weighted({"MARRIED": 0.43, "SINGLE": 0.34, "WIDOWED": 0.12, "DIVORCED": 0.08, "": 0.03})
ADMISSION_TYPE_WEIGHTS = _Weighted(
    {
        "EW EMER.": 0.33,
        "EU OBSERVATION": 0.17,
        "OBSERVATION ADMIT": 0.11,
        "URGENT": 0.10,
        "SURGICAL SAME DAY ADMISSION": 0.08,
        "DIRECT OBSERVATION": 0.07,
        "DIRECT EMER.": 0.05,
        "ELECTIVE": 0.05,
        "AMBULATORY OBSERVATION": 0.01,
    }
)
_ED_ADMISSION_TYPES = frozenset({"EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT"})
NON_ED_LOCATION_WEIGHTS = _Weighted(
    {
        "PHYSICIAN REFERRAL": 0.35,
        "TRANSFER FROM HOSPITAL": 0.25,
        "WALK-IN/SELF REFERRAL": 0.08,
        "CLINIC REFERRAL": 0.08,
        "PROCEDURE SITE": 0.07,
        "PACU": 0.06,
        "TRANSFER FROM SKILLED NURSING FACILITY": 0.04,
        "INFORMATION NOT AVAILABLE": 0.03,
        "INTERNAL TRANSFER TO OR FROM PSYCH": 0.02,
        "AMBULATORY SURGERY TRANSFER": 0.02,
    }
)
DISCHARGE_LOCATION_WEIGHTS = _Weighted(
    {
        "HOME": 0.40,
        "HOME HEALTH CARE": 0.20,
        "SKILLED NURSING FACILITY": 0.12,
        "": 0.14,
        "REHAB": 0.04,
        "CHRONIC/LONG TERM ACUTE CARE": 0.02,
        "HOSPICE": 0.01,
        "ACUTE HOSPITAL": 0.01,
        "AGAINST ADVICE": 0.01,
        "PSYCH FACILITY": 0.005,
        "OTHER FACILITY": 0.005,
        "ASSISTED LIVING": 0.005,
        "HEALTHCARE FACILITY": 0.001,
    }
)


@dataclass(frozen=True)
class _Person:
    """Who a subject is, drawn once so reports ("___ year old woman") and MIMIC-IV agree."""

    gender: str
    age_at_first_study: int
    race: str
    language: str
    marital_status: str
    insurance: str


def _person(seed: int, subject_id: int) -> _Person:
    """Draw from a per-subject stream so a person does not change when the cohort around them does."""
    rng = random.Random(f"mimic_cxr:{seed}:person:{subject_id}")
    return _Person(
        gender="F" if rng.random() < 0.52 else "M",
        # mode 65, ~4 % over 89 at the first study, no minors (MIMIC-CXR is adults)
        age_at_first_study=int(rng.triangular(18, 100, 65)),
        race=RACE_WEIGHTS.pick(rng),
        language=LANGUAGE_WEIGHTS.pick(rng),
        marital_status=MARITAL_WEIGHTS.pick(rng),
        insurance=INSURANCE_WEIGHTS.pick(rng),
    )


def _provider_ids(seed: int, role: str, count: int) -> list[str]:
    """De-identified provider ids look like `P49AFC`: P and five upper-case letters or digits."""
    rng = random.Random(f"mimic_cxr:{seed}:providers:{role}")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("P" + "".join(rng.choice(alphabet) for _ in range(5)))
    return sorted(ids)


# --- study metadata -----------------------------------------------------------------------------

_VIEW_CODE_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


# [U] per docs/datasets.md: only `CHEST (PA AND LAT)` and `CHEST (PORTABLE AP)` are documented; the
# rarer names are plausible BIDMC exam names (the one with a comma exercises CSV quoting).
_PA_PROCEDURES = _Weighted(
    {"CHEST (PA AND LAT)": 0.90, "CHEST (PRE-OP PA AND LAT)": 0.07, "CHEST (PA, LAT & OBLIQUES)": 0.03}
)
_AP_PROCEDURES = _Weighted(
    {"CHEST (PORTABLE AP)": 0.86, "CHEST PORT. LINE PLACEMENT": 0.08, "CHEST (SINGLE VIEW)": 0.06}
)
_OTHER_PROCEDURES = _Weighted({"CHEST (PA AND LAT)": 0.6, "CHEST (SINGLE VIEW)": 0.2, "CHEST (PORTABLE AP)": 0.2})
# [U] per docs/datasets.md: Erect / Recumbent / blank are documented, their mix per view is a guess.
_AP_ORIENTATIONS = _Weighted({"Erect": 0.55, "Recumbent": 0.35, "": 0.10})
_UPRIGHT_ORIENTATIONS = _Weighted({"Erect": 0.95, "": 0.05})


def _procedure(rng: random.Random, views: list[str]) -> str:
    """Pick the exam name the way the views suggest (PA → PA and lateral, AP only → portable)."""
    if "PA" in views:
        return _PA_PROCEDURES.pick(rng)
    if set(views) == {"AP"}:
        return _AP_PROCEDURES.pick(rng)
    return _OTHER_PROCEDURES.pick(rng)


def _view_code_meaning(rng: random.Random, view: str) -> str:
    """The DICOM view code spelled out, as in `postero-anterior`."""
    # [U] per docs/datasets.md: the LATERAL → "left lateral" share and blank-view codes are guesses.
    if view == "LATERAL" and rng.random() < 0.15:
        return "left lateral"
    return _VIEW_CODE_MEANINGS.get(view, "")


def _patient_orientation(rng: random.Random, view: str) -> str:
    """Portable AP films are often taken lying down; PA and lateral films standing."""
    if view == "":
        return ""
    return (_AP_ORIENTATIONS if view == "AP" else _UPRIGHT_ORIENTATIONS).pick(rng)


def _metadata_rows(rng: random.Random, study: StudySpec, procedure: str) -> list[tuple]:
    """One metadata row per image; the step description is occasionally blank, the code meaning never."""
    # [U] per docs/datasets.md: the blank-description share (2 %) is a guess.
    step_description = "" if rng.random() < 0.02 else procedure
    rows = []
    for image in sorted(study.images, key=lambda im: im.dicom_id):
        rows.append(
            (
                image.dicom_id,
                study.subject_id,
                study.study_id,
                step_description,
                image.view_position,
                # StudyTime as pandas wrote the float: 80556.875 for 08:05:56.875
                image.rows,
                image.columns,
                study.study_date,
                repr(study.study_time),
                procedure,
                _view_code_meaning(rng, image.view_position),
                _patient_orientation(rng, image.view_position),
            )
        )
    return rows


# --- findings state and report text -------------------------------------------------------------

# (positive rate, uncertain rate) among abnormal studies, scaled so overall shares land near the
# published MIMIC-CXR CheXpert prevalences (effusion ~24 %, opacity ~23 %, pneumothorax ~4.5 %, ...).
_ABNORMAL_RATES = {
    "Atelectasis": (0.30, 0.07),
    "Cardiomegaly": (0.30, 0.04),
    "Consolidation": (0.075, 0.03),
    "Edema": (0.18, 0.09),
    "Enlarged Cardiomediastinum": (0.045, 0.06),
    "Fracture": (0.03, 0.005),
    "Lung Lesion": (0.04, 0.008),
    "Lung Opacity": (0.34, 0.03),
    "Pleural Effusion": (0.36, 0.045),
    "Pleural Other": (0.015, 0.002),
    "Pneumonia": (0.10, 0.12),
    "Pneumothorax": (0.07, 0.007),
}
# How often a label that is not present is explicitly negated somewhere in the report.
_NEGATION_RATES = {
    "Pleural Effusion": 0.65,
    "Pneumothorax": 0.6,
    "Consolidation": 0.5,
    "Cardiomegaly": 0.3,
    "Enlarged Cardiomediastinum": 0.3,
    "Edema": 0.25,
    "Pneumonia": 0.1,
    "Fracture": 0.05,
}
# The order a radiologist dictates in: devices, lungs, heart and mediastinum, pleura, bones.
_READING_ORDER = (
    "Support Devices",
    "Lung Opacity",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Edema",
    "Lung Lesion",
    "Cardiomegaly",
    "Enlarged Cardiomediastinum",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumothorax",
    "Fracture",
)
_SLOTS = {
    "loc": (
        "right lower lobe",
        "left lower lobe",
        "right upper lobe",
        "left upper lobe",
        "right middle lobe",
        "lingula",
        "right base",
        "left base",
    ),
    "base": ("bibasilar", "left basilar", "right basilar", "left retrocardiac"),
    "side": ("right", "left"),
    "size": ("small", "moderate", "large"),
    "degree": ("mild", "minimal", "moderate"),
    "severity": ("mild", "moderate", "severe"),
    "rib": ("fourth", "fifth", "sixth", "seventh", "eighth"),
    "cm": ("0.8", "1.1", "1.4", "2.0"),
    "ett": ("3.5", "4", "4.5", "5", "6"),
}
# label -> state -> (findings sentence, impression phrase) templates. A sentence only ever names its
# own label, so the labels a section gets are exactly the states it mentions.
_PHRASES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "Atelectasis": {
        "pos": (
            ("{degree} {base} atelectasis is present.", "{base} atelectasis."),
            ("Linear {side} basilar atelectasis is again seen.", "{side} basilar atelectasis."),
        ),
        "unc": (("Subtle {base} density likely reflects atelectasis.", "Probable {base} atelectasis."),),
    },
    "Cardiomegaly": {
        "pos": (
            ("The heart is {severity}ly enlarged.", "{severity} cardiomegaly."),
            ("Cardiomegaly is unchanged.", "Stable cardiomegaly."),
        ),
        "unc": (
            (
                "The cardiac silhouette is at the upper limits of normal, possibly mildly enlarged.",
                "Possible mild cardiomegaly.",
            ),
        ),
    },
    "Consolidation": {
        "pos": (("There is focal consolidation in the {loc}.", "{loc} consolidation."),),
        "unc": (("Early consolidation in the {loc} cannot be excluded.", "Possible {loc} consolidation."),),
    },
    "Edema": {
        "pos": (
            ("There is {severity} pulmonary edema.", "{severity} pulmonary edema."),
            ("Interstitial pulmonary edema has slightly improved.", "Improving pulmonary edema."),
        ),
        "unc": (("There is possible mild interstitial edema.", "Possible mild pulmonary edema."),),
    },
    "Enlarged Cardiomediastinum": {
        "pos": (("The mediastinum is widened.", "Widened mediastinum."),),
        "unc": (
            (
                "The mediastinal contours may be mildly widened, possibly due to technique.",
                "Possible mediastinal widening.",
            ),
        ),
    },
    "Fracture": {
        "pos": (
            ("There is a healed fracture of the {side} {rib} rib.", "Old {side} {rib} rib fracture."),
            ("There is a nondisplaced fracture of the {side} {rib} rib.", "Acute {side} {rib} rib fracture."),
        ),
        "unc": (
            (
                "A subtle lucency through the {side} {rib} rib may represent a nondisplaced fracture.",
                "Possible {side} rib fracture.",
            ),
        ),
    },
    "Lung Lesion": {
        "pos": (
            (
                "A {cm} cm nodule projects over the {loc}.",
                "{cm} cm {loc} nodule, chest CT is recommended for further evaluation.",
            ),
        ),
        "unc": (("A possible nodular density projects over the {loc}.", "Possible {loc} nodule."),),
    },
    "Lung Opacity": {
        "pos": (
            ("Patchy opacity is seen in the {loc}.", "{loc} opacity."),
            ("Hazy opacity at the {loc} is new.", "New {loc} opacity."),
        ),
        "unc": (("Questionable opacity at the {loc}.", "Questionable {loc} opacity."),),
    },
    "Pleural Effusion": {
        "pos": (
            ("There is a {size} {side} pleural effusion.", "{size} {side} pleural effusion."),
            ("Small bilateral pleural effusions are present.", "Small bilateral pleural effusions."),
        ),
        "unc": (
            (
                "Blunting of the {side} costophrenic angle could reflect a trace effusion.",
                "Possible trace {side} pleural effusion.",
            ),
        ),
    },
    "Pleural Other": {
        "pos": (("{side} apical pleural thickening is noted.", "{side} apical pleural thickening."),),
        "unc": (("There is possible {side} pleural thickening.", "Possible {side} pleural thickening."),),
    },
    "Pneumonia": {
        "pos": (("Findings in the {loc} are consistent with pneumonia.", "{loc} pneumonia."),),
        "unc": (
            (
                "Pneumonia in the {loc} cannot be excluded.",
                "Possible {loc} pneumonia in the appropriate clinical setting.",
            ),
        ),
    },
    "Pneumothorax": {
        "pos": (("There is a {size} {side} apical pneumothorax.", "{size} {side} pneumothorax."),),
        "unc": (("A possible tiny {side} apical pneumothorax is seen.", "Possible tiny {side} apical pneumothorax."),),
    },
    "Support Devices": {
        "pos": (
            ("An endotracheal tube terminates {ett} cm above the carina.", "Endotracheal tube in standard position."),
            (
                "A right internal jugular central venous catheter terminates in the mid SVC.",
                "Right internal jugular line ends in the mid SVC.",
            ),
            (
                "A nasogastric tube courses below the diaphragm with its tip in the stomach.",
                "Nasogastric tube in the stomach.",
            ),
            (
                "A left-sided pacemaker has leads in the right atrium and right ventricle.",
                "Stable position of pacemaker leads.",
            ),
            ("A right-sided PICC line terminates in the lower SVC.", "Right PICC line tip in the lower SVC."),
        ),
    },
}
_NEGATIONS = {
    "Cardiomegaly": ("Heart size is normal.", "Normal heart size."),
    "Consolidation": ("No focal consolidation is seen.", "No focal consolidation."),
    "Edema": ("There is no pulmonary edema.", "No pulmonary edema."),
    "Enlarged Cardiomediastinum": (
        "The mediastinal and hilar contours are within normal limits.",
        "Normal mediastinal contours.",
    ),
    "Fracture": ("No acute displaced fracture is identified.", "No acute fracture."),
    "Pleural Effusion": ("There is no pleural effusion.", "No pleural effusion."),
    "Pneumonia": ("There is no evidence of pneumonia.", "No evidence of pneumonia."),
    "Pneumothorax": ("There is no pneumothorax.", "No pneumothorax."),
}
_COMBINED_NEGATION = (
    frozenset({"Consolidation", "Pleural Effusion", "Pneumothorax"}),
    "There is no focal consolidation, pleural effusion or pneumothorax.",
)
_LUNG_LABELS = frozenset({"Atelectasis", "Consolidation", "Edema", "Lung Lesion", "Lung Opacity", "Pneumonia"})
_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "No evidence of acute disease.",
)
_NEUTRAL_SENTENCES = (
    "Degenerative changes are seen in the thoracic spine.",
    "The imaged upper abdomen is unremarkable.",
    "Surgical clips project over the right upper quadrant.",
    "Bony structures are unremarkable.",
)
# The four real non-ASCII members are unpublished; a degree sign and an en dash are typical of dictation.
_NON_ASCII_SENTENCES = (
    "The patient is rotated approximately 10\u00b0 to the right.",
    "Mild rotation (10\u201315 degrees) limits assessment of the mediastinum.",
)
_COMPLAINTS = (
    "shortness of breath",
    "chest pain",
    "cough and fever",
    "hypoxia",
    "a fall",
    "altered mental status",
    "CHF exacerbation",
    "sepsis",
    "weakness",
    "tachypnea",
    "new ET tube placement",
    "pre-op evaluation",
    "hemoptysis",
    "leukocytosis",
)
_QUESTIONS = (
    "eval for pneumonia",
    "eval for acute process",
    "?pleural effusion",
    "interval change",
    "evaluate for infiltrate",
    "r/o pneumothorax",
    "ET tube position",
    "eval for edema",
)
# Older templates name the indication differently (header counts from section_parser.py).
_OLDER_INDICATION_HEADERS = _Weighted(
    {
        "HISTORY": 0.55,
        "INDICATION": 0.25,
        "CLINICAL HISTORY": 0.08,
        "REASON FOR EXAMINATION": 0.07,
        "REASON FOR EXAM": 0.05,
    }
)
_COMPARISONS = (
    "___",
    "None.",
    "Chest radiograph from ___.",
    "Prior chest radiographs ___ through ___.",
    "PA and lateral chest radiograph from ___.",
)
_NOTIFICATION = (
    "The findings were discussed with ___, M.D. by ___, M.D. on the telephone on ___ at "
    "3:05 PM, within 10 minutes of discovery of the findings."
)
_ADDENDUM_TEXTS = (
    "Findings were communicated to Dr. ___ by Dr. ___ by telephone on ___ at 10:25.",
    "The study was reviewed again with the prior images, which were not available at "
    "the time of the original interpretation. The conclusions are unchanged.",
)


def _draw_state(rng: random.Random, views: list[str], procedure: str) -> dict[str, str]:
    """Decide what is really on the film: label -> pos / unc / neg (absent labels are unmentioned)."""
    portable = "PA" not in views
    state: dict[str, str] = {}
    if rng.random() >= (0.22 if portable else 0.45):
        for label, (p_pos, p_unc) in _ABNORMAL_RATES.items():
            roll = rng.random()
            if roll < p_pos:
                state[label] = "pos"
            elif roll < p_pos + p_unc:
                state[label] = "unc"
        if not state:
            state[rng.choice(PATHOLOGIES)] = "pos"
    if "LINE" in procedure or rng.random() < (0.5 if portable else 0.12):
        state["Support Devices"] = "pos"
    for label, rate in _NEGATION_RATES.items():
        if label not in state and rng.random() < rate:
            state[label] = "neg"
    return state


def _sentence(text: str) -> str:
    """Capitalise the first letter only (slots like `right lower lobe` can start a sentence)."""
    return text[0].upper() + text[1:]


class _DrawnSlots(dict):
    """Fills a template slot on first use, so both halves of a phrase pair share it."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self._rng = rng

    def __missing__(self, name: str) -> str:
        self[name] = self._rng.choice(_SLOTS[name])
        return self[name]


def _phrase_pair(rng: random.Random, label: str, status: str) -> tuple[str, str]:
    """One (findings sentence, impression phrase) for a label, with the same slots in both."""
    findings, impression = rng.choice(_PHRASES[label][status])
    slots = _DrawnSlots(rng)
    return _sentence(findings.format_map(slots)), _sentence(impression.format_map(slots))


def _wrap(text: str) -> list[str]:
    """Greedy word wrap to 78 characters; keeps the double spaces radiologists put between sentences."""
    if len(text) <= _WRAP_WIDTH:
        return [text.rstrip()]
    lines: list[str] = []
    current = ""
    for chunk in re.findall(r"\S+\s*", text):
        if current and len((current + chunk).rstrip()) > _WRAP_WIDTH:
            lines.append(current.rstrip())
            current = chunk
        else:
            current += chunk
    if current.strip():
        lines.append(current.rstrip())
    return lines


def _body(text: str) -> str:
    """Every body line in a MIMIC report starts with a single space."""
    return "\n".join(" " + line for line in _wrap(text))


# Headers are written as "\n HEADER:" followed by whitespace, so the official sectioner regex
# (mimic-code section_parser.py: r'\n ([A-Z ()/,-]+):\s') finds every one of them.
def _inline_section(header: str, text: str) -> str:
    """`HEADER:  text` on the header's own line, two spaces after the colon."""
    return _body(f"{header}:  {text}")


def _block_section(header: str, body: str) -> str:
    """`HEADER: ` alone on its line, a blank (single-space) line, then the body."""
    return f" {header}: \n \n{body}"


@dataclass(frozen=True)
class _StudyQuirks:
    """Per-study choices made over the whole cohort so every quirk occurs even in small samples."""

    structure: str
    impression_header: str = "IMPRESSION"
    addendum: bool = False
    non_ascii: bool = False
    chexpert_missing: bool = False
    test_set_labeled: bool = False


@dataclass(frozen=True)
class _Report:
    """The report text and what its labelled section says, which is what the label files encode."""

    text: str
    mentions: dict[str, str]  # label -> pos/unc/neg, in the section the labelers read


def _findings_sentences(rng: random.Random, state: dict[str, str], pairs: dict[str, tuple[str, str]]) -> list[str]:
    """Findings name every present or doubtful finding, then the pertinent negatives."""
    sentences = [pairs[label][0] for label in _READING_ORDER if label in pairs]
    negated = {label for label, status in state.items() if status == "neg"}
    combined_labels, combined_sentence = _COMBINED_NEGATION
    if combined_labels <= negated and rng.random() < 0.7:
        sentences.append(combined_sentence)
        negated -= combined_labels
    sentences.extend(_NEGATIONS[label][0] for label in _READING_ORDER if label in negated)
    if not _LUNG_LABELS & pairs.keys():
        sentences.insert(0, "The lungs are clear.")
    if rng.random() < 0.3:
        sentences.append(rng.choice(_NEUTRAL_SENTENCES))
    return sentences


def _impression(
    rng: random.Random, state: dict[str, str], pairs: dict[str, tuple[str, str]]
) -> tuple[list[str], dict[str, str]]:
    """Impression items and what they mention; minor findings are sometimes left to the findings."""
    items, mentions = [], {}
    for label in _READING_ORDER:
        if label in pairs and rng.random() < (0.6 if label == "Support Devices" else 0.9):
            items.append(pairs[label][1])
            mentions[label] = state[label]
    if not any(label in PATHOLOGIES for label in mentions):
        items.insert(0, rng.choice(_NORMAL_IMPRESSIONS))
    for label in ("Pneumothorax", "Pleural Effusion"):
        if state.get(label) == "neg" and rng.random() < 0.3:
            items.append(_NEGATIONS[label][1])
            mentions[label] = "neg"
    return items, mentions


def _findings_mentions(state: dict[str, str], pairs: dict[str, tuple[str, str]]) -> dict[str, str]:
    """What the findings text mentions (every phrased finding and every negation)."""
    return {label: status for label, status in state.items() if label in pairs or status == "neg"}


def _render_impression(rng: random.Random, items: list[str]) -> str:
    """Some radiologists number their impression items, one per line."""
    if len(items) > 1 and rng.random() < 0.3:
        return "\n".join(_body(f"{number}. {item}") for number, item in enumerate(items, start=1))
    return _body("  ".join(items))


def _indication(rng: random.Random, person: _Person) -> str:
    """Ages are PHI (`___`) but sex is not, so it must match the MIMIC-IV gender."""
    noun = "woman" if person.gender == "F" else "man"
    complaint, question = rng.choice(_COMPLAINTS), rng.choice(_QUESTIONS)
    return rng.choice(
        (
            f"___ year old {noun} with {complaint}  // {question}",
            f"___{person.gender} with {complaint}  // {question}",
            f"___-year-old {'female' if person.gender == 'F' else 'male'} with {complaint}.",
        )
    )


def _technique(rng: random.Random, views: list[str]) -> str:
    """The technique follows the views actually acquired."""
    if "PA" in views:
        return rng.choice(("Chest PA and lateral", "PA and lateral views of the chest."))
    if set(views) == {"AP"}:
        return rng.choice(
            (
                "Portable AP chest radiograph.",
                "Single frontal view of the chest.",
                "AP portable upright view of the chest.",
            )
        )
    return "Chest radiograph."


def _preamble_sections(rng: random.Random, person: _Person, views: list[str], procedure: str) -> list[str]:
    """The headers before the findings, in the modern template or one of the older ones."""
    comparison_header = "COMPARISONS" if rng.random() < 0.06 else "COMPARISON"
    if rng.random() < 0.45:
        sections = [_inline_section("EXAMINATION", procedure), _inline_section("INDICATION", _indication(rng, person))]
        if rng.random() < 0.8:
            sections.append(_inline_section("TECHNIQUE", _technique(rng, views)))
    else:
        header = _OLDER_INDICATION_HEADERS.pick(rng)
        sections = [_inline_section(header, _indication(rng, person))]
    if rng.random() < 0.9:
        sections.append(_inline_section(comparison_header, rng.choice(_COMPARISONS)))
    return sections


def _compose_report(
    rng: random.Random, person: _Person, study: StudySpec, procedure: str, state: dict[str, str], quirks: _StudyQuirks
) -> _Report:
    """Write the report .txt for one study and record what its labelled section says."""
    views = [image.view_position for image in study.images]
    pairs = {label: _phrase_pair(rng, label, status) for label, status in state.items() if status in ("pos", "unc")}
    findings = _findings_sentences(rng, state, pairs)
    impression_items, impression_mentions = _impression(rng, state, pairs)
    if quirks.non_ascii:
        (findings if quirks.structure != "impression_only" else impression_items).append(
            rng.choice(_NON_ASCII_SENTENCES)
        )
    findings_text = "  ".join(findings)

    sections = _preamble_sections(rng, person, views, procedure)
    structure = quirks.structure
    if structure in ("impression_and_findings", "findings_only"):
        sections.append(
            _inline_section("FINDINGS", findings_text)
            if rng.random() < 0.25
            else _block_section("FINDINGS", _body(findings_text))
        )
    if structure in ("impression_and_findings", "impression_only"):
        impression_body = _render_impression(rng, impression_items)
        if rng.random() < 0.3 and "\n" not in impression_body:
            sections.append(_inline_section(quirks.impression_header, "  ".join(impression_items)))
        else:
            sections.append(_block_section(quirks.impression_header, impression_body))
        if rng.random() < 0.025:
            sections.append(_inline_section("NOTIFICATION", _NOTIFICATION))
    if structure == "last_paragraph":
        # No findings/impression header: the sectioner falls back to the text after the last
        # section's first blank line, which therefore must exist.
        sections.append(_body(findings_text))
        sections.append(_body("  ".join(impression_items)))
    if structure == "no_sections":
        # Nothing after the last header and no blank line inside it: the sectioner finds nothing to label.
        sections = [
            _inline_section("EXAMINATION", procedure),
            _inline_section("INDICATION", _indication(rng, person)),
            _inline_section("COMPARISON", rng.choice(_COMPARISONS)),
        ]

    text = _TITLE_LINE + "\n" + "\n \n".join(sections) + "\n"
    if quirks.addendum:
        text = (
            _ADDENDUM_TITLE_LINE
            + "\n"
            + _body(rng.choice(_ADDENDUM_TEXTS))
            + "\n \n"
            + _ADDENDUM_SEPARATOR
            + "\n"
            + text
        )
    return _Report(text, _labelled_mentions(structure, state, pairs, impression_mentions))


def _labelled_mentions(
    structure: str, state: dict[str, str], pairs: dict[str, tuple[str, str]], impression_mentions: dict[str, str]
) -> dict[str, str]:
    """CheXpert/NegBio read the impression, else the findings, else the last paragraph."""
    if structure in ("impression_and_findings", "impression_only"):
        return impression_mentions
    if structure == "findings_only":
        return _findings_mentions(state, pairs)
    if structure == "last_paragraph":
        return {**_findings_mentions(state, pairs), **impression_mentions}
    return {}


# --- labels -------------------------------------------------------------------------------------


def _label_row(mentions: dict[str, str]) -> dict[str, str]:
    """CheXpert coding: 1.0 / -1.0 / 0.0 / blank; No Finding is 1.0 only without any pathology."""
    row = {label: LABEL_VALUES[status] for label, status in mentions.items()}
    if not any(mentions.get(label) in ("pos", "unc") for label in PATHOLOGIES):
        row["No Finding"] = "1.0"
    return row


def _negbio_mentions(rng: random.Random, mentions: dict[str, str]) -> dict[str, str]:
    """NegBio disagrees with CheXpert now and then, mostly on uncertainty."""
    result = {}
    for label, status in mentions.items():
        roll = rng.random()
        if status == "unc" and roll < 0.15:
            result[label] = "pos"
        elif status == "pos" and roll < 0.04:
            result[label] = "unc"
        elif status == "neg" and roll < 0.05:
            continue
        else:
            result[label] = status
    return result


def _test_set_row(rng: random.Random, study_id: int, state: dict[str, str]) -> list:
    """A radiologist's read of the film: most labels answered, a few left blank."""
    values = {}
    for label in CHEXPERT_LABELS:
        if label == "No Finding":
            continue
        status = state.get(label)
        if status == "pos":
            values[label] = "1.0"
        elif status == "unc":
            values[label] = "-1.0" if rng.random() < 0.5 else "1.0"
        else:
            values[label] = "0.0" if rng.random() < 0.8 else ""
    values["No Finding"] = "0.0" if any(state.get(label) in ("pos", "unc") for label in PATHOLOGIES) else "1.0"
    values["Airspace Opacity"] = values.pop("Lung Opacity")
    return [study_id, *(values[label] for label in TEST_SET_LABELS)]


# --- cohort-wide quirk plan ---------------------------------------------------------------------


def _force(rng: random.Random, candidates: list[int], already: set[int], minimum: int) -> set[int]:
    """Top a drawn set up to `minimum` members, drawing the extra ones from `candidates`."""
    chosen = set(already)
    spare = [study_id for study_id in candidates if study_id not in chosen]
    chosen.update(rng.sample(spare, min(len(spare), max(0, minimum - len(chosen)))))
    return chosen


def _plan_quirks(studies: list[StudySpec], seed: int) -> dict[int, _StudyQuirks]:
    """Draw each study's report structure and oddities at published rates, then make sure each
    oddity occurs at least once so that small samples still exercise every code path."""
    rng = random.Random(f"mimic_cxr:{seed}:quirks")
    ids = [study.study_id for study in studies]
    structure = {study_id: STRUCTURE_WEIGHTS.pick(rng) for study_id in ids}
    if len(ids) >= 10:
        taken: set[int] = set()
        for kind in ("no_sections", "last_paragraph", "findings_only", "impression_only"):
            spare = [study_id for study_id in ids if study_id not in taken]
            if kind not in structure.values() and spare:
                structure[rng.choice(spare)] = kind
            taken.update(study_id for study_id in ids if structure[study_id] == kind)

    labelled = [study_id for study_id in ids if structure[study_id] != "no_sections"]
    with_impression = [study_id for study_id in ids if structure[study_id].startswith("impression")]
    header = {study_id: IMPRESSION_HEADERS.pick(rng) for study_id in with_impression}
    misspelled = _force(rng, with_impression, {s for s, h in header.items() if h == "IMPRESSON"}, 1)
    header.update({study_id: "IMPRESSON" for study_id in misspelled})
    non_ascii = set(rng.sample(labelled, min(NON_ASCII_REPORTS, len(labelled))))
    addendum = _force(rng, ids, {s for s in ids if rng.random() < ADDENDUM_RATE}, 1 if len(ids) >= 5 else 0)
    chexpert_missing = _force(
        rng, labelled, {s for s in labelled if rng.random() < CHEXPERT_MISSING_RATE}, 1 if len(labelled) >= 5 else 0
    )
    test_labelled = [
        study.study_id for study in studies if study.split == "test" and structure[study.study_id] != "no_sections"
    ]
    test_set = _force(rng, test_labelled, {s for s in test_labelled if rng.random() < TEST_SET_LABELED_RATE}, 1)
    return {
        study_id: _StudyQuirks(
            structure=structure[study_id],
            impression_header=header.get(study_id, "IMPRESSION"),
            addendum=study_id in addendum,
            non_ascii=study_id in non_ascii,
            chexpert_missing=study_id in chexpert_missing,
            test_set_labeled=study_id in test_set,
        )
        for study_id in ids
    }


# --- split file ---------------------------------------------------------------------------------


def _sorted_studies(cohort: list[StudySpec]) -> list[StudySpec]:
    """The real files are ordered by subject, then study (and image by dicom_id)."""
    return sorted(cohort, key=lambda study: (study.subject_id, study.study_id))


def _split_rows(study: StudySpec) -> list[tuple]:
    """Split rows are per image, in the file's odd column order dicom, study, subject."""
    return [
        (image.dicom_id, study.study_id, study.subject_id, study.split)
        for image in sorted(study.images, key=lambda im: im.dicom_id)
    ]


def write_split_file(out_dir: Path, cohort: list[StudySpec]) -> Path:
    """Write only mimic-cxr-2.0.0-split.csv.gz (byte-identical to the one write_samples makes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SPLIT_FILE
    with _gzip_csv(path, SPLIT_COLUMNS) as writer:
        for study in _sorted_studies(cohort):
            writer.writerows(_split_rows(study))
    return path


# --- MIMIC-IV hosp ------------------------------------------------------------------------------

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _study_datetime(study: StudySpec) -> datetime:
    """StudyDate is YYYYMMDD, StudyTime HHMMSS.fff with leading zeros lost (so zero-pad to 6)."""
    clock = f"{int(study.study_time):06d}"
    return datetime(
        study.study_date // 10000,
        study.study_date // 100 % 100,
        study.study_date % 100,
        int(clock[:2]),
        int(clock[2:4]),
        int(clock[4:]),
    )


def _anchor_year_group(real_year: int) -> str:
    """Real-calendar three-year bins spelled `2014 - 2016`."""
    start = 2008 + 3 * ((real_year - 2008) // 3)
    return f"{start} - {start + 2}"


@dataclass
class _Admission:
    """One hospital stay, before it becomes an admissions.csv row."""

    admit: datetime
    discharge: datetime
    admission_type: str
    location: str
    ed_times: tuple[datetime, datetime] | None
    discharge_location: str
    race: str
    died: bool = False


def _admission_windows(rng: random.Random, events: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Stays that mostly contain a CXR study (imaged in the ED or on the ward), never overlapping."""
    windows = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 7))):
        if events and rng.random() < 0.7:
            anchor = rng.choice(events)
            admit = anchor - timedelta(minutes=rng.randint(30, 3 * 24 * 60))
            discharge = max(
                anchor + timedelta(minutes=rng.randint(60, 24 * 60)),
                admit + timedelta(minutes=rng.randint(6 * 60, 12 * 24 * 60)),
            )
        else:
            start = min(events) if events else datetime(rng.randint(2110, 2200), 1, 1)
            admit = start + timedelta(minutes=rng.randint(-365 * 24 * 60, 3 * 365 * 24 * 60))
            discharge = admit + timedelta(minutes=rng.randint(6 * 60, 12 * 24 * 60))
        windows.append((admit.replace(second=0), discharge.replace(second=0)))
    kept: list[tuple[datetime, datetime]] = []
    for admit, discharge in sorted(windows):
        if not kept or admit > kept[-1][1]:
            kept.append((admit, discharge))
    return kept


def _admissions(rng: random.Random, person: _Person, events: list[datetime]) -> list[_Admission]:
    """Hospital stays around the CXR events; ED arrivals carry ED registration times."""
    admissions = []
    for admit, discharge in _admission_windows(rng, events):
        admission_type = ADMISSION_TYPE_WEIGHTS.pick(rng)
        from_ed = admission_type in _ED_ADMISSION_TYPES and rng.random() < 0.92
        ed_times = None
        if from_ed:
            ed_times = (
                admit - timedelta(minutes=rng.randint(60, 10 * 60)),
                admit + timedelta(minutes=rng.randint(0, 90)),
            )
        discharge_location = (
            "" if admission_type == "EU OBSERVATION" and rng.random() < 0.6 else DISCHARGE_LOCATION_WEIGHTS.pick(rng)
        )
        admissions.append(
            _Admission(
                admit,
                discharge,
                admission_type,
                "EMERGENCY ROOM" if from_ed else NON_ED_LOCATION_WEIGHTS.pick(rng),
                ed_times,
                discharge_location,
                person.race,
            )
        )
    if len(admissions) >= 2 and rng.random() < 0.12:
        # Race is recorded per admission and registration sometimes disagrees with itself.
        other = rng.choice(admissions[1:])
        alternative = _RACE_SIBLINGS.get(person.race) if rng.random() < 0.4 else None
        other.race = alternative or rng.choice([race for race in _RACE_CONFLICTS if race != person.race])
    return admissions


def _admission_row(
    rng: random.Random, subject_id: int, hadm_id: int, person: _Person, admission: _Admission, providers: list[str]
) -> tuple:
    """One admissions.csv row; insurance may change between stays, language and marital status rarely do."""
    ed_registered, ed_out = admission.ed_times or (None, None)
    return (
        subject_id,
        hadm_id,
        admission.admit.strftime(_TIME_FORMAT),
        admission.discharge.strftime(_TIME_FORMAT),
        admission.discharge.strftime(_TIME_FORMAT) if admission.died else "",
        admission.admission_type,
        "" if rng.random() < 0.02 else rng.choice(providers),
        admission.location,
        "DIED" if admission.died else admission.discharge_location,
        person.insurance if rng.random() < 0.85 else INSURANCE_WEIGHTS.pick(rng),
        person.language,
        person.marital_status,
        admission.race,
        ed_registered.strftime(_TIME_FORMAT) if ed_registered else "",
        ed_out.strftime(_TIME_FORMAT) if ed_out else "",
        1 if admission.died else 0,
    )


def _unique_hadm_id(rng: random.Random, used: set[int]) -> int:
    """hadm_id is 8 digits starting with 2 and unique across the table."""
    hadm_id = rng.randint(20_000_000, 29_999_999)
    while hadm_id in used:
        hadm_id = rng.randint(20_000_000, 29_999_999)
    used.add(hadm_id)
    return hadm_id


def _linked_subjects(seed: int, cxr_subjects: list[int]) -> set[int]:
    """~15 % of CXR patients never appear in MIMIC-IV; keep at least one of each kind when possible."""
    rng = random.Random(f"mimic_cxr:{seed}:mimic_iv_link")
    linked = {subject_id for subject_id in cxr_subjects if rng.random() >= MIMIC_IV_UNLINKED_RATE}
    if len(cxr_subjects) >= 3 and len(linked) == len(cxr_subjects):
        linked.discard(rng.choice(cxr_subjects))
    if cxr_subjects and not linked:
        linked.add(rng.choice(cxr_subjects))
    return linked


def _mimic_iv_only_subjects(seed: int, cxr_subjects: list[int]) -> list[int]:
    """MIMIC-IV patients never imaged, so a join must not assume every row is a CXR patient."""
    rng = random.Random(f"mimic_cxr:{seed}:mimic_iv_only")
    taken = set(cxr_subjects)
    extra: set[int] = set()
    while len(extra) < max(1, round(MIMIC_IV_ONLY_PATIENT_SHARE * len(cxr_subjects))):
        subject_id = rng.randint(10_000_000, 19_999_999)
        if subject_id not in taken:
            extra.add(subject_id)
    return sorted(extra)


def _patient_row(
    rng: random.Random, subject_id: int, person: _Person, events: list[datetime], admissions: list[_Admission]
) -> tuple:
    """anchor_year sits on the same shifted calendar as StudyDate, at or up to two years before the
    first event, so age at any study = anchor_age + (study year - anchor_year) is adult."""
    first = min(events)
    span = max(events).year - first.year
    offset = rng.randint(0, 2)
    if person.age_at_first_study - offset < 18:
        offset = 0
    age_at_anchor = person.age_at_first_study - offset
    real_first_year = rng.randint(2011, max(2011, 2016 - span))
    dod = ""
    if admissions and admissions[-1].died:
        dod = admissions[-1].discharge.strftime("%Y-%m-%d")
    elif rng.random() < 0.10:
        last = max([*events, *(admission.discharge for admission in admissions)])
        dod = (last + timedelta(days=rng.randint(1, 365))).strftime("%Y-%m-%d")
    return (
        subject_id,
        person.gender,
        91 if age_at_anchor > 89 else age_at_anchor,
        first.year - offset,
        _anchor_year_group(real_first_year - offset),
        dod,
    )


def _write_mimic_iv(out_dir: Path, seed: int, studies: list[StudySpec]) -> dict:
    """Write hosp/patients and hosp/admissions for linked CXR patients plus some never imaged."""
    events_by_subject: dict[int, list[datetime]] = {}
    year_by_study: dict[int, tuple[int, int]] = {}
    for study in studies:
        events_by_subject.setdefault(study.subject_id, []).append(_study_datetime(study))
        year_by_study[study.study_id] = (study.subject_id, study.study_date // 10000)
    cxr_subjects = sorted(events_by_subject)
    linked = _linked_subjects(seed, cxr_subjects)
    mimic_iv_only = _mimic_iv_only_subjects(seed, cxr_subjects)
    providers = _provider_ids(seed, "admit", max(20, len(cxr_subjects) // 10))
    used_hadm: set[int] = set()
    anchors: dict[int, tuple[int, int]] = {}
    truth: Counter[str] = Counter()
    conflicting: list[int] = []

    with ExitStack() as stack:
        patients = stack.enter_context(_gzip_csv(out_dir / MIMIC_IV_PATIENTS_FILE, MIMIC_IV_PATIENTS_COLUMNS))
        admissions_out = stack.enter_context(_gzip_csv(out_dir / MIMIC_IV_ADMISSIONS_FILE, MIMIC_IV_ADMISSIONS_COLUMNS))
        for subject_id in sorted(linked | set(mimic_iv_only)):
            rng = random.Random(f"mimic_cxr:{seed}:mimic_iv:{subject_id}")
            person = _person(seed, subject_id)
            events = events_by_subject.get(subject_id) or [
                datetime(rng.randint(2110, 2200), rng.randint(1, 12), rng.randint(1, 28))
            ]
            admissions = _admissions(rng, person, events) if rng.random() < 0.9 else []
            if admissions and rng.random() < 0.04 and admissions[-1].discharge >= max(events):
                admissions[-1].died = True
            patient = _patient_row(rng, subject_id, person, events, admissions)
            patients.writerow(patient)
            rows = [
                _admission_row(rng, subject_id, _unique_hadm_id(rng, used_hadm), person, admission, providers)
                for admission in admissions
            ]
            rows.sort(key=lambda row: row[1])  # by hadm_id
            admissions_out.writerows(rows)
            truth["patients_rows"] += 1
            truth["admissions_rows"] += len(rows)
            truth["dod_recorded"] += patient[5] != ""
            if subject_id in linked:
                anchors[subject_id] = (patient[2], patient[3])
                truth["linked_patients_with_admissions"] += bool(rows)
                truth[f"linked_gender_{person.gender}"] += 1
                truth["linked_anchor_age_91"] += patient[2] == 91
                if len({row[12] for row in rows}) > 1:
                    conflicting.append(subject_id)

    ages = [
        anchors[subject][0] + year - anchors[subject][1]
        for subject, year in year_by_study.values()
        if subject in anchors
    ]
    return {
        "patients_rows": truth["patients_rows"],
        "admissions_rows": truth["admissions_rows"],
        "linked_cxr_patients": len(linked),
        "cxr_patients_not_in_mimic_iv": len(cxr_subjects) - len(linked),
        "mimic_iv_only_patients": len(mimic_iv_only),
        "linked_patients_with_admissions": truth["linked_patients_with_admissions"],
        "patients_with_conflicting_race": len(conflicting),
        "conflicting_race_subject_ids": conflicting,
        "linked_gender": {"F": truth["linked_gender_F"], "M": truth["linked_gender_M"]},
        "linked_anchor_age_91": truth["linked_anchor_age_91"],
        "dod_recorded": truth["dod_recorded"],
        "age_at_study_min": min(ages, default=None),
        "age_at_study_max": max(ages, default=None),
    }


# --- the whole release ----------------------------------------------------------------------------


class _Tally:
    """Counts the truth while rows stream out, independently of any adapter."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.patients_per_split: dict[str, set[int]] = {split: set() for split in MIMIC_SPLITS}
        self.positives: dict[str, Counter] = {name: Counter() for name in ("chexpert", "negbio", "test_set_labeled")}
        self.uncertain: dict[str, Counter] = {name: Counter() for name in ("chexpert", "negbio", "test_set_labeled")}
        self.views: Counter = Counter()
        self.lists: dict[str, list] = {
            name: []
            for name in (
                "studies_without_label_rows",
                "studies_without_chexpert_row",
                "reports_non_ascii",
                "reports_with_addendum",
                "reports_misspelled_impression_header",
            )
        }

    def add_labels(self, labeler: str, values: dict[str, str]) -> None:
        """Count one written label row and its positive and uncertain values."""
        self.counts[f"{labeler}_rows"] += 1
        for label, value in values.items():
            self.positives[labeler][label] += value == "1.0"
            self.uncertain[labeler][label] += value == "-1.0"

    def as_dict(self) -> dict:
        """The JSON-serialisable truth, with every split and label present even when zero."""
        every_label = {"chexpert": CHEXPERT_LABELS, "negbio": CHEXPERT_LABELS, "test_set_labeled": TEST_SET_LABELS}
        c = self.counts
        return {
            "patients": sum(len(ids) for ids in self.patients_per_split.values()),
            "studies": c["studies"],
            "images": c["images"],
            "patients_per_split": {split: len(ids) for split, ids in self.patients_per_split.items()},
            "studies_per_split": {split: c[f"studies_{split}"] for split in MIMIC_SPLITS},
            "images_per_split": {split: c[f"images_{split}"] for split in MIMIC_SPLITS},
            "view_positions": dict(sorted(self.views.items())),
            "reports": c["reports"],
            "reports_with_impression": c["structure_impression_and_findings"] + c["structure_impression_only"],
            "reports_with_findings": c["structure_impression_and_findings"] + c["structure_findings_only"],
            "reports_impression_only": c["structure_impression_only"],
            "reports_findings_only": c["structure_findings_only"],
            "reports_last_paragraph_only": c["structure_last_paragraph"],
            "reports_without_sections": c["structure_no_sections"],
            "reports_with_neither_findings_nor_impression": c["structure_last_paragraph"] + c["structure_no_sections"],
            "chexpert_rows": c["chexpert_rows"],
            "negbio_rows": c["negbio_rows"],
            "test_set_labeled_rows": c["test_set_labeled_rows"],
            "positives": {
                name: {label: counter[label] for label in every_label[name]} for name, counter in self.positives.items()
            },
            "uncertain": {
                name: {label: counter[label] for label in every_label[name]} for name, counter in self.uncertain.items()
            },
            **self.lists,
        }


def _write_study(
    out: dict,
    tally: _Tally,
    archive: _ReportArchive,
    seed: int,
    study: StudySpec,
    quirks: _StudyQuirks,
    person: _Person,
    providers: dict[str, list[str]],
    test_rows: list[list],
) -> None:
    """Every row one study contributes to every file, drawn from that study's own stream."""
    rng = random.Random(f"mimic_cxr:{seed}:study:{study.study_id}")
    views = [image.view_position for image in study.images]
    procedure = _procedure(rng, views)
    stem = _study_stem(study.subject_id, study.study_id)
    for row in _metadata_rows(rng, study, procedure):
        out["metadata"].writerow(row)
        out["record_list"].writerow((study.subject_id, study.study_id, row[0], f"{stem}/{row[0]}.dcm"))
        out["image_filenames"].write(f"{stem}/{row[0]}.jpg\n")
        tally.views[row[4]] += 1
    out["split"].writerows(_split_rows(study))
    out["study_list"].writerow((study.subject_id, study.study_id, f"{stem}.txt"))
    resident = "" if rng.random() < 0.636 else rng.choice(providers["resident"])
    ordering = "" if rng.random() < 0.0016 else rng.choice(providers["ordering"])
    out["provider_list"].writerow((study.study_id, ordering, rng.choice(providers["attending"]), resident))

    state = _draw_state(rng, views, procedure)
    report = _compose_report(rng, person, study, procedure, state, quirks)
    archive.add_report(study.subject_id, study.study_id, report.text)
    _tally_study(tally, study, quirks)
    if quirks.structure == "no_sections":
        tally.lists["studies_without_label_rows"].append([study.subject_id, study.study_id])
        return
    keys = (study.subject_id, study.study_id)
    if quirks.chexpert_missing:
        tally.lists["studies_without_chexpert_row"].append(list(keys))
    else:
        chexpert = _label_row(report.mentions)
        out["chexpert"].writerow((*keys, *(chexpert.get(label, "") for label in CHEXPERT_LABELS)))
        tally.add_labels("chexpert", chexpert)
    negbio = _label_row(_negbio_mentions(rng, report.mentions))
    out["negbio"].writerow((*keys, *(negbio.get(label, "") for label in CHEXPERT_LABELS)))
    tally.add_labels("negbio", negbio)
    if quirks.test_set_labeled:
        test_row = _test_set_row(rng, study.study_id, state)
        test_rows.append(test_row)
        tally.add_labels("test_set_labeled", dict(zip(TEST_SET_LABELS, test_row[1:])))


def _tally_study(tally: _Tally, study: StudySpec, quirks: _StudyQuirks) -> None:
    """Count a study, its images and its report quirks."""
    keys = [study.subject_id, study.study_id]
    tally.counts.update(
        {
            "studies": 1,
            f"studies_{study.split}": 1,
            "images": len(study.images),
            f"images_{study.split}": len(study.images),
            "reports": 1,
            f"structure_{quirks.structure}": 1,
        }
    )
    tally.patients_per_split[study.split].add(study.subject_id)
    if quirks.non_ascii:
        tally.lists["reports_non_ascii"].append(keys)
    if quirks.addendum:
        tally.lists["reports_with_addendum"].append(keys)
    if quirks.impression_header == "IMPRESSON" and quirks.structure.startswith("impression"):
        tally.lists["reports_misspelled_impression_header"].append(keys)


def _empty_patient_dirs(seed: int, subjects: set[int]) -> list[int]:
    """The real zip has 9 empty patient folders that match no metadata row; we keep one."""
    if not subjects:
        return []
    rng = random.Random(f"mimic_cxr:{seed}:empty_dirs")
    subject_id = rng.randint(10_000_000, 19_999_999)
    while subject_id in subjects:
        subject_id = rng.randint(10_000_000, 19_999_999)
    return [subject_id]


def write_samples(
    out_dir: Path,
    *,
    patients: int = 40,
    seed: int = 0,
    cohort: list[StudySpec] | None = None,
    extract_reports: bool = False,
    mimic_iv: bool = True,
) -> dict:
    """Write MIMIC-CXR(-JPG) + MIMIC-IV hosp files under out_dir; return the generator's truth (counts).

    `cohort` (from `plan_mimic_cohort`) overrides `patients`, so other generators can share it.
    `extract_reports` also writes the unzipped `files/pXX/pNNNNNNNN/sNNNNNNNN.txt` tree;
    `mimic_iv=False` skips the MIMIC-IV files without changing any MIMIC-CXR byte.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    studies = _sorted_studies(cohort if cohort is not None else plan_mimic_cohort(patients, seed))
    quirks = _plan_quirks(studies, seed)
    empty_dirs = _empty_patient_dirs(seed, {study.subject_id for study in studies})
    providers = {
        "ordering": _provider_ids(seed, "ordering", max(20, len(studies) // 80)),
        "attending": _provider_ids(seed, "attending", 55),
        "resident": _provider_ids(seed, "resident", 115),
    }
    tally = _Tally()
    test_rows: list[list] = []

    with ExitStack() as stack:
        out = {
            "metadata": stack.enter_context(_gzip_csv(out_dir / METADATA_FILE, METADATA_COLUMNS)),
            "split": stack.enter_context(_gzip_csv(out_dir / SPLIT_FILE, SPLIT_COLUMNS)),
            "chexpert": stack.enter_context(_gzip_csv(out_dir / CHEXPERT_FILE, LABEL_COLUMNS)),
            "negbio": stack.enter_context(_gzip_csv(out_dir / NEGBIO_FILE, LABEL_COLUMNS)),
            "record_list": stack.enter_context(_gzip_csv(out_dir / RECORD_LIST_FILE, RECORD_LIST_COLUMNS)),
            "study_list": stack.enter_context(_gzip_csv(out_dir / STUDY_LIST_FILE, STUDY_LIST_COLUMNS)),
            "provider_list": stack.enter_context(_gzip_csv(out_dir / PROVIDER_LIST_FILE, PROVIDER_LIST_COLUMNS)),
            "image_filenames": stack.enter_context(
                open(out_dir / IMAGE_FILENAMES_FILE, "w", encoding="utf-8", newline="\n")
            ),
        }
        archive = _ReportArchive(out_dir / REPORTS_ZIP_FILE, out_dir if extract_reports else None, empty_dirs)
        stack.callback(archive.close)
        for subject_id, subject_studies in groupby(studies, key=lambda study: study.subject_id):
            person = _person(seed, subject_id)
            archive.start_patient(subject_id)
            for study in subject_studies:
                _write_study(out, tally, archive, seed, study, quirks[study.study_id], person, providers, test_rows)

    with _plain_csv(out_dir / TEST_SET_LABELED_FILE, TEST_SET_COLUMNS) as writer:
        writer.writerows(sorted(test_rows))

    truth = {
        "dataset": "mimic_cxr",
        "seed": seed,
        **tally.as_dict(),
        "reports_zip_empty_patient_dirs": len(empty_dirs),
        "mimic_iv": _write_mimic_iv(out_dir, seed, studies) if mimic_iv else None,
    }
    truth["files"] = sorted(
        path.relative_to(out_dir).as_posix()
        for path in out_dir.rglob("*")
        if path.is_file() and not path.relative_to(out_dir).as_posix().startswith("files/")
    )
    return truth

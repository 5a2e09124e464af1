"""CheXpert v1.0: train.csv and valid.csv, in the full or the small (downsampled) release.

Format notes, checked against the real train.csv:
- `Path` starts with `CheXpert-v1.0/` or `CheXpert-v1.0-small/`, then `train|valid/patientNNNNN/
  studyN/viewN_frontal|lateral.jpg`. Studies are numbered per patient, so the study id is
  `patientNNNNN/studyN`. Paths are stored relative to the folder holding train.csv (the release
  prefix dropped), which is also how CheXpert Plus writes them, so the two join.
- Labels: 1.0 positive, 0.0 negative, -1.0 uncertain, blank unmentioned (no row). Train labels
  come from the CheXpert labeler; valid labels are a radiologist consensus: valid.csv (same columns
  as train.csv) gives split `valid` and labeler `radiologist`, train.csv split `train` and labeler
  `chexpert` (tests/test_emitted_columns.py builds a valid.csv from real train rows).
- Views: `Frontal/Lateral` = Lateral gives LATERAL (view_source `Lateral`, AP/PA is blank there);
  a frontal's view comes from `AP/PA` (view_source `Frontal/<AP/PA>`). 16 Frontal rows say LL and
  1 says RL in AP/PA. LL and RL are DICOM's left and right lateral projections, so the two columns
  contradict each other there; the projection wins: view_position keeps LL/RL as written and those
  17 images are not frontal (view_source `Frontal/LL` keeps what the file says).
- `Age` is whole years; 0 appears in 3 train rows of an adult cohort and means unknown, so
  age_years is null there (age_source keeps the 0). `Sex` is Male/Female/Unknown.
- Bad input: a train.csv or valid.csv with a header and no rows is a SourceError. Age is read as
  text, so an age that is not a number, negative or over 120 does not cost the row: age_years is
  null, age_source keeps what was written, and a quarantine row (column `age`) says why.
- Sex, age and labels are written per image but are constant within a study and patient.
- `studyN` numbers a patient's studies: follow_up_number = N and visit_order its rank per patient.
  [U] the release says the numbers are per patient, not that they are chronological; no dates are
  given, so days_since_* are null.
- What the folder lacks is said in the dataset's notes: valid.csv absent (no `valid` split), and
  always that the test set (500 studies, radiologist labels) is not public.
- Every native column's destination is declared in SOURCE_FIELDS (tests/test_source_columns.py).
"""

from __future__ import annotations

import polars as pl

from .. import findings
from . import values
from .base import DatasetInfo, SourceFolder, SourceResult
from .csvread import read_csv
from .longitudinal import with_visits
from .quarantine import quarantine_rows

INFO = DatasetInfo(
    id="chexpert",
    name="CheXpert",
    version="1.0",
    access="registration",
    default_data="public",
    tables=("patients", "studies", "images", "labels"),
    citation="Irvin J, Rajpurkar P, Ko M, et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty "
    "Labels and Expert Comparison. AAAI 2019;33:590-597.",
    homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
    licence='Stanford CheXpert Dataset Research Use Agreement',
    licence_url='https://stanfordmlgroup.github.io/competitions/chexpert/',
    licence_note="Downloaded after reading and agreeing to a Research Use Agreement (the CheXpert page and the TensorFlow Datasets catalog); the agreement's text was not checked here.",
    bibtex="""@inproceedings{irvin2019chexpert,
  author = {Irvin, Jeremy and Rajpurkar, Pranav and Ko, Michael and Yu, Yifan and Ciurea-Ilcus, Silviana and Chute, Chris and Marklund, Henrik and Haghgoo, Behzad and Ball, Robyn and Shpanskaya, Katie and others},
  title = {{CheXpert}: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume = {33},
  pages = {590--597},
  year = {2019},
  doi = {10.1609/aaai.v33i01.3301590}
}""",
)

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
# AP/PA values that are lateral projections although Frontal/Lateral says Frontal
LATERAL_PROJECTIONS = ("LL", "RL")
HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(LABELS)
COLUMNS = {
    "Path": "VARCHAR",
    "Sex": "VARCHAR",
    "Age": "VARCHAR",
    "Frontal/Lateral": "VARCHAR",
    "AP/PA": "VARCHAR",
    **{label: "FLOAT" for label in LABELS},
}
SPLIT_FILES = {"train": ("train.csv", "chexpert"), "valid": ("valid.csv", "radiologist")}
SOURCE_FIELDS = {
    name: {
        "Path": (
            "images.path",
            "images.image_id",
            "studies.study_id",
            "patients.patient_id",
            "studies.follow_up_number",
        ),
        "Sex": ("patients.sex", "patients.sex_source"),
        "Age": ("studies.age_years", "studies.age_source"),
        "Frontal/Lateral": ("images.view_position", "images.view_source", "images.is_frontal"),
        "AP/PA": ("images.view_position", "images.view_source"),
        **{label: ("labels.raw_label", "labels.value") for label in LABELS},
    }
    for name in ("train.csv", "valid.csv")
}
TEST_NOT_PUBLIC = "the test set (500 studies, radiologist consensus labels) is not public: no test split"
PATH_PATTERN = r"^(?:CheXpert-v1\.0(?:-small)?/)?((?:train|valid|test)/(patient\d+)/(study\d+)/(view\d+_(?:frontal|lateral))\.jpg)$"


class CheXpert:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        names = [src.first_existing(name) for name, _ in SPLIT_FILES.values()]
        if not any(names):
            src.require(*(name for name, _ in SPLIT_FILES.values()))
        return [n for n in names if n]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        frames, quarantine, files = [], [], []
        for split, (name, labeler) in SPLIT_FILES.items():
            found = src.first_existing(name)
            if not found:
                continue
            read = read_csv(src, found, columns=COLUMNS, header=HEADER, target_table="images", require_rows=True)
            quarantine.append(read.rejects)
            rows = read.frame.with_columns(
                pl.col("Path")
                .str.extract_groups(PATH_PATTERN)
                .struct.rename_fields(["path", "patient_id", "study", "view"])
                .alias("_parts")
            ).unnest("_parts")
            bad = rows.filter(pl.col("path").is_null())
            quarantine.append(
                quarantine_rows(
                    bad.with_columns(_raw=pl.col("Path")),
                    target_table="images",
                    source_file=src.display(found),
                    column="Path",
                    reason="Path is not CheXpert-v1.0[-small]/<split>/patientN/studyN/viewN_<view>.jpg",
                )
            )
            rows = rows.filter(pl.col("path").is_not_null())
            quarantine.append(values.age_quarantine(read, rows, "Age"))
            frames.append(rows.with_columns(pl.lit(split).alias("split"), pl.lit(labeler).alias("labeler")))
            files.append(found)
        if not frames:
            src.require(*(name for name, _ in SPLIT_FILES.values()))
        rows = pl.concat(frames).with_columns(
            (pl.col("patient_id") + "/" + pl.col("study")).alias("study_id"),
            (pl.col("patient_id") + "/" + pl.col("study") + "/" + pl.col("view")).alias("image_id"),
        )
        view = (
            pl.when(pl.col("Frontal/Lateral") == "Lateral")
            .then(pl.lit("LATERAL"))
            .otherwise(values.view_position(pl.col("AP/PA")))
        )
        age = values.age_years(pl.col("age"))
        tables = {
            "patients": rows.group_by("patient_id", maintain_order=True)
            .agg(pl.col("Sex").first().alias("sex_source"))
            .with_columns(values.sex(pl.col("sex_source")).alias("sex")),
            "studies": with_visits(
                rows.group_by("study_id", maintain_order=True)
                .agg(
                    pl.col("patient_id").first(),
                    pl.col("split").first(),
                    pl.col("Age").first().alias("age"),
                    pl.col("study").first(),
                )
                .select(
                    "study_id",
                    "patient_id",
                    "split",
                    pl.when(age > 0).then(age).alias("age_years"),  # 0 means unknown
                    pl.col("age").alias("age_source"),
                    pl.col("study").str.strip_prefix("study").cast(pl.Int32, strict=False).alias("follow_up_number"),
                ),
                [pl.col("follow_up_number")],
            ),
            "images": rows.select(
                "image_id",
                "study_id",
                "patient_id",
                "split",
                view.alias("view_position"),
                pl.when(pl.col("Frontal/Lateral") == "Lateral")
                .then(pl.lit("Lateral"))
                .otherwise(pl.col("Frontal/Lateral") + pl.lit("/") + pl.col("AP/PA").fill_null(""))
                .alias("view_source"),
                ((pl.col("Frontal/Lateral") == "Frontal") & ~view.is_in(LATERAL_PROJECTIONS)).alias("is_frontal"),
                "path",
            ),
            "labels": _labels(rows),
        }
        notes = [
            f"{name} was not in the source folder: no {split} split"
            for split, (name, _) in SPLIT_FILES.items()
            if not src.first_existing(name)
        ]
        return SourceResult(tables, quarantine, files, notes + [TEST_NOT_PUBLIC])


def _labels(rows: pl.DataFrame) -> pl.DataFrame:
    # One label column at a time, its blank cells dropped before anything is copied: the rows an unpivot gives
    # (label by label, each in file order), without its 14 rows per image (3.1 M with their ids for the real
    # train.csv, of which 850 k are kept), which were the ingest's largest frame.
    long = pl.concat(
        [
            rows.filter(pl.col(label).is_not_null()).select(
                "study_id",
                "image_id",
                "labeler",
                pl.lit(label).alias("raw_label"),
                pl.col(label).cast(pl.Int8).alias("value"),
            )
            for label in LABELS
        ]
    )
    # The raw labels are the 14 column names whatever the labeler, so one lookup serves all rows.
    return findings.with_findings(long, "chexpert")


ADAPTER = CheXpert()

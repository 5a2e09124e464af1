"""RSNA Pneumonia Detection Challenge: stage_2_train_labels.csv and the stage 2 training DICOM headers.

Format notes, checked against the real files (torchxrayvision 1.5.7's copies):
- stage_2_train_labels.csv (`patientId,x,y,width,height,Target`; read from the download's zip,
  stage_2_train_labels.csv.zip, or unzipped): 30,227 rows for 26,684 images. `Target` 1 means the
  annotating radiologists saw evidence of pneumonia; each such row carries one box (x, y, width,
  height in pixels of the 1024 x 1024 image), and an image with several boxes has several rows with
  the same Target. Target 0 rows have no box.
- stage_2_train_images_dicom_headers.csv (torchxrayvision's extract of the DICOM headers; its first
  column is an unnamed row index): one row per image, `PatientID` = the DICOM file stem = the labels'
  patientId, `PatientAge` in whole years, `PatientSex` M/F, `ViewPosition` PA/AP, `PixelSpacing` one
  number (square pixels, so pixel_spacing_x = pixel_spacing_y), `PatientOrientation` (blank in the
  extract) images.patient_orientation; BodyPartExamined, ConversionType, InstanceNumber, Modality,
  SamplesPerPixel and SeriesNumber go to images.source_attributes (SOURCE_FIELDS names every column).
- RSNA's `patientId` names one image (one image per id in the challenge), so an image is its own
  study and patient: patients get sex, studies age, images view and pixel spacing. Split `train`
  (the stage 2 training set; the test labels were never released).
- labels: one row per image, raw_label `Target` (value 1/0), labeler `radiologist`, reader null
  (the challenge publishes one label per image, not the individual readers'). boxes: one per Target 1
  row, raw_label `Target`, source `radiologist`.

Bad input (quarantined with reason and raw record): a label row whose image is not in the headers,
whose Target is not 0/1, disagrees with another row of its image, or whose box is missing, partial
or not positive in size (or present on a Target 0 row); a header row whose Filename is not
`<PatientID>.dcm`, or a PatientID given twice. An age over 120 years (5 real rows say 148-155) is
null in age_years, kept in age_source, with a quarantine row (column `age`). A header-only file is a
SourceError.
"""

from __future__ import annotations

import shutil
import zipfile

import polars as pl

from .. import findings
from ..scratch import scratch_dir
from . import values
from .base import ZIP_MEMBER_ERRORS, DatasetInfo, SourceError, SourceFolder, SourceResult
from .csvread import CsvRead, Rejects, read_csv

INFO = DatasetInfo(
    id="rsna_pneumonia",
    name="RSNA Pneumonia Detection Challenge (2018)",
    version="stage 2 training set (torchxrayvision 1.5.7)",
    access="registration",
    default_data="public",
    tables=("patients", "studies", "images", "labels", "boxes"),
    citation="Shih G, Wu CC, Halabi SS, Kohli MD, Prevedello LM, Cook TS, et al. Augmenting the National "
    "Institutes of Health Chest Radiograph Dataset with Expert Annotations of Possible Pneumonia. "
    "Radiology: Artificial Intelligence 2019;1(1):e180041. doi:10.1148/ryai.2019180041",
    homepage="https://www.rsna.org/rsnai/ai-image-challenge/rsna-pneumonia-detection-challenge-2018",
    licence='RSNA terms of use (research, education, commercial or non-commercial use, with attribution)',
    licence_url='https://www.rsna.org/rsnai/ai-image-challenge/rsna-pneumonia-detection-challenge-2018',
    licence_note="As RSNA's challenge page states it; the data are downloaded from Kaggle after accepting the competition rules.",
    bibtex="""@article{shih2019rsnapneumonia,
  author = {Shih, George and Wu, Carol C. and Halabi, Safwan S. and Kohli, Marc D. and Prevedello, Luciano M. and Cook, Tessa S. and others},
  title = {Augmenting the National Institutes of Health Chest Radiograph Dataset with Expert Annotations of Possible Pneumonia},
  journal = {Radiology: Artificial Intelligence},
  volume = {1},
  number = {1},
  pages = {e180041},
  year = {2019},
  doi = {10.1148/ryai.2019180041}
}""",
)

LABELS_FILE = "stage_2_train_labels.csv"
LABELS_ZIP = LABELS_FILE + ".zip"
HEADERS_FILE = "stage_2_train_images_dicom_headers.csv"
LABELS_HEADER = "patientId,x,y,width,height,Target"
LABELS_COLUMNS = {
    "patientId": "VARCHAR",
    "x": "FLOAT",
    "y": "FLOAT",
    "width": "FLOAT",
    "height": "FLOAT",
    "Target": "INTEGER",
}
HEADERS_HEADER = (
    ",BodyPartExamined,ConversionType,Filename,InstanceNumber,Modality,PatientAge,PatientID,"
    "PatientOrientation,PatientSex,PixelSpacing,SamplesPerPixel,SeriesNumber,ViewPosition"
)
HEADERS_COLUMNS = {
    "row_index": "VARCHAR",
    "BodyPartExamined": "VARCHAR",
    "ConversionType": "VARCHAR",
    "Filename": "VARCHAR",
    "InstanceNumber": "VARCHAR",
    "Modality": "VARCHAR",
    "PatientAge": "VARCHAR",
    "PatientID": "VARCHAR",
    "PatientOrientation": "VARCHAR",
    "PatientSex": "VARCHAR",
    "PixelSpacing": "FLOAT",
    "SamplesPerPixel": "VARCHAR",
    "SeriesNumber": "VARCHAR",
    "ViewPosition": "VARCHAR",
}
ROW_INDEX = "(unnamed: the extract's row index, not a DICOM field)"
MARKERS = (ROW_INDEX,)
# Where every column of the native files goes (tests/test_source_columns.py).
SOURCE_FIELDS = {
    LABELS_FILE: {
        "patientId": ("labels.image_id", "boxes.image_id"),
        "x": "boxes.x",
        "y": "boxes.y",
        "width": "boxes.w",
        "height": "boxes.h",
        "Target": ("labels.value", "labels.raw_label"),
    },
    HEADERS_FILE: {
        "": ROW_INDEX,
        "PatientID": ("images.image_id", "studies.study_id", "patients.patient_id"),
        "Filename": "images.path",
        "PatientAge": ("studies.age_years", "studies.age_source"),
        "PatientSex": ("patients.sex", "patients.sex_source"),
        "PixelSpacing": ("images.pixel_spacing_x", "images.pixel_spacing_y"),
        "ViewPosition": ("images.view_position", "images.view_source", "images.is_frontal"),
        "PatientOrientation": "images.patient_orientation",
        **dict.fromkeys(
            ("BodyPartExamined", "ConversionType", "InstanceNumber", "Modality", "SamplesPerPixel", "SeriesNumber"),
            "images.source_attributes",
        ),
    },
}
BOX = ("x", "y", "width", "height")
RAW_LABEL = "Target"


class _Unzipped(SourceFolder):
    """A scratch folder holding one member of a zip, named in messages as `<zip>/<member>`."""

    def __init__(self, folder: str, archive_display: str):
        super().__init__(folder)
        self.archive_display = archive_display

    def display(self, name: str) -> str:
        return f"{self.archive_display}/{name}"


class RsnaPneumonia:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        labels = src.first_existing(LABELS_FILE) or (LABELS_ZIP if src.exists(LABELS_ZIP) else None)
        if labels is None:
            labels = src.require(LABELS_FILE, LABELS_ZIP)  # neither is there: raises, naming both
        return [labels, src.require(HEADERS_FILE)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        labels_name, headers_name = self.source_files(src)
        headers = read_csv(
            src, headers_name, columns=HEADERS_COLUMNS, header=HEADERS_HEADER, target_table="images", require_rows=True
        )
        if labels_name.endswith(".zip"):
            tmp = scratch_dir("rsna")
            try:
                labels = _read_zipped(src, labels_name, tmp)
                return self._tables(src, headers, headers_name, labels, labels_name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        labels = read_csv(
            src, labels_name, columns=LABELS_COLUMNS, header=LABELS_HEADER, target_table="labels", require_rows=True
        )
        return self._tables(src, headers, headers_name, labels, labels_name)

    def _tables(self, src, headers, headers_name, labels, labels_name) -> SourceResult:
        # --- the DICOM headers: one image (= study = patient) per row
        hrej = Rejects(headers, src.display(headers_name))
        h = headers.frame
        blank = pl.col("PatientID").is_null() | (pl.col("PatientID").str.strip_chars() == "")
        hrej.add(h.filter(blank), table="images", column="PatientID", reason="PatientID is blank")
        h = h.filter(~blank)
        wrong_file = pl.col("Filename").is_null() | (pl.col("Filename") != pl.col("PatientID") + ".dcm")
        hrej.add(h.filter(wrong_file), table="images", column="Filename", reason="Filename is not <PatientID>.dcm")
        h = h.filter(~wrong_file)
        twice = pl.len().over("PatientID") > 1
        hrej.add(
            h.filter(twice), table="images", column="PatientID", reason="PatientID appears on more than one header row"
        )
        h = h.filter(~twice)
        quarantine = [headers.rejects, *hrej.frames(), values.age_quarantine(headers, h, "PatientAge")]
        h = h.with_columns(pl.col("PatientID").alias("image_id"))
        known = set(h["image_id"])

        # --- the labels: one Target per image, one box per Target 1 row
        lrej = Rejects(labels, labels.src.display(labels.name))
        rows = labels.frame
        unknown = rows.filter(pl.col("patientId").is_null() | ~pl.col("patientId").is_in(list(known)))
        lrej.add(
            unknown,
            table="labels",
            column="patientId",
            reason="patientId is blank or not in stage_2_train_images_dicom_headers.csv",
        )
        rows = rows.filter(pl.col("patientId").is_in(list(known)))
        bad_target = pl.col("Target").is_null() | ~pl.col("Target").is_in([0, 1])
        lrej.add(rows.filter(bad_target), table="labels", column="Target", reason="Target is not 0 or 1")
        rows = rows.filter(~bad_target)
        conflict = pl.col("Target").n_unique().over("patientId") > 1
        lrej.add(rows.filter(conflict), table="labels", column="Target", reason="the image's rows disagree on Target")
        rows = rows.filter(~conflict)
        given = pl.sum_horizontal(*[pl.col(c).is_not_null().cast(pl.Int8) for c in BOX])
        bad_box = (
            (pl.col("Target") == 1)
            & (
                (given < len(BOX))
                | (pl.col("width") <= 0)
                | (pl.col("height") <= 0)
                | (pl.col("x") < 0)
                | (pl.col("y") < 0)
            )
        ) | ((pl.col("Target") == 0) & (given > 0))
        lrej.add(
            rows.filter(bad_box),
            table="boxes",
            column="x",
            reason="a Target 1 row without a whole box of positive size, or a Target 0 row with a box",
        )
        boxes = rows.filter((pl.col("Target") == 1) & ~bad_box)
        quarantine += [labels.rejects, *lrej.frames()]

        age = pl.col("PatientAge")
        tables = {
            "patients": h.select(
                pl.col("image_id").alias("patient_id"),
                pl.col("PatientSex").alias("sex_source"),
                values.sex(pl.col("PatientSex")).alias("sex"),
            ),
            "studies": h.select(
                pl.col("image_id").alias("study_id"),
                pl.col("image_id").alias("patient_id"),
                pl.lit("train").alias("split"),
                values.age_years(age).alias("age_years"),
                age.alias("age_source"),
            ),
            "images": h.select(
                "image_id",
                pl.col("image_id").alias("study_id"),
                pl.col("image_id").alias("patient_id"),
                pl.lit("train").alias("split"),
                values.view_position(pl.col("ViewPosition")).alias("view_position"),
                pl.col("ViewPosition").alias("view_source"),
                values.is_frontal(values.view_position(pl.col("ViewPosition"))).alias("is_frontal"),
                pl.col("PixelSpacing").alias("pixel_spacing_x"),
                pl.col("PixelSpacing").alias("pixel_spacing_y"),
                ("stage_2_train_images/" + pl.col("Filename")).alias("path"),
                pl.col("PatientOrientation").alias("patient_orientation"),
                values.source_attributes(SOURCE_FIELDS[HEADERS_FILE], "images").alias("source_attributes"),
            ),
            "labels": findings.with_findings(
                rows.group_by("patientId", maintain_order=True)
                .agg(pl.col("Target").first())
                .select(
                    pl.col("patientId").alias("study_id"),
                    pl.col("patientId").alias("image_id"),
                    pl.lit(RAW_LABEL).alias("raw_label"),
                    pl.col("Target").cast(pl.Int8).alias("value"),
                    pl.lit("radiologist").alias("labeler"),
                ),
                "radiologist",
            ),
            "boxes": findings.with_findings(
                boxes.select(
                    pl.col("patientId").alias("image_id"),
                    pl.int_range(pl.len()).over("patientId").cast(pl.Int16).alias("box_index"),
                    pl.lit(RAW_LABEL).alias("raw_label"),
                    "x",
                    "y",
                    pl.col("width").alias("w"),
                    pl.col("height").alias("h"),
                    pl.lit("radiologist").alias("source"),
                ),
                "radiologist",
            ),
        }
        return SourceResult(tables, quarantine, [labels_name, headers_name])


def _read_zipped(src: SourceFolder, name: str, tmp) -> CsvRead:
    """stage_2_train_labels.csv read out of the download's zip (its one CSV member)."""
    try:
        with src.open(name) as raw, zipfile.ZipFile(raw) as archive:
            members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == LABELS_FILE]
            if len(members) != 1:
                raise SourceError(src.display(name), f"holds {len(members)} members named {LABELS_FILE}, not one")
            with archive.open(members[0]) as member, open(tmp / LABELS_FILE, "wb") as out:
                shutil.copyfileobj(member, out)
    except ZIP_MEMBER_ERRORS as e:
        raise SourceError(src.display(name), f"is not a readable zip ({e})") from None
    unzipped = _Unzipped(str(tmp), src.display(name))
    return read_csv(
        unzipped, LABELS_FILE, columns=LABELS_COLUMNS, header=LABELS_HEADER, target_table="labels", require_rows=True
    )


ADAPTER = RsnaPneumonia()

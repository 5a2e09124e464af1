"""VinDr-CXR: the training annotations as the VinBigData Kaggle competition ships them (train.csv).

Format notes, checked against the real file (torchxrayvision's vinbigdata-train.csv.gz):
- Header `image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`; 67,914 rows for 15,000
  images, each read independently by 3 of 17 radiologists (`rad_id` R1…R17). One row per finding a
  reader marked, with its box in pixels of the original DICOM (x_min, y_min, x_max, y_max); a reader
  who found none of the 14 findings writes one `No finding` row (class_id 14) with no box.
- The file says nothing of patients, views or sizes: an image is its own study and stands for its
  own patient (VinDr-CXR publishes no patient link), view is UNKNOWN (the release describes its
  images as PA, but the file does not say so per image), split is `train` (this is the training set;
  the 3,000 test images were labelled by a 5-reader consensus and are not in this file).
- labels: one row per (image, reader, class) with value 1, labeler `radiologist`, reader = rad_id.
  A reader who drew several boxes of one class on an image gives one label row. Classes a reader did
  not mark have no row (the file records what each reader marked, not negatives).
- boxes: one row per row with coordinates: x = x_min, y = y_min, w = x_max - x_min,
  h = y_max - y_min, source `radiologist`, reader = rad_id; box_index numbers an image's boxes in
  file order.

Bad input (quarantined with reason and raw record, the rest publishes): a blank image_id, class_name
or rad_id; a class_id that is not the class_name's id in VinDr's fixed list; a box with some
coordinates blank, or with x_max <= x_min, y_max <= y_min or a negative edge; a `No finding` row
with a box, or a finding row without one. A header-only file is a SourceError.
"""

from __future__ import annotations

import polars as pl

from .. import findings
from .base import DatasetInfo, SourceFolder, SourceResult
from .csvread import Rejects, read_csv

INFO = DatasetInfo(
    id="vindr_cxr",
    name="VinDr-CXR (VinBigData Chest X-ray Abnormalities Detection, training annotations)",
    version="1.0.0 training set (Kaggle VinBigData train.csv, torchxrayvision 1.5.7)",
    access="registration",
    default_data="public",
    tables=("studies", "images", "labels", "boxes"),
    citation="Nguyen HQ, Lam K, Le LT, Pham HH, Tran DQ, et al. VinDr-CXR: An open dataset of chest X-rays with "
    "radiologist's annotations. Scientific Data 2022;9:429. doi:10.1038/s41597-022-01498-w",
    homepage="https://physionet.org/content/vindr-cxr/",
    licence='unknown',
    licence_url=None,
    licence_note="The PhysioNet release is credentialed access; this copy (the Kaggle VinBigData competition's train.csv) is under the competition's rules; no licence text was checked here.",
    bibtex="""@article{nguyen2022vindrcxr,
  author = {Nguyen, Ha Q. and Lam, Khanh and Le, Linh T. and Pham, Hieu H. and Tran, Dat Q. and Nguyen, Dung B. and others},
  title = {{VinDr-CXR}: An open dataset of chest X-rays with radiologist's annotations},
  journal = {Scientific Data},
  volume = {9},
  pages = {429},
  year = {2022},
  doi = {10.1038/s41597-022-01498-w}
}""",
)

FILE = "train.csv"
HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
# Where every column of train.csv goes (tests/test_source_columns.py); class_id is checked against
# class_name (VinDr's fixed list) and is then the same fact.
SOURCE_FIELDS = {
    FILE: {
        "image_id": ("images.image_id", "studies.study_id", "labels.image_id", "boxes.image_id"),
        "class_name": ("labels.raw_label", "boxes.raw_label"),
        "class_id": ("labels.raw_label", "boxes.raw_label"),
        "rad_id": ("labels.reader", "boxes.reader"),
        "x_min": "boxes.x",
        "y_min": "boxes.y",
        "x_max": "boxes.w",
        "y_max": "boxes.h",
    }
}
COLUMNS = {
    "image_id": "VARCHAR",
    "class_name": "VARCHAR",
    "class_id": "INTEGER",
    "rad_id": "VARCHAR",
    "x_min": "FLOAT",
    "y_min": "FLOAT",
    "x_max": "FLOAT",
    "y_max": "FLOAT",
}
NO_FINDING = "No finding"
CLASS_IDS = {
    "Aortic enlargement": 0,
    "Atelectasis": 1,
    "Calcification": 2,
    "Cardiomegaly": 3,
    "Consolidation": 4,
    "ILD": 5,
    "Infiltration": 6,
    "Lung Opacity": 7,
    "Nodule/Mass": 8,
    "Other lesion": 9,
    "Pleural effusion": 10,
    "Pleural thickening": 11,
    "Pneumothorax": 12,
    "Pulmonary fibrosis": 13,
    NO_FINDING: 14,
}
EDGES = ("x_min", "y_min", "x_max", "y_max")


class VinDrCxr:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [src.require(FILE)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        name = src.require(FILE)
        read = read_csv(src, name, columns=COLUMNS, header=HEADER, target_table="labels", require_rows=True)
        rejects = Rejects(read, src.display(name))
        rows = read.frame
        for column in ("image_id", "class_name", "rad_id"):
            rejects.add(
                rows.filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")),
                table="labels",
                column=column,
                reason=f"{column} is blank",
            )
        rows = rows.filter(
            *[
                pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "")
                for c in ("image_id", "class_name", "rad_id")
            ]
        )
        expected_id = pl.col("class_name").replace_strict(CLASS_IDS, default=None, return_dtype=pl.Int32)
        wrong_class = expected_id.is_null() | pl.col("class_id").is_null() | (pl.col("class_id") != expected_id)
        rejects.add(
            rows.filter(wrong_class),
            table="labels",
            column="class_id",
            reason="class_id is not the class_name's id in VinDr-CXR's list of 15 classes",
        )
        rows = rows.filter(~wrong_class)

        given = pl.sum_horizontal(*[pl.col(c).is_not_null().cast(pl.Int8) for c in EDGES])
        partial = (given > 0) & (given < len(EDGES))
        degenerate = (given == len(EDGES)) & (
            (pl.col("x_max") <= pl.col("x_min"))
            | (pl.col("y_max") <= pl.col("y_min"))
            | (pl.col("x_min") < 0)
            | (pl.col("y_min") < 0)
        )
        no_finding = pl.col("class_name") == NO_FINDING
        box_mismatch = (no_finding & (given > 0)) | (~no_finding & (given == 0))
        rejects.add(rows.filter(partial), table="boxes", column="x_min", reason="some box coordinates are blank")
        rejects.add(
            rows.filter(degenerate),
            table="boxes",
            column="x_min",
            reason="box has x_max <= x_min, y_max <= y_min or a negative edge",
        )
        rejects.add(
            rows.filter(box_mismatch & ~partial),
            table="boxes",
            column="class_name",
            reason="a 'No finding' row has a box, or a finding row has none",
        )
        rows = rows.filter(~partial & ~degenerate & ~box_mismatch)

        images = rows.select("image_id").unique(maintain_order=True)
        tables = {
            "studies": images.select(
                pl.col("image_id").alias("study_id"),
                pl.col("image_id").alias("patient_id"),
                pl.lit("train").alias("split"),
            ),
            "images": images.select(
                "image_id",
                pl.col("image_id").alias("study_id"),
                pl.col("image_id").alias("patient_id"),
                pl.lit("train").alias("split"),
                pl.lit("UNKNOWN").alias("view_position"),
                ("train/" + pl.col("image_id") + ".dicom").alias("path"),
            ),
            "labels": findings.with_findings(
                rows.select("image_id", "rad_id", "class_name")
                .unique(maintain_order=True)
                .select(
                    pl.col("image_id").alias("study_id"),
                    "image_id",
                    pl.col("class_name").alias("raw_label"),
                    pl.lit(1, pl.Int8).alias("value"),
                    pl.lit("radiologist").alias("labeler"),
                    pl.col("rad_id").alias("reader"),
                ),
                "radiologist",
            ),
            "boxes": findings.with_findings(
                rows.filter(pl.col("x_min").is_not_null()).select(
                    "image_id",
                    pl.int_range(pl.len()).over("image_id").cast(pl.Int16).alias("box_index"),
                    pl.col("class_name").alias("raw_label"),
                    pl.col("x_min").alias("x"),
                    pl.col("y_min").alias("y"),
                    (pl.col("x_max") - pl.col("x_min")).alias("w"),
                    (pl.col("y_max") - pl.col("y_min")).alias("h"),
                    pl.lit("radiologist").alias("source"),
                    pl.col("rad_id").alias("reader"),
                ),
                "radiologist",
            ),
        }
        return SourceResult(tables, [read.rejects, *rejects.frames()], [name])


ADAPTER = VinDrCxr()

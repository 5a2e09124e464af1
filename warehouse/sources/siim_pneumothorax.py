"""SIIM-ACR Pneumothorax Segmentation: train-rle.csv, the training masks as run-length encodings.

Format notes, checked against the real file (torchxrayvision 1.5.7's siim-pneumothorax-train-rle.csv.gz):
- Header `ImageId, EncodedPixels` (with the space); 12,954 rows for 12,047 images. `ImageId` is the
  DICOM SOP Instance UID. `EncodedPixels` is `-1` for an image without pneumothorax, else one mask
  region as SIIM's run-length encoding of the 1024 x 1024 image (space-separated integers, pairs of
  offset and run length); an image with several regions has one row per region.
- The file gives no patient, view or size: an image is its own study and stands for its own patient
  (patients are not fed), view UNKNOWN, split `train` (the stage 1 training set), no path (the
  download nests each file under study and series UIDs the file does not give).
- labels: one per image, raw_label `Pneumothorax`, value 0 when its row says -1, 1 when it has mask
  rows; labeler `radiologist` (the masks were drawn by radiologists), reader null.
- boxes: one row per mask region, raw_label `Pneumothorax`, source `radiologist`, the RLE byte for byte
  in `mask_rle` and x, y, w, h null (the file gives no box; a box can be computed from the mask).

Bad input (quarantined with reason and raw record): a blank ImageId; an EncodedPixels that is neither
-1 nor an even number of space-separated non-negative integers; a -1 row for an image that also has
mask rows (the image is labelled positive from its masks). A header-only file is a SourceError.
"""

from __future__ import annotations

import polars as pl

from .. import findings
from .base import DatasetInfo, SourceFolder, SourceResult
from .csvread import Rejects, read_csv

INFO = DatasetInfo(
    id="siim_pneumothorax",
    name="SIIM-ACR Pneumothorax Segmentation (2019)",
    version="stage 1 train-rle.csv (torchxrayvision 1.5.7)",
    access="registration",
    default_data="public",
    tables=("studies", "images", "labels", "boxes"),
    citation="Zawacki A, Wu C, Shih G, Elliott J, Fomitchev M, Hussain M, et al. SIIM-ACR Pneumothorax "
    "Segmentation. Kaggle, 2019. https://kaggle.com/competitions/siim-acr-pneumothorax-segmentation",
    homepage="https://www.kaggle.com/competitions/siim-acr-pneumothorax-segmentation",
    licence='unknown',
    licence_url=None,
    licence_note='Kaggle competition data, downloaded after accepting the competition rules; no licence text was checked here.',
    bibtex="""@misc{zawacki2019siim,
  author = {Zawacki, Anna and Wu, Carol and Shih, George and Elliott, Julia and Fomitchev, Mikhail and Hussain, Mohannad and others},
  title = {{SIIM-ACR} Pneumothorax Segmentation},
  howpublished = {Kaggle},
  url = {https://kaggle.com/competitions/siim-acr-pneumothorax-segmentation},
  year = {2019}
}""",
)

FILE = "train-rle.csv"
HEADER = "ImageId, EncodedPixels"
COLUMNS = {"ImageId": "VARCHAR", "EncodedPixels": "VARCHAR"}
# Where every column of train-rle.csv goes (tests/test_source_columns.py).
SOURCE_FIELDS = {
    FILE: {
        "ImageId": ("images.image_id", "studies.study_id", "labels.image_id", "boxes.image_id"),
        " EncodedPixels": ("labels.value", "boxes.mask_rle"),
    }
}
NEGATIVE = "-1"
RAW_LABEL = "Pneumothorax"
RLE = r"^\s*\d+ \d+(?: \d+ \d+)*\s*$"


class SiimPneumothorax:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [src.require(FILE)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        name = src.require(FILE)
        read = read_csv(src, name, columns=COLUMNS, header=HEADER, target_table="labels", require_rows=True)
        rejects = Rejects(read, src.display(name))
        rows = read.frame
        blank = pl.col("ImageId").is_null() | (pl.col("ImageId").str.strip_chars() == "")
        rejects.add(rows.filter(blank), table="labels", column="ImageId", reason="ImageId is blank")
        rows = rows.filter(~blank)
        negative = pl.col("EncodedPixels").str.strip_chars() == NEGATIVE
        mask = pl.col("EncodedPixels").str.contains(RLE)
        unreadable = pl.col("EncodedPixels").is_null() | ~(negative | mask)
        rejects.add(
            rows.filter(unreadable),
            table="boxes",
            column="EncodedPixels",
            reason="EncodedPixels is neither -1 nor pairs of non-negative integers",
        )
        rows = rows.filter(~unreadable)
        has_mask = mask.any().over("ImageId")
        rejects.add(
            rows.filter(negative & has_mask),
            table="labels",
            column="EncodedPixels",
            reason="-1 (no pneumothorax) for an image that also has mask rows",
        )
        rows = rows.filter(~(negative & has_mask))

        images = rows.group_by("ImageId", maintain_order=True).agg(mask.any().alias("positive"))
        regions = rows.filter(mask)
        tables = {
            "studies": images.select(
                pl.col("ImageId").alias("study_id"),
                pl.col("ImageId").alias("patient_id"),
                pl.lit("train").alias("split"),
            ),
            "images": images.select(
                pl.col("ImageId").alias("image_id"),
                pl.col("ImageId").alias("study_id"),
                pl.col("ImageId").alias("patient_id"),
                pl.lit("train").alias("split"),
                pl.lit("UNKNOWN").alias("view_position"),
            ),
            "labels": findings.with_findings(
                images.select(
                    pl.col("ImageId").alias("study_id"),
                    pl.col("ImageId").alias("image_id"),
                    pl.lit(RAW_LABEL).alias("raw_label"),
                    pl.col("positive").cast(pl.Int8).alias("value"),
                    pl.lit("radiologist").alias("labeler"),
                ),
                "radiologist",
            ),
            "boxes": findings.with_findings(
                regions.select(
                    pl.col("ImageId").alias("image_id"),
                    pl.int_range(pl.len()).over("ImageId").cast(pl.Int16).alias("box_index"),
                    pl.lit(RAW_LABEL).alias("raw_label"),
                    pl.lit("radiologist").alias("source"),
                    pl.col("EncodedPixels").alias("mask_rle"),
                ),
                "radiologist",
            ),
        }
        return SourceResult(tables, [read.rejects, *rejects.frames()], [name])


ADAPTER = SiimPneumothorax()

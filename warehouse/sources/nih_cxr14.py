"""NIH ChestX-ray14: Data_Entry_2017(_v2020).csv, BBox_List_2017.csv and the split lists.

Format notes, checked against the real files:
- The header `...,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]` has commas inside
  brackets, so a CSV reader sees 11 fields named `OriginalImage[Width`, `Height]`, … We verify
  the header text exactly and name the 11 columns ourselves rather than trusting the split.
- The original Data_Entry_2017.csv ends every line with a trailing comma (a 12th, empty field).
  The v2020 revision is preferred when both are present.
- Each image is one visit (study) of one patient; the file name's suffix is not the follow-up
  number in ~21% of v2020 rows, so the study id is the image's file stem, not a derived number.
- `Finding Labels` lists only what is present ('|'-separated), so labels are positive (1) rows;
  `No Finding` is kept as a label. BBox_List_2017 names infiltration `Infiltrate`.
- train_val_list.txt / test_list.txt split by patient; train_val becomes split `train`. Without them
  every split is `unassigned`, and the dataset's notes (catalog_datasets.notes) say so.
- google2019_nih-chest-xray-labels.csv (optional; torchxrayvision's merge of Google's 2019 expert
  labels, Majkowski et al., with the NIH columns): for 4,376 NIH images, the adjudicated radiologist
  panel's YES/NO for `Fracture`, `Pneumothorax`, `Airspace opacity`, `Nodule or mass`, and `Set Id`
  (`val` or `test`). The file has adjudicated columns only, no per-reader ones, so each YES/NO is one
  labels row with labeler `radiologist`, value 1/0, reader null (a consensus, not one reader) and
  `label_split` valid/test (Google's own split; the image's `split` stays NIH's, since Google's sets
  do not cover whole NIH patients' image lists). Its NIH columns (Follow-up #, age, …) come from the
  2017 entry file and differ from v2020 in ~2,800 rows; they are not read: Data_Entry is the source
  of truth for images. An image not in Data_Entry or repeated, a value other than YES/NO or a Set Id
  other than val/test is quarantined (target labels) with its raw record.
- `Follow-up #` is studies.follow_up_number; visit_order is its rank per patient (ties by study id).
  NIH gives no dates, so days_since_first / days_since_previous are null.
- Every native column's destination is declared in SOURCE_FIELDS (tests/test_source_columns.py).

Bad input: a data entry file with a header and no rows is a SourceError. An age that is not a
number, negative or over 120 is null in age_years, kept as written in age_source, and gets a
quarantine row (column `age`, with the reason and raw record); the rest of the row publishes, and
the gate (studies.age_years_in_range) checks the harmonized age_years, so such ages never block.
The original Data_Entry_2017.csv is reported to hold a few ages over 120 (not checked here: the file
is not in the public cache); the v2020 revision read by default has none (ages 0-95, 112,120 rows:
tests/test_longitudinal.py checks it, and gates a 2017-format file with such ages end to end).
"""

from __future__ import annotations

import polars as pl

from .. import findings
from . import values
from .base import DatasetInfo, SourceFolder, SourceResult
from .csvread import Rejects, read_csv, read_lines
from .longitudinal import with_visits
from .quarantine import quarantine_rows

INFO = DatasetInfo(
    id="nih_cxr14",
    name="NIH ChestX-ray14",
    version="2017 (Data_Entry v2020 revision)",
    access="open",
    default_data="public",
    tables=("patients", "studies", "images", "labels", "boxes"),
    citation="Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray "
    "Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax "
    "Diseases. IEEE CVPR 2017, pp. 3462-3471.",
    homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
    licence='No restrictions on use; attribution required (NIH Clinical Center)',
    licence_url='https://nihcc.app.box.com/v/ChestXray-NIHCC',
    licence_note="The NIH terms as Google Cloud's NIH Chest X-ray page restates them: no restrictions on the use of the images; link to the NIH download site, cite the CVPR 2017 paper and acknowledge the NIH Clinical Center. The Google 2019 radiologist labels state no licence of their own.",
    bibtex="""@inproceedings{wang2017chestxray8,
  author = {Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and Bagheri, Mohammadhadi and Summers, Ronald M.},
  title = {{ChestX-ray8}: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {3462--3471},
  year = {2017}
}""",
)

DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BBOX_FILE = "BBox_List_2017.csv"
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
GOOGLE_FILE = "google2019_nih-chest-xray-labels.csv"
GOOGLE_FINDINGS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
GOOGLE_SETS = {"val": "valid", "test": "test"}
GOOGLE_VALUES = {"YES": 1, "NO": 0}

HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
HEADER_2017 = HEADER_2020 + ","
ENTRY_COLUMNS = {
    "image_index": "VARCHAR",
    "finding_labels": "VARCHAR",
    "follow_up": "INTEGER",
    "patient_id": "VARCHAR",
    "patient_age": "VARCHAR",
    "patient_gender": "VARCHAR",
    "view_position": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
    "spacing_x": "FLOAT",
    "spacing_y": "FLOAT",
}
GOOGLE_HEADER = HEADER_2020 + "," + ",".join(GOOGLE_FINDINGS) + ",Set Id"
GOOGLE_COLUMNS = {
    **{c: "VARCHAR" for c in ENTRY_COLUMNS},
    **{f"g{i}": "VARCHAR" for i in range(len(GOOGLE_FINDINGS))},
    "set_id": "VARCHAR",
}
EMPTY = "(no name, empty in every row)"  # a column with no header and no values: nothing to keep
# Where every column of the native files goes (table.column, or table.source_attributes).
SOURCE_FIELDS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "Data_Entry_2017_v2020.csv": {
        "Image Index": ("images.image_id", "images.path", "studies.study_id"),
        "Finding Labels": "labels.raw_label",
        "Follow-up #": ("studies.follow_up_number", "studies.visit_order"),
        "Patient ID": "patients.patient_id",
        "Patient Age": ("studies.age_years", "studies.age_source"),
        "Patient Gender": ("patients.sex", "patients.sex_source"),
        "View Position": ("images.view_position", "images.view_source"),
        "OriginalImage[Width": "images.width",
        "Height]": "images.height",
        "OriginalImagePixelSpacing[x": "images.pixel_spacing_x",
        "y]": "images.pixel_spacing_y",
    },
    "BBox_List_2017.csv": {
        "Image Index": "boxes.image_id",
        "Finding Label": "boxes.raw_label",
        "Bbox [x": "boxes.x",
        "y": "boxes.y",
        "w": "boxes.w",
        "h]": "boxes.h",
        "": EMPTY,
    },
}
SOURCE_FIELDS["Data_Entry_2017.csv"] = {**SOURCE_FIELDS["Data_Entry_2017_v2020.csv"], "": EMPTY}
ENTRY_COPY = "(Data_Entry's own column, repeated from the 2017 file: Data_Entry is read instead)"
SOURCE_FIELDS[GOOGLE_FILE] = {
    **dict.fromkeys(SOURCE_FIELDS["Data_Entry_2017_v2020.csv"], ENTRY_COPY),
    "Image Index": "labels.image_id",
    **dict.fromkeys(GOOGLE_FINDINGS, ("labels.raw_label", "labels.value")),
    "Set Id": "labels.label_split",
}
MARKERS = (EMPTY, ENTRY_COPY)  # destinations that are not columns, each with its reason
SPLITS_MISSING = (
    "official split lists (train_val_list.txt, test_list.txt) were not in the source folder: "
    "every image's split is 'unassigned'"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BBOX_COLUMNS = {"image_index": "VARCHAR", "label": "VARCHAR", "x": "FLOAT", "y": "FLOAT", "w": "FLOAT", "h": "FLOAT"}


class NihCxr14:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        names = [src.require(*DATA_ENTRY_FILES)]
        names += [
            n
            for n in (
                src.first_existing(BBOX_FILE),
                *map(src.first_existing, SPLIT_FILES.values()),
                src.first_existing(GOOGLE_FILE),
            )
            if n
        ]
        return names

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        entry_file = src.require(*DATA_ENTRY_FILES)
        trailing_comma = not entry_file.startswith("Data_Entry_2017_v2020")
        columns = dict(ENTRY_COLUMNS, **({"trailing_empty": "VARCHAR"} if trailing_comma else {}))
        entry = read_csv(
            src,
            entry_file,
            columns=columns,
            header=HEADER_2017 if trailing_comma else HEADER_2020,
            target_table="images",
            require_rows=True,
        )
        rows = entry.frame.with_columns(
            pl.col("image_index").str.replace(r"\.png$", "").alias("image_id"),
        )
        quarantine = [entry.rejects]
        no_id = rows.filter(pl.col("patient_id").is_null() | pl.col("image_index").is_null())
        quarantine.append(
            quarantine_rows(
                no_id.with_columns(_raw=pl.lit(None, pl.String)),
                target_table="images",
                source_file=src.display(entry_file),
                column="patient_id",
                reason="missing Image Index or Patient ID",
            )
        )
        rows = rows.filter(pl.col("patient_id").is_not_null() & pl.col("image_index").is_not_null())
        quarantine.append(values.age_quarantine(entry, rows, "patient_age"))
        rows = rows.with_columns(_split(src, rows).alias("split"))
        files = [entry_file]

        tables = {
            "patients": _patients(rows),
            "studies": with_visits(
                rows.select(
                    pl.col("image_id").alias("study_id"),
                    "patient_id",
                    "split",
                    values.age_years(pl.col("patient_age")).alias("age_years"),
                    pl.col("patient_age").alias("age_source"),
                    pl.col("follow_up").alias("follow_up_number"),
                ),
                [pl.col("follow_up_number")],
            ),
            "images": rows.select(
                "image_id",
                pl.col("image_id").alias("study_id"),
                "patient_id",
                "split",
                values.view_position(pl.col("view_position")).alias("view_position"),
                pl.col("view_position").alias("view_source"),
                values.is_frontal(values.view_position(pl.col("view_position"))).alias("is_frontal"),
                "width",
                "height",
                pl.col("spacing_x").alias("pixel_spacing_x"),
                pl.col("spacing_y").alias("pixel_spacing_y"),
                ("images/" + pl.col("image_index")).alias("path"),
            ),
            "labels": _labels(rows),
        }
        bbox_file = src.first_existing(BBOX_FILE)
        if bbox_file:
            boxes = read_csv(src, bbox_file, columns=BBOX_COLUMNS, header=BBOX_HEADER, target_table="boxes")
            kept, rejected = _known_image_boxes(boxes, src.display(bbox_file), set(rows["image_id"]))
            tables["boxes"] = _boxes(kept)
            quarantine += [boxes.rejects, *rejected]
            files.append(bbox_file)
        else:
            tables["boxes"] = pl.DataFrame()
        files += [n for n in map(src.first_existing, SPLIT_FILES.values()) if n]
        google_file = src.first_existing(GOOGLE_FILE)
        if google_file:
            expert, rejected = _google_labels(src, google_file, set(rows["image_id"]))
            tables["labels"] = pl.concat([tables["labels"], expert], how="diagonal_relaxed")
            quarantine += rejected
            files.append(google_file)
        notes = [] if any(src.first_existing(n) for n in SPLIT_FILES.values()) else [SPLITS_MISSING]
        if not bbox_file:
            notes.append(f"{BBOX_FILE} was not in the source folder: no boxes")
        return SourceResult(tables, quarantine, files, notes)


def _split(src: SourceFolder, rows: pl.DataFrame) -> pl.Expr:
    """The official split of each image, from the split lists when the dataset has them."""
    assignment: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        found = src.first_existing(name)
        if found:
            assignment.update(dict.fromkeys(read_lines(src, found), split))
    if not assignment:
        return pl.lit("unassigned")
    return pl.col("image_index").replace_strict(assignment, default="unassigned")


def _patients(rows: pl.DataFrame) -> pl.DataFrame:
    # Gender is per image in the file; a patient keeps the value of their first visit.
    return (
        rows.sort("follow_up", nulls_last=True)
        .group_by("patient_id", maintain_order=True)
        .agg(pl.col("patient_gender").first().alias("sex_source"))
        .with_columns(values.sex(pl.col("sex_source")).alias("sex"))
    )


def _labels(rows: pl.DataFrame) -> pl.DataFrame:
    positives = (
        rows.select("image_id", pl.col("finding_labels").str.split("|").alias("raw_label"))
        .explode("raw_label")
        .filter(pl.col("raw_label").is_not_null() & (pl.col("raw_label") != ""))
        .select(
            pl.col("image_id").alias("study_id"),
            "image_id",
            "raw_label",
            pl.lit(1, pl.Int8).alias("value"),
            pl.lit("nih_nlp").alias("labeler"),
        )
    )
    return findings.with_findings(positives, "nih_nlp")


def _google_labels(src: SourceFolder, name: str, known_images: set[str]) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The adjudicated expert labels (labeler radiologist) of Google's 2019 NIH re-read, and its bad rows."""
    read = read_csv(src, name, columns=GOOGLE_COLUMNS, header=GOOGLE_HEADER, target_table="labels", require_rows=True)
    rejects = Rejects(read, src.display(name))
    rows = read.frame.with_columns(pl.col("image_index").str.replace(r"\.png$", "").alias("image_id"))
    unknown = rows.filter(pl.col("image_id").is_null() | ~pl.col("image_id").is_in(list(known_images)))
    rejects.add(
        unknown,
        table="labels",
        column="image_index",
        reason="image is not in the NIH data entry file (or Image Index is blank)",
    )
    bad_set = rows.filter(~pl.col("set_id").is_in(list(GOOGLE_SETS)) | pl.col("set_id").is_null())
    rejects.add(bad_set, table="labels", column="set_id", reason=f"Set Id is not one of {', '.join(GOOGLE_SETS)}")
    rows = rows.filter(pl.col("image_id").is_in(list(known_images)) & pl.col("set_id").is_in(list(GOOGLE_SETS)))
    repeated = pl.int_range(pl.len()).over("image_id") > 0
    rejects.add(
        rows.filter(repeated),
        table="labels",
        column="image_index",
        reason="Image Index repeats an earlier row (the first row's labels are kept)",
    )
    rows = rows.filter(~repeated)
    long = pl.concat(
        [
            rows.select(
                "_row", "image_id", "set_id", pl.lit(finding).alias("raw_label"), pl.col(f"g{i}").alias("answer")
            )
            for i, finding in enumerate(GOOGLE_FINDINGS)
        ]
    )
    bad_value = long.filter(~pl.col("answer").is_in(list(GOOGLE_VALUES)) | pl.col("answer").is_null())
    for finding in GOOGLE_FINDINGS:
        wrong = bad_value.filter(pl.col("raw_label") == finding).rename({"answer": finding})
        rejects.add(wrong, table="labels", column=finding, reason=f"{finding} is not YES or NO")
    labels = long.filter(pl.col("answer").is_in(list(GOOGLE_VALUES))).select(
        pl.col("image_id").alias("study_id"),
        "image_id",
        "raw_label",
        pl.col("answer").replace_strict(GOOGLE_VALUES, return_dtype=pl.Int8).alias("value"),
        pl.lit("radiologist").alias("labeler"),
        pl.col("set_id").replace_strict(GOOGLE_SETS, return_dtype=pl.String).alias("label_split"),
    )
    return findings.with_findings(labels, "radiologist"), [read.rejects, *rejects.frames()]


def _known_image_boxes(read, where: str, known_images: set[str]) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Boxes on images of the data entry file; a box with a blank or unknown Image Index is quarantined.

    Such a box has no image to hang on, so publishing it would block the whole dataset at the
    boxes -> images integrity check; one bad line must not cost the other boxes.
    """
    rejects = Rejects(read, where)
    image = pl.col("image_index").str.replace(r"\.png$", "")
    known = image.is_in(list(known_images)).fill_null(False)
    rejects.add(
        read.frame.filter(~known),
        table="boxes",
        column="image_index",
        reason="image is not in the NIH data entry file (or Image Index is blank)",
    )
    return read.frame.filter(known), rejects.frames()


def _boxes(frame: pl.DataFrame) -> pl.DataFrame:
    boxes = frame.select(
        pl.col("image_index").str.replace(r"\.png$", "").alias("image_id"),
        (pl.int_range(pl.len()).over("image_index")).cast(pl.Int16).alias("box_index"),
        pl.col("label").alias("raw_label"),
        "x",
        "y",
        "w",
        "h",
        pl.lit("radiologist").alias("source"),
    )
    return findings.with_findings(boxes, "radiologist")


ADAPTER = NihCxr14()

"""ReXGradient-160K: the Hugging Face repository's per-split metadata (studies, images, reports).

Format notes (docs/datasets.md section 1; checked against the format-faithful sample, not the real
gated files):
- `metadata/{train,valid,test}_metadata.csv` is one row per study; the split is the file name's.
  Its `id` is the composite key `p<PatientID>_a<AccessionNumber>_s<StudyInstanceUid>`, the same
  string as the key of the JSON files. Report sections are inline; multi-line ones are quoted, so
  a record may span several physical lines.
- `metadata/{split}_metadata_view_position.json` is a dict keyed by that id holding per-image
  lists aligned by position (ImagePath, ImageModality, ImageShape, ImageBodyPart,
  ImageViewPosition) next to the study's scalars. We read only the image lists from it; the study
  scalars and report come from the CSV. The plain `{split}_metadata.json` is not read (it lacks
  the view positions).
- ImagePath is relative to `metadata/`: `../deid_png/<PatientID>/<AccessionNumber>/studies/
  <StudyInstanceUID>/series/<SeriesInstanceUID>/instances/<SOPInstanceUID>.png`. We store it
  relative to the repository root (`deid_png/...`, which is where the archive extracts) and take
  the SOPInstanceUID as the image id.
- Nothing read is dropped (SOURCE_FIELDS): AccessionNumber and StudyInstanceUid go to
  studies.source_attributes; the JSON's ImageModality and ImageBodyPart lists (aligned with ImagePath
  like the views) and the raw ImageShape to images.source_attributes. The JSON's study scalars repeat
  the CSV's and are not read twice. visit_order / days_since_* come from StudyDate.
- No labels. `interstitial_pattern_bbox.json` (~400 Label Studio boxes, format [U]) is not read.

Ids: study_id is the composite `id`, not StudyInstanceUid, because it is the one key every file
of the release uses (CSV `id`, JSON keys, the box file's tasks) and derived benchmarks quote it;
it contains the StudyInstanceUid (the part after `_s`), so a join on the UID stays possible.

What happens to bad input (quarantine rows name the file, record, line and column, with the record
or JSON entry as written):
- CSV: a wrong header, an empty or header-only file, a truncated gzip or a stray quote (records may
  span lines, so nobody can tell where one ends) is a SourceError naming the file and line. A record
  of the wrong width or with bytes that are not UTF-8 is quarantined whole. An empty id or PatientID:
  quarantined, the study is not loaded. An unreadable StudyDate or PatientWeight, or a PatientAge
  that is unreadable or out of range (column `age`): quarantined, the study is loaded with it null.
- JSON: a study entry whose lists do not line up, an ImagePath of the wrong shape or a bad
  ImageShape is quarantined by its key; where the text stops being JSON (cut, bytes that are not
  UTF-8) the rest is one quarantine row and every CSV study it no longer lists gets one too. A
  truncated gzip is a SourceError.
- duplicate study ids (in the CSV or as JSON keys) are left to the studies / images key checks,
  which block the ingest.

Size: the real train JSON holds 140,000 studies (~250 MB). It is parsed one study at a time with
the standard library's raw decoder (`json_object_members`), keeping only the image columns, so
memory stays at the size of the image table rather than of the whole document.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import IO, Protocol

import polars as pl

from .. import text
from . import values
from .base import DatasetInfo, SourceError, SourceFolder, SourceResult
from .csvread import Rejects, read_csv
from .longitudinal import days_of, with_visits
from .quarantine import QUARANTINE_COLUMNS, empty_quarantine, quarantine_rows

INFO = DatasetInfo(
    id="rexgradient",
    name="ReXGradient-160K",
    version="2025 (Hugging Face rajpurkarlab/ReXGradient-160K)",
    access="registration",
    default_data="samples",
    tables=("patients", "studies", "images", "reports"),
    citation="Zhang X, Acosta JN, Miller J, Huang O, Rajpurkar P. ReXGradient-160K: A Large-Scale Publicly "
    "Available Dataset of Chest Radiographs with Free-text Reports. arXiv:2505.00228, 2025.",
    homepage="https://huggingface.co/datasets/rajpurkarlab/ReXGradient-160K",
    licence='ReXGradient-160K Non-Commercial Data Access and Use Agreement',
    licence_url='https://huggingface.co/datasets/rajpurkarlab/ReXGradient-160K/blob/main/LICENSE',
    licence_note='Gated on Hugging Face: access requires accepting the agreement; non-commercial research and non-clinical use only, attributing the repository and Gradient Health.',
    bibtex="""@article{zhang2025rexgradient,
  author = {Zhang, Xiaoman and Acosta, Juli{\\'a}n N. and Miller, Josh and Huang, Ouwen and Rajpurkar, Pranav},
  title = {{ReXGradient-160K}: A Large-Scale Publicly Available Dataset of Chest Radiographs with Free-text Reports},
  journal = {arXiv preprint arXiv:2505.00228},
  year = {2025}
}""",
)

SPLITS = ("train", "valid", "test")
SECTIONS = ("Indication", "Comparison", "Findings", "Impression")
# [U] per docs/datasets.md: public loaders confirm id, StudyDate, PatientAge, PatientSex and the four
# sections; the DICOM fields (EthnicGroup, PatientWeight, InstitutionName, Manufacturer) and this exact
# order are the sample generator's reading of the paper.
HEADER = (
    "id,StudyDate,PatientID,AccessionNumber,StudyInstanceUid,PatientSex,PatientAge,EthnicGroup,"
    "PatientWeight,InstitutionName,Manufacturer,Indication,Comparison,Findings,Impression"
)
COLUMNS = {name: "VARCHAR" for name in HEADER.split(",")}
IMAGE_PATH = r"^(?:\.\./)?(deid_png/[^/]+/[^/]+/studies/[^/]+/series/[^/]+/instances/([^/]+)\.png)$"
SOURCE_FIELDS = {
    **{
        f"{split}_metadata.csv": {
            "id": "studies.study_id",
            "StudyDate": ("studies.study_date", "studies.visit_order"),
            "PatientID": "patients.patient_id",
            "AccessionNumber": "studies.source_attributes",
            "StudyInstanceUid": "studies.source_attributes",
            "PatientSex": ("patients.sex", "patients.sex_source"),
            "PatientAge": ("studies.age_years", "studies.age_source"),
            "EthnicGroup": ("patients.race", "patients.race_source", "patients.ethnicity"),
            "PatientWeight": "studies.weight_kg",
            "InstitutionName": "studies.institution",
            "Manufacturer": "studies.manufacturer",
            "Indication": "reports.indication",
            "Comparison": "reports.comparison",
            "Findings": "reports.findings",
            "Impression": "reports.impression",
        }
        for split in SPLITS
    },
    # the per-image lists of each study entry of {split}_metadata_view_position.json
    **{
        f"{split}_metadata_view_position.json": {
            "ImagePath": ("images.path", "images.image_id"),
            "ImageViewPosition": ("images.view_position", "images.view_source"),
            "ImageShape": ("images.height", "images.width", "images.source_attributes"),
            "ImageModality": "images.source_attributes",
            "ImageBodyPart": "images.source_attributes",
        }
        for split in SPLITS
    },
}
RAW_SNIPPET = 2000  # characters of a bad JSON value kept in quarantine


def csv_name(split: str) -> str:
    return f"metadata/{split}_metadata.csv"


def json_name(split: str) -> str:
    return f"metadata/{split}_metadata_view_position.json"


class ReXGradient:
    info = INFO

    def source_files(self, src: SourceFolder) -> list[str]:
        return [name for split in self._splits(src) for name in self._split_files(src, split)]

    def read(self, src: SourceFolder, progress=None, related=None) -> SourceResult:
        say = progress or (lambda _: None)
        study_parts: list[pl.DataFrame] = []
        images: list[pl.DataFrame] = []
        quarantine: list[pl.DataFrame] = []
        files: list[str] = []
        splits = self._splits(src)
        for split in splits:
            csv_file, json_file = self._split_files(src, split)
            say(f"reading {csv_file}")
            split_studies, rejected = _read_studies(src, csv_file, split)
            say(f"reading {json_file}")
            split_images, unread = _read_images(src, json_file, split_studies)
            study_parts.append(split_studies)
            images.append(split_images)
            quarantine += [*rejected, *unread]
            files += [csv_file, json_file]
        studies = pl.concat(study_parts)
        tables = {
            "patients": _patients(studies),
            "studies": with_visits(
                studies.select(
                    "study_id",
                    "patient_id",
                    "split",
                    "study_date",
                    "age_years",
                    "age_source",
                    "weight_kg",
                    "institution",
                    "manufacturer",
                    "source_attributes",
                ),
                [pl.col("study_date")],
                days_of(pl.col("study_date")),
            ),
            "images": pl.concat(images),
            "reports": _reports(studies),
        }
        missing = [s for s in SPLITS if s not in splits]
        notes = [f"no metadata for split(s) {', '.join(missing)}"] if missing else []
        return SourceResult(tables, quarantine, files, notes)

    @staticmethod
    def _splits(src: SourceFolder) -> list[str]:
        """The splits whose CSV is present; none at all is a SourceError naming what was looked for."""
        present = [split for split in SPLITS if src.first_existing(csv_name(split))]
        if not present:
            src.require(*(csv_name(split) for split in SPLITS))
        return present

    @staticmethod
    def _split_files(src: SourceFolder, split: str) -> tuple[str, str]:
        """A split needs both its CSV (studies, reports) and its view-position JSON (images)."""
        return src.require(csv_name(split)), src.require(json_name(split))


# --- studies, patients, reports (the CSV) ---------------------------------------------------
def _read_studies(src: SourceFolder, name: str, split: str) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The CSV's studies with harmonized columns; unreadable rows and values go to quarantine."""
    read = read_csv(
        src, name, columns=COLUMNS, header=HEADER, target_table="studies", one_line_records=False, require_rows=True
    )
    shown = src.display(name)
    rejects = Rejects(read, shown)
    rows = read.frame
    for column in ("id", "PatientID"):
        missing = pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
        rejects.add(
            rows.filter(missing),
            table="studies",
            column=column,
            reason=f"{column} is empty; the study cannot be keyed, so it is not loaded",
        )
        rows = rows.filter(~missing)
    rows = rows.with_columns(
        pl.col("StudyDate").str.strip_chars().str.strptime(pl.Date, "%Y%m%d", strict=False).alias("study_date"),
        pl.col("PatientWeight").str.strip_chars().cast(pl.Float32, strict=False).alias("_weight"),
    )
    rejects.add(
        rows.filter(pl.col("study_date").is_null() & pl.col("StudyDate").is_not_null()),
        table="studies",
        column="StudyDate",
        reason="StudyDate is not YYYYMMDD; study kept with a null study_date",
    )
    rejects.add(
        rows.filter(pl.col("_weight").is_null() & (pl.col("PatientWeight").str.strip_chars() != "")),
        table="studies",
        column="PatientWeight",
        reason="PatientWeight is not a number; study kept with a null weight_kg",
    )
    age_problem = values.age_problem(pl.col("PatientAge"))
    rejects.add(
        rows.filter(age_problem.is_not_null()).with_columns(
            pl.col("PatientAge").alias("age"), (age_problem + "; study kept with a null age_years").alias("_reason")
        ),
        table="studies",
        column="age",
    )
    quarantine = [read.rejects, *rejects.frames()]
    studies = rows.select(
        pl.col("id").alias("study_id"),
        pl.col("PatientID").alias("patient_id"),
        pl.lit(split).alias("split"),
        "study_date",
        values.age_years(pl.col("PatientAge")).alias("age_years"),
        pl.col("PatientAge").alias("age_source"),
        # DICOM PatientWeight (0010,1030) is in kg; 0 is what modalities write when nobody entered a weight.
        pl.when(pl.col("_weight") > 0).then(pl.col("_weight")).alias("weight_kg"),
        text.blank_to_null("InstitutionName").alias("institution"),
        text.blank_to_null("Manufacturer").alias("manufacturer"),
        pl.col("PatientSex").alias("sex_source"),
        text.blank_to_null("EthnicGroup").alias("race"),
        values.source_attributes(SOURCE_FIELDS["train_metadata.csv"], "studies").alias("source_attributes"),
        *(text.blank_to_null(section, also=("none",)).alias(section.lower()) for section in SECTIONS),
        pl.lit(shown).alias("source_file"),
    )
    return studies, quarantine


def _patients(studies: pl.DataFrame) -> pl.DataFrame:
    """One row per patient from their earliest study (the files are not in patient or date order).

    [U] per docs/datasets.md: EthnicGroup (DICOM 0010,2160) is free text that US sites fill with race
    words (WHITE, BLACK, ASIAN, W, B) far more often than ethnicity, so it is kept as written in
    `race_source` and harmonized into `race` (values.hispanic_race: HISPANIC is race `other`) and
    `ethnicity` (values.ethnicity_from_race: `hispanic` when it says so, else `unknown`); blank is `unknown`. Sex and EthnicGroup are per study in the file and constant per
    patient in every sample; a patient whose values differ keeps the earliest study's.
    """
    return (
        studies.sort("study_date", "study_id", nulls_last=True)
        .group_by("patient_id", maintain_order=True)
        .agg(pl.col("sex_source").first(), pl.col("race").first().alias("race_source"))
        .with_columns(
            values.sex(pl.col("sex_source")).alias("sex"),
            values.hispanic_race(pl.col("race_source")).alias("race"),
            values.ethnicity_from_race(pl.col("race_source")).alias("ethnicity"),
        )
    )


def _reports(studies: pl.DataFrame) -> pl.DataFrame:
    """The four pre-segmented sections; full_text joins the present ones under their headers.

    A study whose four sections are all absent (null, blank or the literal 'none') has no report row.
    """
    sections = [section.lower() for section in SECTIONS]
    full_text = pl.concat_str(
        [pl.lit(f"{section.upper()}: ") + pl.col(section) for section in sections], separator="\n\n", ignore_nulls=True
    )
    reports = studies.filter(pl.any_horizontal(pl.col(s).is_not_null() for s in sections)).select(
        "study_id", "patient_id", *sections, full_text.alias("full_text"), pl.lit("en").alias("language"), "source_file"
    )
    return text.with_token_counts(reports)


# --- images (the view-position JSON) --------------------------------------------------------
def _read_images(src: SourceFolder, name: str, studies: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Image rows of the CSV's studies; JSON entries that do not line up with the CSV are quarantined."""
    shown = src.display(name)
    columns: dict[str, list] = {name: [] for name in RAW_IMAGE_SCHEMA}
    bad: list[dict] = []
    try:
        with _open_binary(src, name) as stream:
            for member, (key, record) in enumerate(json_object_members(stream), start=1):
                problem = _image_lists_problem(record)
                if problem:
                    bad.append(_bad(shown, member, key, problem, record))
                    continue
                assert isinstance(record, dict), "an entry without a problem is a JSON object"
                _add_images(columns, member, key, record)
    except ValueError as e:  # invalid JSON or a bad UTF-8 byte: the rest of the file cannot be read
        bad.append(
            _bad(
                shown,
                None,
                None,
                f"not readable as JSON from here on; the rest is not loaded: {e}",
                getattr(e, "snippet", None),
            )
        )
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(shown, f"cannot be read ({e})") from None
    raw = pl.DataFrame(columns, schema=RAW_IMAGE_SCHEMA)
    images, quarantine = _image_rows(raw, studies, shown)
    listed = set(raw["study_id"]) | {row["value"] for row in bad if row["value"]}
    return images, [
        pl.DataFrame(bad, schema=QUARANTINE_COLUMNS),
        *quarantine,
        _studies_without_images(studies, listed, shown),
    ]


RAW_IMAGE_SCHEMA = {
    "_row": pl.Int64,
    "study_id": pl.String,
    "ImagePath": pl.String,
    "ImageViewPosition": pl.String,
    "ImageShape": pl.String,
    "height": pl.Int32,
    "width": pl.Int32,
    "shape_ok": pl.Boolean,
    "ImageModality": pl.String,
    "ImageBodyPart": pl.String,
}


def _aligned(record: dict, field: str, n: int) -> list:
    """A per-image list of text values, or n nulls when the entry lacks it or it does not line up."""
    items = record.get(field)
    if not isinstance(items, list) or len(items) != n:
        return [None] * n
    return [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in items]


def _add_images(columns: dict[str, list], member: int, key: str, record: dict) -> None:
    """Append one study's aligned per-image lists to the column lists (`_row`: the study's position)."""
    n = len(record["ImagePath"])
    shapes = record.get("ImageShape")
    shapes = shapes if isinstance(shapes, list) and len(shapes) == n else [None] * n
    columns["_row"] += [member] * n
    columns["study_id"] += [key] * n
    columns["ImagePath"] += record["ImagePath"]
    columns["ImageViewPosition"] += record["ImageViewPosition"]
    columns["ImageModality"] += _aligned(record, "ImageModality", n)
    columns["ImageBodyPart"] += _aligned(record, "ImageBodyPart", n)
    for shape in shapes:
        rows, cols, readable = _rows_columns(shape)
        columns["ImageShape"].append(None if shape is None else json.dumps(shape))
        columns["height"].append(rows)
        columns["width"].append(cols)
        columns["shape_ok"].append(readable)


def _image_lists_problem(record) -> str | None:
    """Why a study's per-image lists cannot be aligned, or None when they can."""
    if not isinstance(record, dict):
        return "study entry is not a JSON object"
    paths, views = record.get("ImagePath"), record.get("ImageViewPosition")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return "ImagePath is not a list of strings"
    if not isinstance(views, list) or len(views) != len(paths):
        return "ImageViewPosition is not a list aligned with ImagePath"
    if not all(v is None or isinstance(v, str) for v in views):
        return "ImageViewPosition holds a value that is not a string"
    return None


def _bad(file: str, member: int | None, key: str | None, reason: str, raw) -> dict:
    """A quarantine row for a whole JSON study entry (or the unreadable rest of the file).

    row_number is the entry's 1-based position among the document's studies.
    """
    raw_text = raw if isinstance(raw, str) or raw is None else json.dumps(raw, ensure_ascii=False)
    return {
        "target_table": "images",
        "source_file": file,
        "row_number": member,
        "line_number": None,
        "column_name": "" if key is None else "id",
        "value": key,
        "reason": reason,
        "raw_record": raw_text[:RAW_SNIPPET] if raw_text else None,
    }


def _image_rows(raw: pl.DataFrame, studies: pl.DataFrame, shown: str) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Canonical image rows; a path of the wrong shape or a study the CSV lacks is quarantined."""
    frame = (
        raw.with_columns(
            pl.col("ImagePath").str.extract_groups(IMAGE_PATH).struct.rename_fields(["path", "image_id"]).alias("_p"),
        )
        .unnest("_p")
        .join(studies.select("study_id", "patient_id", "split"), on="study_id", how="left")
    )
    raw_entry = pl.struct(pl.col("study_id").alias("id"), "ImagePath", "ImageViewPosition", "ImageShape")
    bad_path = frame.filter(pl.col("path").is_null()).with_columns(_raw=raw_entry.struct.json_encode())
    no_study = (
        frame.filter(pl.col("path").is_not_null() & pl.col("patient_id").is_null())
        .unique("study_id", maintain_order=True)
        .with_columns(_raw=pl.col("study_id"))
    )
    bad_shape = frame.filter(~pl.col("shape_ok")).with_columns(_raw=raw_entry.struct.json_encode())
    quarantine = [
        quarantine_rows(
            bad_path,
            target_table="images",
            source_file=shown,
            column="ImagePath",
            reason="ImagePath is not ../deid_png/<patient>/<accession>/studies/<uid>/series/<uid>/instances/<uid>.png",
            one_line_rows=False,
        ),
        quarantine_rows(
            no_study,
            target_table="images",
            source_file=shown,
            column="study_id",
            reason="study is in the JSON but not in the split's CSV; its images are not loaded",
            one_line_rows=False,
        ),
        quarantine_rows(
            bad_shape,
            target_table="images",
            source_file=shown,
            column="ImageShape",
            reason="ImageShape is not [rows, columns]; image kept with null width and height",
            one_line_rows=False,
        ),
    ]
    view = values.view_position(pl.col("ImageViewPosition"))
    images = frame.filter(pl.col("path").is_not_null() & pl.col("patient_id").is_not_null()).select(
        "image_id",
        "study_id",
        "patient_id",
        "split",
        view.alias("view_position"),
        pl.col("ImageViewPosition").alias("view_source"),
        values.is_frontal(view).alias("is_frontal"),
        "width",
        "height",
        "path",
        values.source_attributes(SOURCE_FIELDS["train_metadata_view_position.json"], "images").alias(
            "source_attributes"
        ),
    )
    return images, quarantine


def _rows_columns(shape) -> tuple[int | None, int | None, bool]:
    """(rows, columns, readable) of one ImageShape entry.

    [U] per docs/datasets.md (value format unconfirmed): read as the original DICOM pixel array's
    numpy shape, [Rows, Columns] (height first), possibly with a trailing channel count. The PNGs
    are 25 % of this. A missing shape is not an error; anything else that is not two or three
    positive ints leaves the size null and is reported.
    """
    if shape is None:
        return None, None, True
    if (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        return shape[0], shape[1], True
    return None, None, False


def _studies_without_images(studies: pl.DataFrame, listed: set[str], shown: str) -> pl.DataFrame:
    """One quarantine row per CSV study the JSON does not list (the study and report are still loaded)."""
    missing = studies.filter(~pl.col("study_id").is_in(list(listed)))
    if missing.is_empty():
        return empty_quarantine()
    return missing.select(
        pl.lit("images").alias("target_table"),
        pl.lit(shown).alias("source_file"),
        pl.lit(None, pl.Int64).alias("row_number"),
        pl.lit(None, pl.Int64).alias("line_number"),
        pl.lit("id").alias("column_name"),
        pl.col("study_id").alias("value"),
        pl.lit("study is in the split's CSV but not in this JSON; it has no images").alias("reason"),
        pl.lit(None, pl.String).alias("raw_record"),
    )


# --- streaming JSON ---------------------------------------------------------------------------
def _open_binary(src: SourceFolder, name: str) -> IO[bytes] | gzip.GzipFile:
    """The file as a binary stream, gunzipped on the fly when it is a .gz copy."""
    raw = src.open(name)
    return gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else raw


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class ByteStream(Protocol):
    """What json_object_members reads: any binary stream (a file, a GzipFile, BytesIO)."""

    def read(self, size: int = -1, /) -> bytes: ...


def json_object_members(stream: ByteStream, chunk: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """(key, value) of each member of the top-level JSON object in `stream`, decoded one at a time.

    Only the current member and one read buffer are in memory, never the whole document. A member
    cut by the buffer end fails to decode and is retried after reading more (the read size doubles
    while it keeps failing, so a huge member costs O(n log n), not O(n^2)). Raises ValueError
    (JsonStreamError, with the text found there) where the text stops being valid JSON.
    """
    reader = _Buffer(stream, chunk)
    reader.expect("{")
    more = reader.peek() != "}"
    while more:
        key = reader.decode()
        if not isinstance(key, str):
            raise reader.error("object key is not a string")
        reader.expect(":")
        yield key, reader.decode()
        more = reader.peek() != "}"
        if more:
            reader.expect(",")
    reader.expect("}")
    if reader.peek():
        raise reader.error("text after the end of the object")


class _Buffer:
    """A growing window of decoded text over a byte stream, for json_object_members."""

    def __init__(self, stream: ByteStream, chunk: int):
        self.stream, self.chunk = stream, chunk
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.pos, self.consumed, self.eof = "", 0, 0, False
        self.bad_bytes: JsonStreamError | None = None  # raised when the parser needs text past them

    def _more(self, size: int) -> bool:
        if self.bad_bytes:
            raise self.bad_bytes
        if self.eof:
            return False
        data = self.stream.read(size)
        self.eof = not data
        pending = self.utf8.getstate()[0]
        try:
            decoded = self.utf8.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            decoded = self._before_bad_bytes(pending + data, e)
        self.text = self.text[self.pos :] + decoded
        self.consumed += self.pos
        self.pos = 0
        return True

    def _before_bad_bytes(self, data: bytes, e: UnicodeDecodeError) -> str:
        """The text up to bytes that are not UTF-8; the error is kept for when the parser gets there.

        So the members before the bad bytes are still read, and the error says where they are, with
        the text around them as its raw record.
        """
        valid = data[: e.start].decode("utf-8")
        valid = valid.removeprefix("\ufeff") if not self.consumed and not self.text else valid
        at = self.consumed + len(self.text) + len(valid)
        around = (self.text[self.pos :] + valid)[-200:] + data[e.start : e.start + 40].decode(
            "utf-8", "backslashreplace"
        )
        self.bad_bytes = JsonStreamError(f"bytes that are not UTF-8 ({e.reason}) at character {at}", around)
        return valid

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the stream)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self._more(self.chunk):
                return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def decode(self):
        self.peek()
        size = self.chunk
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a number at the buffer's end may continue past it
                    self.pos = end
                    return value
            except json.JSONDecodeError:
                if self.eof and not self.bad_bytes:
                    raise self.error("invalid JSON value") from None
            self._more(size)
            size *= 2

    def error(self, message: str) -> "JsonStreamError":
        return JsonStreamError(
            f"{message} at character {self.consumed + self.pos}", self.text[self.pos : self.pos + 200]
        )


class JsonStreamError(ValueError):
    """Where a streamed JSON document stops being valid, with the text found there."""

    def __init__(self, message: str, snippet: str):
        super().__init__(message)
        self.snippet = snippet


ADAPTER = ReXGradient()

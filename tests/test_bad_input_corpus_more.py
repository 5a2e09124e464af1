"""Broken inputs for PadChest, ReXGradient, CheXpert Plus and MIMIC-Ext-CXR-QBA, one damage per case.

Each case is cut from a dataset's shipped data (the real PadChest CSV, the format-faithful samples of
the others) copied to tmp_path, with one thing damaged, and ends in one documented outcome:
- a SourceError naming the file and line (or the archive member) and, where there is one, the column;
  nothing is returned, so nothing can be published; or
- the bad record in quarantine, with its reason and raw record, and the rest published: rows in =
  rows published + rows quarantined whole. "Rows in" is counted here with the csv and json modules
  (records may span lines in all four formats), never by the code under test.
QBA is all or nothing: its damaged members are SourceErrors, except members that are not QA documents.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.gated import IngestBlocked
from warehouse.samples import chexpert_plus as plus_samples
from warehouse.samples import mimic_cxr as mimic_samples
from warehouse.samples import mimic_qba as qba_samples
from warehouse.samples import rexgradient as rex_samples
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings


# --- shared helpers -----------------------------------------------------------------------------
def render(records: list[list[str]]) -> str:
    """Records as csv.writer writes them (minimal quoting, '\\n'), as the datasets are written."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    return out.getvalue()


def read_records(path: Path) -> list[list[str]]:
    """Header and data records of a (possibly gzipped) CSV, by the csv module; bad bytes replaced."""
    data = path.read_bytes()
    data = gzip.decompress(data) if path.name.endswith(".gz") else data
    return [r for r in csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline="")) if r]


def start_lines(records: list[list[str]]) -> list[int]:
    """Physical line each data record starts on, when the records are written by `render`."""
    lines, line = [], 2
    for record in records[1:]:
        lines.append(line)
        line += render([record]).count("\n")
    return lines


def raw(record: list[str]) -> str:
    return render([record]).removesuffix("\n")


def set_field(records: list[list[str]], number: int, column: str, value: str) -> list[list[str]]:
    """A copy of the records with data record `number` (1-based) given `value` in `column`."""
    out = [list(r) for r in records]
    out[number][records[0].index(column)] = value
    return out


def whole_rows(rejected: pl.DataFrame, source: str, partial: set[str]) -> set[int]:
    """Data records of `source` quarantined whole (not just one value of a row that still publishes)."""
    mine = rejected.filter(pl.col("source_file").str.ends_with(source) & ~pl.col("column_name").is_in(list(partial)))
    return set(mine["row_number"].to_list())


def truncated_gzip(path: Path) -> Path:
    """`path` replaced by the first half of its gzip."""
    data = gzip.compress(path.read_bytes())
    target = path.with_name(path.name + ".gz")
    target.write_bytes(data[: len(data) // 2])
    path.unlink()
    return target


def damage_byte(path: Path, needle: bytes, offset: int = 0) -> None:
    """Replace one byte of `path`, `offset` bytes into the first `needle`, by bytes that are not UTF-8."""
    data = bytearray(path.read_bytes())
    at = data.index(needle) + offset
    data[at : at + 1] = b"\xff\xfe"
    path.write_bytes(bytes(data))


# =================================================================================================
# PadChest: the first records of the real CSV
# =================================================================================================
PC_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PC_RE = re.escape(PC_FILE)
PC_ROWS = 40
PC_PARTIAL = {"Rows_DICOM", "Columns_DICOM", "StudyDate_DICOM", "PatientBirth", "Labels"}  # the image stays


@pytest.fixture(scope="module")
def pc_records(public_data) -> list[list[str]]:
    """Header + PC_ROWS real records; some of them span lines (the CUI lists)."""
    with gzip.open(Path(public_data.root) / "padchest" / (PC_FILE + ".gz"), "rt", newline="") as f:
        records = list(itertools.islice(csv.reader(f), PC_ROWS + 1))
    assert any("\n" in field for record in records for field in record)
    return records


def multi_line_record(records: list[list[str]]) -> int:
    """Number of the first data record written over several lines (so line != record + 1 after it)."""
    return next(n for n, r in enumerate(records[1:], 1) if any("\n" in f for f in r))


def pc_write(folder: Path, data: list[list[str]] | str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = render(data) if isinstance(data, list) else data
    path = folder / PC_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def pc_read(folder: Path):
    return get_adapter("padchest").read(SourceFolder(str(folder)))


def pc_account(result, path: Path) -> pl.DataFrame:
    """rows in = images published + records quarantined whole; returns the quarantine."""
    rejected = result.rejected()
    assert (
        result.tables["images"].height + len(whole_rows(rejected, PC_FILE, PC_PARTIAL)) == len(read_records(path)) - 1
    )
    return rejected


def test_padchest_truncated_gzip_is_an_error_naming_the_line(tmp_path, pc_records):
    gz = truncated_gzip(pc_write(tmp_path, pc_records))
    with pytest.raises(SourceError, match=rf"{PC_RE}\.gz, line \d+: cannot be read") as err:
        pc_read(tmp_path)
    assert err.value.file.endswith(gz.name) and err.value.line > 1


@pytest.mark.parametrize(
    "data,message",
    [("", r", line 1: is empty"), (None, r": has a header but no data rows")],
    ids=["empty", "header-only"],
)
def test_padchest_empty_and_header_only_files_are_errors(tmp_path, pc_records, data, message):
    """Fix (header-only): the file read as an empty dataset."""
    pc_write(tmp_path, render(pc_records[:1]) if data is None else data)
    with pytest.raises(SourceError, match=re.escape(PC_FILE) + message):
        pc_read(tmp_path)


@pytest.mark.parametrize("change", ["drop PatientBirth", "rename Projection"])
def test_padchest_missing_or_renamed_column_is_an_error(tmp_path, pc_records, change):
    records = [list(r) for r in pc_records]
    if change == "drop PatientBirth":
        at = records[0].index("PatientBirth")
        records = [r[:at] + r[at + 1 :] for r in records]
    else:
        records[0][records[0].index("Projection")] = "View"
    pc_write(tmp_path, records)
    with pytest.raises(SourceError, match=rf"(?s){PC_RE}, line 1: unexpected header.*found:.*") as err:
        pc_read(tmp_path)
    assert (
        ("PatientBirth" not in str(err.value).split("expected:")[0])
        if change.startswith("drop")
        else ",View," in str(err.value)
    )


def test_padchest_stray_quote_opening_a_field_is_an_error_naming_the_line(tmp_path, pc_records):
    """Records span lines here, so after an unclosed quote nobody can tell where records end."""
    lines = render(pc_records).split("\n")
    lines[6] = lines[6].replace(",Manual review", ',"Manual review', 1)
    pc_write(tmp_path, "\n".join(lines))
    with pytest.raises(SourceError, match=rf"{PC_RE}, line \d+: is not valid CSV") as err:
        pc_read(tmp_path)
    assert err.value.line >= 7


def test_padchest_quote_inside_a_field_is_kept_and_merges_nothing(tmp_path, pc_records):
    lines = render(pc_records).split("\n")
    lines[6] = lines[6].replace(",Manual review", ',Manual re"view', 1)
    path = pc_write(tmp_path, "\n".join(lines))
    result = pc_read(tmp_path)
    assert pc_account(result, path).is_empty()
    assert result.tables["images"].height == PC_ROWS


def test_padchest_too_many_and_too_few_fields_are_quarantined_with_their_lines(tmp_path, pc_records):
    after = multi_line_record(pc_records) + 2  # a record after one that spans lines
    records = [list(r) for r in pc_records]
    records[3].append("extra")
    records[after] = records[after][:-1]
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    lines = start_lines(records)
    assert sorted(zip(rejected["row_number"], rejected["line_number"], rejected["column_name"])) == [
        (3, lines[2], ""),
        (after, lines[after - 1], ""),
    ]
    assert lines[after - 1] > after + 1
    reasons = dict(zip(rejected["row_number"], rejected["reason"]))
    assert "too many columns" in reasons[3] and "missing columns" in reasons[after]


def test_padchest_a_bad_value_after_a_rejected_record_names_its_own_record(tmp_path, pc_records):
    """Row numbers of the records DuckDB kept skip the one it rejected, so later quarantine rows stay aligned."""
    records = [list(r) for r in pc_records]
    records[3].append("extra")  # rejected by the reader
    tall = 4  # the record right after it: read, then quarantined by the adapter
    records = set_field(records, tall, "Rows_DICOM", "tall")
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    row = rejected.filter(pl.col("column_name") == "Rows_DICOM").to_dicts()[0]
    assert (row["row_number"], row["line_number"], row["value"]) == (tall, start_lines(records)[tall - 1], "tall")
    assert row["raw_record"] == raw(records[tall])
    assert records[2][1].removesuffix(".png") in set(result.tables["images"]["image_id"])


def test_padchest_non_utf8_bytes_are_quarantined_whole(tmp_path, pc_records):
    path = pc_write(tmp_path, pc_records)
    damage_byte(path, pc_records[8][1].encode(), 5)  # inside record 8's ImageID
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    [row] = rejected.to_dicts()
    assert (row["row_number"], row["line_number"]) == (8, start_lines(pc_records)[7])
    assert "invalid encoding" in row["reason"]
    assert pc_records[8][1].removesuffix(".png") not in set(result.tables["images"]["image_id"])


@pytest.mark.parametrize("column", ["ImageID", "StudyID", "PatientID"])
@pytest.mark.parametrize("value", ["", " ", "nan"], ids=["empty", "blank", "nan"])
def test_padchest_empty_id_is_quarantined_with_its_column_and_raw_record(tmp_path, pc_records, column, value):
    """Fix: a row without one of its ids is quarantined, named and kept raw (blank and nan ids too)."""
    number = multi_line_record(pc_records) + 3
    records = set_field(pc_records, number, column, value)
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    [row] = rejected.to_dicts()
    assert (row["row_number"], row["line_number"], row["column_name"]) == (
        number,
        start_lines(records)[number - 1],
        column,
    )
    assert row["reason"].startswith(f"{column} is empty") and row["target_table"] == "images"
    assert row["raw_record"] == raw(records[number])
    assert pc_records[number][1].removesuffix(".png") not in set(result.tables["images"]["image_id"])


def test_padchest_quarantine_keeps_a_multi_line_raw_record(tmp_path, pc_records):
    """Fix: raw_record is filled, the whole record as written even when it spans lines."""
    number = multi_line_record(pc_records)
    records = set_field(pc_records, number, "Rows_DICOM", "tall")
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    [row] = rejected.to_dicts()
    assert (row["row_number"], row["line_number"], row["column_name"], row["value"]) == (
        number,
        start_lines(records)[number - 1],
        "Rows_DICOM",
        "tall",
    )
    assert "\n" in row["raw_record"] and row["raw_record"] == raw(records[number])
    assert result.tables["images"].height == PC_ROWS
    image = result.tables["images"].filter(pl.col("image_id") == records[number][1].removesuffix(".png"))
    assert image["height"].to_list() == [None]


def test_padchest_wrong_types_are_quarantined_and_the_image_kept(tmp_path, pc_records):
    records = set_field(set_field(pc_records, 4, "StudyDate_DICOM", "2014131"), 9, "Columns_DICOM", "wide")
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    assert sorted(zip(rejected["row_number"], rejected["column_name"], rejected["value"])) == [
        (4, "StudyDate_DICOM", "2014131"),
        (9, "Columns_DICOM", "wide"),
    ]
    assert set(rejected["raw_record"]) == {raw(records[4]), raw(records[9])}
    assert result.tables["images"].height == PC_ROWS


@pytest.mark.parametrize("birth,why", [("1850.0", "is over 120 years"), ("2090.0", "is negative")])
def test_padchest_out_of_range_age_is_null_and_quarantined(tmp_path, pc_records, birth, why):
    study = pc_records[2][pc_records[0].index("StudyID")]
    records = [list(r) for r in pc_records]
    at = records[0].index("PatientBirth")
    damaged = [n for n, r in enumerate(records[1:], 1) if r[records[0].index("StudyID")] == study]
    for n in damaged:
        records[n][at] = birth
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    assert sorted(rejected["row_number"]) == damaged and set(rejected["column_name"]) == {"PatientBirth"}
    assert all(why in reason for reason in rejected["reason"]) and set(rejected["target_table"]) == {"studies"}
    assert set(rejected["raw_record"]) == {raw(records[n]) for n in damaged}
    kept = result.tables["studies"].filter(pl.col("study_id") == study).row(0, named=True)
    assert kept["age_years"] is None and kept["age_source"] == birth


def _single_image_study(records: list[list[str]]) -> int:
    studies = Counter(r[records[0].index("StudyID")] for r in records[1:])
    return next(n for n, r in enumerate(records[1:], 1) if studies[r[records[0].index("StudyID")]] == 1)


def test_padchest_empty_labels_mean_no_labels_not_an_error(tmp_path, pc_records):
    """Fix: an empty Labels field is a study without labels, not a 'not a Python list' quarantine row."""
    number = _single_image_study(pc_records)
    records = set_field(pc_records, number, "Labels", "")
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    assert pc_account(result, path).is_empty()
    study = records[number][records[0].index("StudyID")]
    assert study not in set(result.tables["labels"]["study_id"])
    assert study in set(result.tables["studies"]["study_id"]) and result.tables["images"].height == PC_ROWS


@pytest.mark.parametrize(
    "labels,why",
    [
        ("['pneumonia', 'effusion'", "is not a Python list of quoted strings"),
        ("pneumonia", "is not a Python list of quoted strings"),
        ("nan", "is 'nan' (pandas' missing value)"),
    ],
    ids=["unclosed", "bare-word", "nan"],
)
def test_padchest_malformed_labels_are_quarantined_with_a_clear_reason(tmp_path, pc_records, labels, why):
    number = _single_image_study(pc_records)
    records = set_field(pc_records, number, "Labels", labels)
    path = pc_write(tmp_path, records)
    result = pc_read(tmp_path)
    rejected = pc_account(result, path)
    [row] = rejected.to_dicts()
    assert (row["row_number"], row["column_name"], row["value"], row["target_table"]) == (
        number,
        "Labels",
        labels,
        "labels",
    )
    assert row["reason"].startswith(f"Labels {why}") and row["raw_record"] == raw(records[number])
    assert records[number][records[0].index("StudyID")] not in set(result.tables["labels"]["study_id"])


def test_padchest_duplicate_image_id_is_blocked_by_the_quality_gates(tmp_path, cache_dir, pc_records):
    records = [list(r) for r in pc_records]
    records.insert(12, list(records[5]))
    pc_write(tmp_path / "src", records)
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, padchest=tmp_path / "src"))
    with pytest.raises(IngestBlocked, match="images__key_unique"):
        wh.ingest(["padchest"], say=lambda m: None)


# =================================================================================================
# ReXGradient: the sample's per-split CSV (records span lines) and view-position JSON
# =================================================================================================
REX_PARTIAL = {"StudyDate", "PatientWeight", "age"}  # the study stays


@pytest.fixture(scope="module")
def rex_sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rexgradient")
    rex_samples.write_samples(root, patients=6, seed=3)
    return root


@pytest.fixture
def rex(rex_sample, tmp_path) -> Path:
    return Path(shutil.copytree(rex_sample, tmp_path / "rexgradient"))


def rex_csv(root: Path, split: str = "train") -> Path:
    return root / "metadata" / f"{split}_metadata.csv"


def rex_json(root: Path, split: str = "train") -> Path:
    return root / "metadata" / f"{split}_metadata_view_position.json"


def rex_read(root: Path):
    return get_adapter("rexgradient").read(SourceFolder(str(root)))


def rex_account(result, path: Path, split: str = "train") -> pl.DataFrame:
    """CSV records of the split = its studies published + its records quarantined whole."""
    rejected = result.rejected()
    studies = result.tables["studies"].filter(pl.col("split") == split).height
    assert studies + len(whole_rows(rejected, path.name, REX_PARTIAL)) == len(read_records(path)) - 1
    return rejected


def test_rex_sample_records_span_lines(rex):
    records = read_records(rex_csv(rex))
    assert start_lines(records)[-1] > len(records)  # the line-mapping cases below mean something


@pytest.mark.parametrize("which", ["csv", "json"])
def test_rex_truncated_gzip_is_an_error(rex, which):
    path = truncated_gzip(rex_csv(rex, "valid") if which == "csv" else rex_json(rex, "valid"))
    pattern = r", line \d+: cannot be read" if which == "csv" else r": cannot be read \(Compressed file ended"
    with pytest.raises(SourceError, match=re.escape(path.name) + pattern):
        rex_read(rex)


def test_rex_json_cut_in_half_quarantines_the_rest_with_every_study_it_loses(rex):
    path = rex_json(rex)
    data = path.read_bytes()
    keys = list(json.loads(data))
    path.write_bytes(data[: len(data) // 2])
    result = rex_read(rex)
    rejected = result.rejected().filter(pl.col("source_file").str.ends_with(path.name))
    cut = rejected.filter(pl.col("reason").str.starts_with("not readable as JSON from here on"))
    assert cut.height == 1 and re.search(r"at character \d+", cut["reason"][0]) and cut["raw_record"][0]
    with_images = set(result.tables["images"].filter(pl.col("split") == "train")["study_id"])
    lost = set(rejected.filter(pl.col("reason").str.contains("not in this JSON"))["value"])
    assert with_images | lost == set(keys) and not with_images & lost and with_images and lost


def test_rex_json_non_utf8_bytes_quarantine_the_rest_with_where_and_the_text(rex):
    path = rex_json(rex)
    keys = list(json.loads(path.read_bytes()))
    damage_byte(path, json.dumps(keys[2]).encode(), 8)
    damaged = path.read_bytes()
    after = damaged[damaged.index(b"\xff\xfe") + 2 :][:20].decode()  # the text right after the bad bytes
    result = rex_read(rex)
    rejected = result.rejected().filter(pl.col("source_file").str.ends_with(path.name))
    [bad] = rejected.filter(pl.col("column_name") == "").to_dicts()
    assert re.search(r"bytes that are not UTF-8 .* at character \d+", bad["reason"])
    assert keys[2][:6] in bad["raw_record"], "the raw record holds the text before the bad bytes"
    assert "\\xff\\xfe" + after in bad["raw_record"], "and the bad bytes, escaped, with the text after them"
    with_images = set(result.tables["images"].filter(pl.col("split") == "train")["study_id"])
    lost = set(rejected.filter(pl.col("reason").str.contains("not in this JSON"))["value"])
    assert with_images == set(keys[:2]) and lost == set(keys[2:])


@pytest.mark.parametrize("text,outcome", [("", "expected '{'"), ("{}", None)], ids=["empty", "no-studies"])
def test_rex_empty_json_loses_no_study_unrecorded(rex, text, outcome):
    rex_json(rex, "valid").write_text(text)
    result = rex_read(rex)
    studies = {r[0] for r in read_records(rex_csv(rex, "valid"))[1:]}
    rejected = result.rejected()
    assert set(rejected.filter(pl.col("reason").str.contains("not in this JSON"))["value"]) == studies
    assert result.tables["images"].filter(pl.col("split") == "valid").is_empty()
    unreadable = rejected.filter(pl.col("column_name") == "")["reason"].to_list()
    assert unreadable == ([] if outcome is None else [unreadable[0]]) and all(outcome in r for r in unreadable)


@pytest.mark.parametrize(
    "text,message",
    [("", r", line 1: is empty"), (None, r": has a header but no data rows")],
    ids=["empty", "header-only"],
)
def test_rex_empty_and_header_only_csv_are_errors(rex, text, message):
    """Fix: a header-only split CSV was an empty split, its JSON studies all 'not in the CSV'."""
    path = rex_csv(rex, "valid")
    path.write_text(path.read_text().split("\n")[0] + "\n" if text is None else text)
    with pytest.raises(SourceError, match=re.escape(path.name) + message):
        rex_read(rex)


@pytest.mark.parametrize("change", ["drop PatientSex", "rename PatientAge"])
def test_rex_missing_or_renamed_column_is_an_error(rex, change):
    path = rex_csv(rex)
    records = read_records(path)
    if change == "drop PatientSex":
        at = records[0].index("PatientSex")
        records = [r[:at] + r[at + 1 :] for r in records]
    else:
        records[0][records[0].index("PatientAge")] = "Age"
    path.write_text(render(records))
    with pytest.raises(SourceError, match=r"(?s)train_metadata\.csv, line 1: unexpected header.*found:"):
        rex_read(rex)


def test_rex_stray_quote_is_an_error_naming_the_line(rex):
    path = rex_csv(rex)
    records = read_records(path)
    text = render(records)
    at = text.index(records[3][0])
    path.write_text(text[:at] + '"' + text[at:])
    with pytest.raises(SourceError, match=r"train_metadata\.csv, line \d+: is not valid CSV") as err:
        rex_read(rex)
    assert err.value.line >= start_lines(records)[2]


def test_rex_too_many_and_too_few_fields_are_quarantined_with_their_lines(rex):
    path = rex_csv(rex)
    records = read_records(path)
    records[2].append("extra")
    records[5] = records[5][:-1]
    path.write_text(render(records))
    result = rex_read(rex)
    rejected = rex_account(result, path).filter(pl.col("source_file").str.ends_with(path.name))
    lines = start_lines(records)
    assert sorted(zip(rejected["row_number"], rejected["line_number"])) == [(2, lines[1]), (5, lines[4])]
    assert {records[2][0], records[5][0]}.isdisjoint(result.tables["studies"]["study_id"])


def test_rex_non_utf8_bytes_quarantine_the_record_and_its_images(rex):
    path = rex_csv(rex)
    records = read_records(path)
    damage_byte(path, records[4][0].encode(), 3)
    result = rex_read(rex)
    rejected = rex_account(result, path)
    [row] = rejected.filter(pl.col("source_file").str.ends_with(path.name)).to_dicts()
    assert (row["row_number"], row["line_number"]) == (4, start_lines(records)[3])
    assert "invalid encoding" in row["reason"]
    orphan = rejected.filter(pl.col("reason").str.contains("not in the split's CSV"))
    assert orphan["value"].to_list() == [records[4][0]]


def test_rex_empty_id_is_quarantined_whole_with_its_raw_record(rex):
    path = rex_csv(rex)
    records = set_field(read_records(path), 3, "PatientID", " ")
    path.write_text(render(records))
    result = rex_read(rex)
    rejected = rex_account(result, path)
    [row] = rejected.filter(pl.col("source_file").str.ends_with(path.name)).to_dicts()
    assert (row["row_number"], row["line_number"], row["column_name"]) == (3, start_lines(records)[2], "PatientID")
    assert row["raw_record"] == raw(records[3]) and "PatientID is empty" in row["reason"]


def test_rex_wrong_types_and_out_of_range_ages_are_quarantined_and_the_study_kept(rex):
    path = rex_csv(rex)
    records = read_records(path)
    damage = {
        1: ("StudyDate", "2020"),
        2: ("PatientWeight", "heavy"),
        3: ("PatientAge", "abc"),
        4: ("PatientAge", "150Y"),
        5: ("PatientAge", "-003Y"),
    }
    for number, (column, value) in damage.items():
        records = set_field(records, number, column, value)
    path.write_text(render(records))
    result = rex_read(rex)
    rejected = rex_account(result, path).filter(pl.col("source_file").str.ends_with(path.name))
    lines = start_lines(records)
    assert sorted(zip(rejected["row_number"], rejected["line_number"], rejected["column_name"], rejected["value"])) == [
        (n, lines[n - 1], "age" if c == "PatientAge" else c, v) for n, (c, v) in damage.items()
    ]
    assert set(rejected["raw_record"]) == {raw(records[n]) for n in damage}
    reasons = dict(zip(rejected["value"], rejected["reason"]))
    assert "not a number" in reasons["abc"] and "over 120" in reasons["150Y"] and "negative" in reasons["-003Y"]
    studies = result.tables["studies"].filter(pl.col("study_id").is_in([records[n][0] for n in (3, 4, 5)]))
    assert studies.height == 3 and studies["age_years"].is_null().all()


def test_rex_duplicate_study_id_is_blocked_by_the_quality_gates(rex, tmp_path, cache_dir):
    path = rex_csv(rex)
    records = read_records(path)
    records.insert(3, list(records[1]))
    path.write_text(render(records))
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, rexgradient=rex))
    with pytest.raises(IngestBlocked, match="studies__key_unique"):
        wh.ingest(["rexgradient"], say=lambda m: None)


# =================================================================================================
# CheXpert Plus: the sample CSV (reports span lines) and its CheXbert JSON Lines label files
# =================================================================================================
PLUS_CSV = "df_chexpert_plus_240401.csv"
PLUS_RE = re.escape(PLUS_CSV)
PLUS_LABELS = "chexbert_labels/report_fixed.json"


@pytest.fixture(scope="module")
def plus_sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chexpert_plus")
    plus_samples.write_samples(root, patients=5, seed=2)
    return root


@pytest.fixture
def plus(plus_sample, tmp_path) -> Path:
    return Path(shutil.copytree(plus_sample, tmp_path / "plus"))


def plus_read(root: Path):
    return get_adapter("chexpert_plus").read(SourceFolder(str(root)))


def study_of(path_to_image: str) -> str:
    return "/".join(path_to_image.split("/")[1:3])


def plus_account(result, records: list[list[str]], quarantined: set[int]) -> pl.DataFrame:
    """The CSV's records quarantined whole are exactly `quarantined`; every other record's study is published."""
    rejected = result.rejected()
    assert whole_rows(rejected, PLUS_CSV, {"age"}) == quarantined
    used = {study_of(r[0]) for n, r in enumerate(records[1:], 1) if n not in quarantined}
    assert set(result.tables["studies"]["study_id"]) == used
    return rejected


def label_lines(root: Path) -> list[str]:
    return (root / PLUS_LABELS).read_text(encoding="utf-8", errors="replace").split("\n")


def expected_labels(lines: list[str], skip: set[int]) -> Counter:
    """(image_id, raw_label, value) of every label of the lines (1-based) not in `skip`, by the json module."""
    expected = Counter()
    for number, line in enumerate(lines, 1):
        if number in skip or not line.strip():
            continue
        record = json.loads(line)
        image = record.pop("path_to_image").removesuffix(".jpg").split("/", 1)[1]
        expected.update((image, label, int(value)) for label, value in record.items() if value is not None)
    return expected


def label_account(result, lines: list[str], bad: set[int]) -> pl.DataFrame:
    """Label file lines in = lines whose labels are published + lines quarantined whole."""
    rejected = result.rejected().filter(pl.col("source_file").str.ends_with(PLUS_LABELS))
    assert set(rejected["line_number"]) == bad
    labels = result.tables["labels"].filter(pl.col("method") == "report")
    assert Counter(zip(labels["image_id"], labels["raw_label"], labels["value"])) == expected_labels(lines, bad)
    return rejected


def test_plus_sample_records_span_lines(plus):
    records = read_records(plus / PLUS_CSV)
    assert start_lines(records)[-1] > 2 * len(records)


@pytest.mark.parametrize(
    "name,message",
    [(PLUS_CSV, r", line \d+: cannot be read"), (PLUS_LABELS, r": is not a readable gzip file")],
    ids=["csv", "labels"],
)
def test_plus_truncated_gzip_is_an_error(plus, name, message):
    path = truncated_gzip(plus / name)
    with pytest.raises(SourceError, match=re.escape(path.name) + message):
        plus_read(plus)


@pytest.mark.parametrize(
    "text,message",
    [("", r", line 1: is empty"), (None, r": has a header but no data rows")],
    ids=["empty", "header-only"],
)
def test_plus_empty_and_header_only_csv_are_errors(plus, text, message):
    """Fix: a header-only CSV published an empty dataset next to labels for studies it does not have."""
    path = plus / PLUS_CSV
    path.write_text(path.read_text().split("\n")[0] + "\n" if text is None else text)
    with pytest.raises(SourceError, match=re.escape(PLUS_CSV) + message):
        plus_read(plus)


def test_plus_empty_label_file_is_an_error(plus):
    """Fix: an empty label file gave its method no labels, without a word."""
    (plus / PLUS_LABELS).write_text("")
    with pytest.raises(SourceError, match=r"report_fixed\.json: is empty"):
        plus_read(plus)


@pytest.mark.parametrize("change", ["drop race", "rename recent_bmi"])
def test_plus_missing_or_renamed_column_is_an_error(plus, change):
    path = plus / PLUS_CSV
    records = read_records(path)
    if change == "drop race":
        at = records[0].index("race")
        records = [r[:at] + r[at + 1 :] for r in records]
    else:
        records[0][records[0].index("recent_bmi")] = "bmi"
    path.write_text(render(records))
    with pytest.raises(SourceError, match=rf"(?s){PLUS_RE}, line 1: unexpected header.*found:"):
        plus_read(plus)


def test_plus_stray_quote_is_an_error_naming_the_line(plus):
    path = plus / PLUS_CSV
    records = read_records(path)
    text = render(records)
    at = text.index(records[4][0])
    path.write_text(text[:at] + '"' + text[at:])
    with pytest.raises(SourceError, match=rf"{PLUS_RE}, line \d+: is not valid CSV") as err:
        plus_read(plus)
    assert err.value.line >= start_lines(records)[3]


def test_plus_too_many_too_few_fields_and_bad_paths_are_quarantined(plus):
    path = plus / PLUS_CSV
    records = read_records(path)
    records[2].append("extra")
    records[6] = records[6][:-1]
    records = set_field(records, 9, "path_to_image", "CheXpert-v1.0/oops.jpg")
    path.write_text(render(records))
    result = plus_read(plus)
    rejected = plus_account(result, records, {2, 6, 9})
    lines = start_lines(records)
    assert sorted(zip(rejected["row_number"], rejected["line_number"], rejected["column_name"])) == [
        (2, lines[1], ""),
        (6, lines[5], ""),
        (9, lines[8], "path_to_image"),
    ]
    assert rejected.filter(pl.col("row_number") == 9)["raw_record"].to_list() == [raw(records[9])]


def test_plus_non_utf8_bytes_are_quarantined_whole(plus):
    path = plus / PLUS_CSV
    records = read_records(path)
    damage_byte(path, records[5][0].encode(), 9)
    result = plus_read(plus)
    rejected = plus_account(result, records, {5})
    assert rejected["line_number"].to_list() == [start_lines(records)[4]]
    assert "invalid encoding" in rejected["reason"][0]


def test_plus_repeated_image_row_is_quarantined(plus):
    """Fix: a second row for one image vanished into its study without a trace."""
    path = plus / PLUS_CSV
    records = read_records(path)
    records.insert(6, list(records[3]))
    path.write_text(render(records))
    result = plus_read(plus)
    rejected = plus_account(result, records, {6})
    [row] = rejected.to_dicts()
    assert row["column_name"] == "path_to_image" and row["value"] == records[3][0]
    assert "repeats data record 3" in row["reason"] and row["raw_record"] == raw(records[6])


@pytest.mark.parametrize("age,why", [("abc", "not a number"), ("150", "over 120"), ("-1", "negative")])
def test_plus_bad_age_is_quarantined_and_null(plus, age, why):
    """Fix: an unreadable age was silently null and 150 was published as an age."""
    path = plus / PLUS_CSV
    records = read_records(path)
    study = study_of(records[1][0])
    damaged = [n for n, r in enumerate(records[1:], 1) if study_of(r[0]) == study]
    for n in damaged:
        records = set_field(records, n, "age", age)
    path.write_text(render(records))
    result = plus_read(plus)
    rejected = plus_account(result, records, set())
    assert sorted(rejected["row_number"]) == damaged and set(rejected["column_name"]) == {"age"}
    assert all(why in reason for reason in rejected["reason"])
    assert set(rejected["raw_record"]) == {raw(records[n]) for n in damaged}
    kept = result.tables["studies"].filter(pl.col("study_id") == study).row(0, named=True)
    assert kept["age_years"] is None and kept["age_source"] == age


def test_plus_label_file_cut_in_half_quarantines_its_broken_last_line(plus):
    path = plus / PLUS_LABELS
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    lines = label_lines(plus)
    assert lines[-1] and not lines[-1].endswith("}")
    rejected = label_account(plus_read(plus), lines, {len(lines)})
    assert rejected["reason"][0].startswith("not a JSON object") and rejected["raw_record"][0] == lines[-1]


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda r: {**r, "Edema": "yes"}, "label value is not a number or null: Edema"),
        (lambda r: {**r, "Edema": True}, "label value is not a number or null: Edema"),
        (
            lambda r: {**{k: v for k, v in r.items() if k != "Edema"}, "Edemaa": 1.0},
            "keys that are not path_to_image or a CheXbert label: Edemaa",
        ),
        (lambda r: {k: v for k, v in r.items() if k != "path_to_image"}, "record has no path_to_image string"),
        (lambda r: [r], "record is not a JSON object"),
    ],
    ids=["string", "bool", "renamed-key", "no-path", "array"],
)
def test_plus_bad_label_records_are_quarantined_by_line(plus, damage, why):
    lines = label_lines(plus)
    lines[3] = json.dumps(damage(json.loads(lines[3])))
    (plus / PLUS_LABELS).write_text("\n".join(lines))
    rejected = label_account(plus_read(plus), lines, {4})
    assert rejected["reason"].to_list() == [why] and rejected["raw_record"].to_list() == [lines[3]]


def test_plus_non_utf8_label_line_is_quarantined(plus):
    path = plus / PLUS_LABELS
    damage_byte(path, b"Cardiomegaly", 2)
    lines = label_lines(plus)
    bad = next(n for n, line in enumerate(lines, 1) if "\ufffd" in line)
    rejected = label_account(plus_read(plus), lines, {bad})
    assert rejected["reason"][0].startswith("not UTF-8 text")


def test_plus_label_line_repeating_an_image_is_quarantined(plus):
    """Fix: a repeated line published each of its labels twice."""
    lines = label_lines(plus)
    lines.insert(5, lines[1])
    (plus / PLUS_LABELS).write_text("\n".join(lines))
    rejected = label_account(plus_read(plus), lines, {6})
    assert rejected["reason"][0] == "path_to_image is already labelled on line 2; this line is not used"


# =================================================================================================
# MIMIC-Ext-CXR-QBA: qa.zip / scene_data.zip members, quality_mappings.csv, the metadata levels
# =================================================================================================
@pytest.fixture(scope="module")
def qba_sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qba")
    cohort = plan_mimic_cohort(3, 5)
    mimic_samples.write_samples(root / "mimic_cxr", cohort=cohort, seed=5)
    qba_samples.write_samples(root / "mimic_qba", cohort=cohort, seed=5, exports=False, questions_per_study=4)
    return root


@pytest.fixture
def qba(qba_sample, tmp_path) -> Path:
    return Path(shutil.copytree(qba_sample / "mimic_qba", tmp_path / "mimic_qba"))


def qba_read(root: Path, mimic: Path):
    """Read and stream every batch, as the stager does; returns (result, rows per table)."""
    result = get_adapter("mimic_qba").read(SourceFolder(str(root)), related={"mimic_cxr": SourceFolder(str(mimic))})
    rows = Counter({name: frame.height for name, frame in result.tables.items()})
    for name, frame in result.batches:
        rows[name] += frame.height
    return result, rows


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def rezip(path: Path, contents: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def damage_member(root: Path, change) -> str:
    """Apply `change(bytes) -> bytes` to the second member of qa.zip; returns its name."""
    contents = members(root / "qa.zip")
    name = list(contents)[1]
    contents[name] = change(contents[name])
    rezip(root / "qa.zip", contents)
    return name


def edit_document(change):
    def edit(data: bytes) -> bytes:
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()

    return edit


def nest_answers(depth: int):
    """Hang a chain of sub-answers, levels 1..depth, under the first answer of the first question."""

    def change(doc):
        answer = doc["questions"][0]["answers"][0]
        for level in range(1, depth + 1):
            child = {k: v for k, v in answer.items() if k != "sub_answers"}
            child.update(answer_id=9000 + level, answer_level=level, answer_type="sub_answer", sub_answers=[])
            answer["sub_answers"] = [*answer.get("sub_answers", []), child]
            answer = child

    return edit_document(change)


def test_qba_answers_are_read_to_the_deepest_typed_level_and_deeper_is_an_error(qba, qba_sample):
    from warehouse.sources.mimic_qba import MAX_LEVEL

    _, before = qba_read(qba, qba_sample / "mimic_cxr")
    source = qba / "qa.zip"
    original = source.read_bytes()
    name = damage_member(qba, nest_answers(MAX_LEVEL))
    _, after = qba_read(qba, qba_sample / "mimic_cxr")
    assert after["qa_answers"] == before["qa_answers"] + MAX_LEVEL, "one answer per level, the deepest included"
    source.write_bytes(original)
    damage_member(qba, nest_answers(MAX_LEVEL + 1))
    with pytest.raises(SourceError, match=rf"{re.escape(name)}: has answers nested deeper than level {MAX_LEVEL}"):
        qba_read(qba, qba_sample / "mimic_cxr")


@pytest.mark.parametrize("archive", ["qa.zip", "scene_data.zip"])
def test_qba_truncated_zip_is_an_error(qba, qba_sample, archive):
    data = (qba / archive).read_bytes()
    (qba / archive).write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"{archive}: is not a readable zip archive"):
        qba_read(qba, qba_sample / "mimic_cxr")


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda data: data[: len(data) // 2], r"not valid JSON \(.*line 1 column \d+"),
        (lambda data: b"", r"not valid JSON \(Expecting value: line 1 column 1"),
        (
            lambda data: data.replace(b'"question"', b'"question\xff"', 1),
            r"not valid JSON \('utf-8' codec can't decode",
        ),
        (
            edit_document(lambda d: d["questions"][0]["question_quality"].update(rating="high")),
            r"JSON does not have the documented shape",
        ),
        (
            edit_document(lambda d: d["questions"][0]["answers"][0].update(answer_id="one")),
            r"JSON does not have the documented shape",
        ),
    ],
    ids=["cut-in-half", "empty", "non-utf8", "rating-string", "answer-id-string"],
)
def test_qba_unreadable_member_is_an_error_naming_it(qba, qba_sample, change, message):
    name = damage_member(qba, change)
    with pytest.raises(SourceError, match=rf"(?s)cannot be read.*qa\.zip:{re.escape(name)}: {message}"):
        qba_read(qba, qba_sample / "mimic_cxr")


@pytest.mark.parametrize(
    "change,message",
    [
        (edit_document(lambda d: d.pop("study_id")), r", column 'study_id': has no study_id"),
        (edit_document(lambda d: d.update(patient_id="")), r", column 'patient_id': has no patient_id"),
        (
            edit_document(lambda d: d["questions"][1].update(question_id=d["questions"][0]["question_id"])),
            r", column 'question_id': holds question_id '\w+' twice",
        ),
        (
            edit_document(lambda d: d["questions"][0]["question_quality"].update(rating=99)),
            r", column 'question_quality.rating': question_quality.rating 99 \(question '\w+'\) is not a code in "
            r"quality_mappings.csv",
        ),
        (
            edit_document(lambda d: d["questions"][0]["question_quality"].pop("rating")),
            r", column 'question_quality.rating': has no question_quality.rating for question '\w+'",
        ),
        (
            edit_document(lambda d: d["questions"][0]["answers"][0]["answer_quality"].update(rating=99)),
            r", column 'answer_quality.rating': answer_quality.rating 99 \(question '\w+'\) is not a code in "
            r"quality_mappings.csv",
        ),
        (
            edit_document(lambda d: d["questions"][0]["answers"][0].pop("answer_quality")),
            r", column 'answer_quality.rating': has no answer_quality.rating for question '\w+'",
        ),
    ],
    ids=[
        "no-study-id",
        "empty-patient-id",
        "question-twice",
        "unknown-rating",
        "no-rating",
        "unknown-answer-rating",
        "no-answer-rating",
    ],
)
def test_qba_member_that_cannot_be_keyed_or_graded_is_an_error(qba, qba_sample, change, message):
    """Fix: a member without study_id published questions under a null study; a question twice, twice."""
    name = damage_member(qba, change)
    with pytest.raises(SourceError, match=rf"qa\.zip:{re.escape(name)}{message}"):
        qba_read(qba, qba_sample / "mimic_cxr")


@pytest.mark.parametrize("archive,suffix", [("qa.zip", ".qa.json"), ("scene_data.zip", ".scene_graph.json")])
@pytest.mark.parametrize("where", ["../", "p10/../../", "/abs/"])
def test_qba_member_leaving_the_dataset_refuses_the_archive(qba, qba_sample, archive, suffix, where):
    contents = members(qba / archive)
    name = f"{where}s99999999{suffix}"
    rezip(qba / archive, {**contents, name: next(iter(contents.values()))})
    with pytest.raises(SourceError, match=rf"{archive}: member '{re.escape(name)}' has a path that leaves"):
        qba_read(qba, qba_sample / "mimic_cxr")


def test_qba_same_study_in_two_members_refuses_the_archive(qba, qba_sample):
    """Fix: a copy of a member in another folder published the study's questions twice."""
    contents = members(qba / "qa.zip")
    first = next(iter(contents))
    copy = "qa/p10/copy/" + first.rsplit("/", 1)[1]
    rezip(qba / "qa.zip", {**contents, copy: contents[first]})
    with pytest.raises(SourceError, match=rf"qa\.zip: members '{first}' and '{copy}' have the same file name"):
        qba_read(qba, qba_sample / "mimic_cxr")


def test_qba_empty_qa_archive_is_an_error(qba, qba_sample):
    """Fix: a qa.zip without members published a dataset without a single question."""
    rezip(qba / "qa.zip", {"qa/README.txt": b"nothing here"})
    with pytest.raises(SourceError, match=r"qa\.zip: holds no \*\.qa\.json members"):
        qba_read(qba, qba_sample / "mimic_cxr")


def test_qba_nested_archive_and_odd_members_are_quarantined_and_the_rest_read(qba, qba_sample):
    """Fix: members that are not QA documents were only counted in a note; now each is named."""
    contents = members(qba / "qa.zip")
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as nested:
        nested.writestr("s1.qa.json", next(iter(contents.values())))
    odd = {"qa/p10/nested.zip": inner.getvalue(), "qa/README.txt": b"readme"}
    rezip(qba / "qa.zip", {**contents, **odd})
    result, rows = qba_read(qba, qba_sample / "mimic_cxr")
    rejected = result.rejected()
    assert sorted(rejected["source_file"].str.split(":").list.last()) == sorted(odd)
    assert all("not a *.qa.json member" in reason for reason in rejected["reason"])
    questions = sum(len(json.loads(data)["questions"]) for data in contents.values())
    assert rows["qa_questions"] == questions  # every study's questions
    assert len(members(qba / "qa.zip")) == len(contents) + rejected.height  # members in = read + quarantined


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda t: t.replace("rating,0,", "rating,zero,", 1),
            r", line 3, column 'code': code 'zero' is not an integer",
        ),
        (
            lambda t: t.replace("rating,2,B", 'rating,2,"B', 1),
            r", line 5, column 'label': cannot be read \(unbalanced quote",
        ),
        (
            lambda t: t.replace("rating,3,A,A,", "rating,3,A,A,,extra", 1),
            r", line 6: cannot be read \(too many columns",
        ),
        (
            lambda t: t.replace("rating,0,", "rating,zero,", 1).replace("rating,2,", "rating,two,", 1),
            r", line 3, column 'code': code 'zero' is not an integer",  # the first of two is named
        ),
        (
            lambda t: t.replace("rating,1,C,C,", "rating,1,C,C,,extra", 1).replace(
                "rating,3,A,A,", 'rating,3,"A,A,', 1
            ),
            r", line 4: cannot be read \(too many columns",  # the first of two unreadable rows is named
        ),
        (lambda t: t.replace("field,code", "field,cod", 1), r", line 1: unexpected header"),
        (lambda t: t.split("\n")[0] + "\n", r": has no rows for field 'rating'"),
        (lambda t: "", r", line 1: is empty"),
    ],
    ids=[
        "code-not-int",
        "stray-quote",
        "too-many-fields",
        "two-codes-not-int",
        "two-unreadable-rows",
        "renamed-header",
        "header-only",
        "empty",
    ],
)
def test_qba_bad_quality_mappings_are_errors_naming_line_and_column(qba, qba_sample, change, message):
    """Fix: a code that is not an integer raised a raw polars error; a row lost to quarantine left codes unknown."""
    path = qba / "quality_mappings.csv"
    path.write_text(change(path.read_text()))
    with pytest.raises(SourceError, match=r"quality_mappings\.csv" + message):
        qba_read(qba, qba_sample / "mimic_cxr")


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncated parquet", r"study_metadata\.parquet: cannot be read \(ComputeError"),
        ("truncated csv.gz", r"study_metadata\.csv\.gz: cannot be read"),
        ("header-only csv.gz", r"study_metadata\.csv\.gz: has no rows"),
    ],
)
def test_qba_unreadable_or_empty_metadata_is_an_error(qba, qba_sample, damage, message):
    """Fix: a truncated metadata file raised a raw polars or gzip error; an empty one orphaned every image."""
    folder = qba / "metadata"
    if damage == "truncated parquet":
        data = (folder / "study_metadata.parquet").read_bytes()
        (folder / "study_metadata.parquet").write_bytes(data[: len(data) // 2])
    else:
        (folder / "study_metadata.parquet").unlink()
        path = folder / "study_metadata.csv.gz"
        data = path.read_bytes()
        header = gzip.decompress(data).split(b"\n")[0] + b"\n"
        path.write_bytes(data[: len(data) // 2] if damage.startswith("truncated") else gzip.compress(header))
    with pytest.raises(SourceError, match=message):
        qba_read(qba, qba_sample / "mimic_cxr")

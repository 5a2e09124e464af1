"""A corpus of broken inputs cut from the real NIH and CheXpert files, one damage per case.

Each case has one documented outcome: a SourceError naming the file and line (or column), or an
account that balances: rows in = rows published + rows quarantined. "Rows in" is counted here with
Python's csv module, one physical line at a time (both formats put one record on each line), never
by the code under test.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.gated import IngestBlocked
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings

ROWS = 300
FILES = {"nih_cxr14": "Data_Entry_2017_v2020.csv", "chexpert": "train.csv"}


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", newline="") as f:
        return [next(f) for _ in range(n)]


@pytest.fixture(scope="module")
def real_lines(raw_files):
    return {
        "nih_cxr14": _head(raw_files["nih_entry"], ROWS + 1),
        "chexpert": _head(raw_files["chexpert_train"], ROWS + 1),
    }


def _write(folder: Path, dataset: str, lines: list[str] | bytes, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else "".join(lines).encode()
    path = folder / (FILES[dataset] + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _read(dataset: str, folder: Path):
    return get_adapter(dataset).read(SourceFolder(str(folder)))


def _csv_rows(path: Path) -> int:
    """Data records in the file, by the csv module reading each physical line as a record."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return sum(1 for line in text.splitlines()[1:] if next(csv.reader([line]), []))


def _set_field(line: str, index: int, value: str) -> str:
    fields = line.rstrip("\n").split(",")
    fields[index] = value
    return ",".join(fields) + "\n"


def _assert_account(result, path: Path) -> pl.DataFrame:
    """rows in = rows published + rows quarantined whole; returns the quarantine."""
    rejected = result.rejected()
    whole_rows = rejected.filter(pl.col("column_name") != "age")["line_number"].n_unique()
    assert result.tables["images"].height + whole_rows == _csv_rows(path)
    return rejected


# Field indexes of the same kind of value in each file.
AGE = {"nih_cxr14": 4, "chexpert": 2}
TYPED = {"nih_cxr14": (7, "width"), "chexpert": (5, "No Finding")}  # an INTEGER / FLOAT column
TEXT = {"nih_cxr14": (1, "finding_labels"), "chexpert": (1, "Sex")}  # a VARCHAR column


@pytest.mark.parametrize("dataset", FILES)
@pytest.mark.parametrize("where", ["field start", "mid field"])
def test_stray_quote_quarantines_one_line_and_keeps_the_rest(tmp_path, real_lines, dataset, where):
    lines = list(real_lines[dataset])
    index, column = TEXT[dataset]
    value = lines[10].split(",")[index]
    lines[10] = _set_field(lines[10], index, '"' + value if where == "field start" else value[:2] + '"' + value[2:])
    path = _write(tmp_path, dataset, lines)
    result = _read(dataset, tmp_path)
    rejected = _assert_account(result, path)
    assert result.tables["images"].height == ROWS - 1
    [row] = rejected.to_dicts()
    assert (row["line_number"], row["column_name"]) == (11, column)
    assert "unbalanced quote" in row["reason"] and row["raw_record"] == lines[10].rstrip("\n")


def test_stray_quote_end_to_end_publishes_every_other_row(tmp_path, cache_dir, real_lines):
    lines = list(real_lines["nih_cxr14"])
    lines[50] = _set_field(lines[50], 1, '"' + lines[50].split(",")[1])
    path = _write(tmp_path / "nih", "nih_cxr14", lines)
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, nih_cxr14=tmp_path / "nih"))
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    quarantined = wh.sql("SELECT count(*) FROM quarantine").column(0)[0].as_py()
    assert quarantined == 1
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == _csv_rows(path) - quarantined


@pytest.mark.parametrize("dataset", FILES)
def test_header_only_is_an_error(tmp_path, real_lines, dataset):
    _write(tmp_path, dataset, real_lines[dataset][:1])
    with pytest.raises(SourceError, match=rf"{FILES[dataset]}: has a header but no data rows"):
        _read(dataset, tmp_path)


@pytest.mark.parametrize("dataset", FILES)
def test_truncated_gzip_is_an_error_naming_the_line(tmp_path, real_lines, dataset):
    data = gzip.compress("".join(real_lines[dataset]).encode())
    (tmp_path / (FILES[dataset] + ".gz")).write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"{FILES[dataset]}\.gz, line \d+: cannot be read") as err:
        _read(dataset, tmp_path)
    assert 1 < err.value.line <= ROWS + 1


@pytest.mark.parametrize("dataset", FILES)
def test_missing_required_column_is_an_error(tmp_path, real_lines, dataset):
    drop = AGE[dataset]
    lines = [
        ",".join(f for i, f in enumerate(line.rstrip("\n").split(",")) if i != drop) + "\n"
        for line in real_lines[dataset]
    ]
    _write(tmp_path, dataset, lines)
    with pytest.raises(SourceError, match=rf"{FILES[dataset]}, line 1: unexpected header"):
        _read(dataset, tmp_path)


@pytest.mark.parametrize("dataset,old,new", [("nih_cxr14", "Patient Age", "Age"), ("chexpert", "Sex", "Gender")])
def test_renamed_header_is_an_error(tmp_path, real_lines, dataset, old, new):
    lines = list(real_lines[dataset])
    lines[0] = lines[0].replace(old, new)
    _write(tmp_path, dataset, lines)
    with pytest.raises(SourceError, match=rf"(?s){FILES[dataset]}, line 1: unexpected header.*found:.*{new}"):
        _read(dataset, tmp_path)


@pytest.mark.parametrize("dataset", FILES)
def test_too_many_and_too_few_fields_are_quarantined(tmp_path, real_lines, dataset):
    lines = list(real_lines[dataset])
    lines[5] = lines[5].rstrip("\n") + ",extra\n"
    lines[9] = lines[9].rsplit(",", 1)[0] + "\n"
    path = _write(tmp_path, dataset, lines)
    result = _read(dataset, tmp_path)
    rejected = _assert_account(result, path)
    assert sorted(zip(rejected["line_number"], rejected["column_name"])) == [(6, ""), (10, "")]
    reasons = dict(zip(rejected["line_number"], rejected["reason"]))
    assert "too many columns" in reasons[6] and "missing columns" in reasons[10]


@pytest.mark.parametrize("dataset", FILES)
def test_non_utf8_bytes_are_quarantined(tmp_path, real_lines, dataset):
    data = bytearray("".join(real_lines[dataset]).encode())
    lines = real_lines[dataset]
    at = sum(len(line) for line in lines[:7]) + lines[7].index(",") + 1  # the 2nd field of line 8
    data[at : at + 1] = b"\xff\xfe"
    path = _write(tmp_path, dataset, bytes(data))
    result = _read(dataset, tmp_path)
    rejected = _assert_account(result, path)
    [row] = rejected.to_dicts()
    assert row["line_number"] == 8 and "invalid encoding" in row["reason"]


@pytest.mark.parametrize("dataset", FILES)
def test_wrong_types_are_quarantined_with_their_column(tmp_path, real_lines, dataset):
    index, column = TYPED[dataset]
    lines = list(real_lines[dataset])
    lines[3] = _set_field(lines[3], index, "wide")
    path = _write(tmp_path, dataset, lines)
    result = _read(dataset, tmp_path)
    rejected = _assert_account(result, path)
    [row] = rejected.to_dicts()
    assert (row["line_number"], row["column_name"], row["value"]) == (4, column, "wide")
    assert row["raw_record"] == lines[3].rstrip("\n")


@pytest.mark.parametrize("dataset", FILES)
def test_unreadable_or_out_of_range_age_is_null_and_quarantined(tmp_path, real_lines, dataset):
    lines = list(real_lines[dataset])
    bad = {3: "abc", 4: "-1", 5: "150"}
    for i, age in bad.items():
        lines[i] = _set_field(lines[i], AGE[dataset], age)
    path = _write(tmp_path, dataset, lines)
    result = _read(dataset, tmp_path)
    rejected = _assert_account(result, path)
    assert result.tables["images"].height == ROWS  # the rows themselves publish
    assert sorted(zip(rejected["line_number"], rejected["column_name"], rejected["value"])) == [
        (i + 1, "age", age) for i, age in bad.items()
    ]
    assert set(rejected["raw_record"]) == {lines[i].rstrip("\n") for i in bad}
    reasons = dict(zip(rejected["value"], rejected["reason"]))
    assert "not a number" in reasons["abc"] and "negative" in reasons["-1"] and "over 120" in reasons["150"]
    kept = result.tables["studies"].filter(pl.col("age_source").is_in(list(bad.values())))  # raw value kept...
    assert kept.height and kept["age_years"].is_null().all()  # ...harmonized null


@pytest.mark.parametrize("dataset", FILES)
def test_duplicate_ids_are_blocked_by_the_quality_gates(tmp_path, cache_dir, real_lines, dataset):
    lines = list(real_lines[dataset])
    lines.insert(20, lines[10])
    _write(tmp_path / "src", dataset, lines)
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, **{dataset: tmp_path / "src"}))
    with pytest.raises(IngestBlocked):
        wh.ingest([dataset], say=lambda m: None)

"""Bad input gets a clear error naming file, line and column, and no row is lost silently.

Fixtures are cut from the real files (their first rows) and then damaged on purpose.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings, nih_subset


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", newline="") as f:
        return [next(f) for _ in range(n)]


@pytest.fixture
def nih_lines(raw_files):
    return _head(raw_files["nih_entry"], 21)  # header + 20 real rows


def _write(folder: Path, name: str, lines: list[str], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_wrong_header_names_file_and_line(tmp_path, nih_lines):
    header = nih_lines[0].replace("Patient Age", "Age")
    _write(tmp_path / "nih", "Data_Entry_2017_v2020.csv", [header, *nih_lines[1:]])
    with pytest.raises(SourceError) as err:
        get_adapter("nih_cxr14").read(SourceFolder(str(tmp_path / "nih")))
    message = str(err.value)
    assert "Data_Entry_2017_v2020.csv, line 1" in message
    assert "found:" in message and "Age" in message and "expected:" in message


def test_missing_files_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"Data_Entry_2017_v2020\.csv\[\.gz\].*Data_Entry_2017\.csv\[\.gz\]"):
        get_adapter("nih_cxr14").read(SourceFolder(str(tmp_path / "empty")))
    with pytest.raises(SourceError, match=r"train\.csv"):
        get_adapter("chexpert").read(SourceFolder(str(tmp_path / "empty")))


def test_corrupt_gzip_is_named(tmp_path, nih_lines):
    folder = tmp_path / "nih"
    folder.mkdir()
    (folder / "Data_Entry_2017_v2020.csv.gz").write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    with pytest.raises(SourceError, match=r"Data_Entry_2017_v2020\.csv\.gz"):
        get_adapter("nih_cxr14").read(SourceFolder(str(folder)))


def test_bad_rows_are_quarantined_with_line_and_column(tmp_path, cache_dir, nih_lines):
    lines = list(nih_lines)
    fields = lines[3].split(",")
    fields[7] = "wide"  # width of data row 3 (line 4) is not an integer
    lines[3] = ",".join(fields)
    lines[6] = ",".join(lines[6].split(",")[:5]) + "\n"  # row 6 (line 7) lost its last fields
    good_ids = {line.split(",")[0].removesuffix(".png") for i, line in enumerate(lines[1:], 1) if i not in (3, 6)}
    _write(tmp_path / "nih", "Data_Entry_2017_v2020.csv", lines)

    result = get_adapter("nih_cxr14").read(SourceFolder(str(tmp_path / "nih")))
    rejected = {(r["line_number"], r["column_name"]): r for r in result.rejected().to_dicts()}
    assert set(rejected) == {(4, "width"), (7, "")}
    assert rejected[(4, "width")]["value"] == "wide"
    assert rejected[(4, "width")]["raw_record"] == lines[3].rstrip("\n")
    assert rejected[(4, "width")]["row_number"] == 3
    assert "missing columns" in rejected[(7, "")]["reason"] and "Found: 5" in rejected[(7, "")]["reason"]
    assert set(result.tables["images"]["image_id"]) == good_ids

    # ...and the quarantine is published with the dataset, queryable beside the good rows
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, nih_cxr14=tmp_path / "nih"))
    wh.ingest(["nih_cxr14"], say=lambda m: None)
    q = wh.sql("SELECT line_number, column_name, source_file FROM quarantine ORDER BY 1").to_pylist()
    assert [(r["line_number"], r["column_name"]) for r in q] == [(4, "width"), (7, "")]
    assert all(r["source_file"].endswith("nih/Data_Entry_2017_v2020.csv") for r in q)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 18
    runs = wh.sql("SELECT rows_rejected FROM ingest_runs").column(0).to_pylist()
    assert runs == [2]


def test_chexpert_bad_path_is_quarantined(tmp_path, raw_files):
    lines = _head(raw_files["chexpert_train"], 6)
    lines[2] = lines[2].replace("CheXpert-v1.0-small/train/patient", "somewhere/else/patient", 1)
    _write(tmp_path / "cx", "train.csv", lines)
    result = get_adapter("chexpert").read(SourceFolder(str(tmp_path / "cx")))
    bad = result.rejected().to_dicts()
    assert len(bad) == 1 and bad[0]["column_name"] == "Path" and bad[0]["line_number"] == 3
    assert bad[0]["value"].startswith("somewhere/else/")
    assert result.tables["images"].height == 4


def test_nih_2017_file_and_official_split_lists(tmp_path, nih_lines):
    """The original 2017 file (trailing comma) with the split lists assigns splits by patient."""
    lines = [nih_lines[0].rstrip("\n") + ",\n"] + [line.rstrip("\n") + ",\n" for line in nih_lines[1:]]
    folder = tmp_path / "nih2017"
    _write(folder, "Data_Entry_2017.csv", lines)
    images = [line.split(",")[0] for line in nih_lines[1:]]
    patients = sorted({line.split(",")[3] for line in nih_lines[1:]})
    test_patients = set(patients[-1:])
    test_images = [i for i, line in zip(images, nih_lines[1:]) if line.split(",")[3] in test_patients]
    _write(folder, "test_list.txt", [i + "\n" for i in test_images])
    _write(folder, "train_val_list.txt", [i + "\n" for i in images if i not in test_images])
    result = get_adapter("nih_cxr14").read(SourceFolder(str(folder)))
    splits = dict(zip(result.tables["images"]["image_id"], result.tables["images"]["split"]))
    assert {splits[i.removesuffix(".png")] for i in test_images} == {"test"}
    assert sum(s == "train" for s in splits.values()) == len(images) - len(test_images)
    assert result.rejected().is_empty()


def test_nih_box_without_a_known_image_is_quarantined_and_the_rest_publish(tmp_path, raw_files):
    """A BBox line with a blank Image Index, or one naming an image the data entry file lacks, is kept
    in quarantine with its line and raw record; the other boxes publish (the gate would block them all)."""
    folder = nih_subset(raw_files, tmp_path / "nih", 2000)
    box_lines = (folder / "BBox_List_2017.csv").read_text().splitlines(keepends=True)
    assert len(box_lines) > 3, "the subset should hold some real boxes"
    bad = [",Atelectasis,1,2,3,4\n", "00099999_000.png,Mass,5,6,7,8\n"]
    (folder / "BBox_List_2017.csv").write_text("".join(box_lines[:2] + bad + box_lines[2:]))
    with (folder / "BBox_List_2017.csv").open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    entry_images = {
        line.split(",", 1)[0] for line in (folder / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    }
    good = [r for r in rows if r[0] in entry_images]

    result = get_adapter("nih_cxr14").read(SourceFolder(str(folder)))
    assert result.tables["boxes"].height == len(good) == len(rows) - 2
    rejected = sorted(
        result.rejected().filter(pl.col("target_table") == "boxes").to_dicts(), key=lambda r: r["line_number"]
    )
    assert [(r["line_number"], r["column_name"]) for r in rejected] == [(3, "image_index"), (4, "image_index")]
    assert [r["raw_record"] for r in rejected] == [b.rstrip("\n") for b in bad]
    assert rejected[1]["value"] == "00099999_000.png"
    assert all("not in the NIH data entry file" in r["reason"] for r in rejected)

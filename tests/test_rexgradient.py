"""ReXGradient-160K adapter against the format-faithful sample: the generator's truth and a recount.

Expected numbers come from the generator's truth dict (counted while writing) or from reading the
written files with the csv and json modules here, never from the adapter itself.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.queries import named_query
from warehouse.samples.rexgradient import write_samples
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder
from warehouse.sources.rexgradient import json_object_members

from .conftest import make_settings

SPLITS = ("train", "valid", "test")
SECTIONS = ("Indication", "Comparison", "Findings", "Impression")
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rexgradient")
    return root, write_samples(root, patients=80, seed=7)


@pytest.fixture(scope="module")
def tables(sample) -> dict[str, pl.DataFrame]:
    result = get_adapter("rexgradient").read(SourceFolder(str(sample[0])))
    assert result.rejected().is_empty()
    return result.tables


def fresh_copy(sample, tmp_path) -> Path:
    """A private copy of the sample to damage."""
    return Path(shutil.copytree(sample[0], tmp_path / "rexgradient"))


def raw_csv(root: Path, split: str) -> list[dict]:
    with (root / "metadata" / f"{split}_metadata.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def raw_json(root: Path, split: str) -> dict:
    return json.loads((root / "metadata" / f"{split}_metadata_view_position.json").read_text(encoding="utf-8"))


def present(value: str) -> bool:
    return value.strip() != "" and value.strip().lower() != "none"


def age_bucket(years: float) -> str:
    return AGE_BUCKETS[min(4, int(years // 20))]


def read(folder: Path):
    return get_adapter("rexgradient").read(SourceFolder(str(folder)))


# --- counts against the generator's truth ----------------------------------------------------
def test_studies_images_patients_per_split_match_truth(sample, tables):
    _, truth = sample
    for split in SPLITS:
        expected = truth["splits"][split]
        studies = tables["studies"].filter(pl.col("split") == split)
        assert studies.height == expected["studies"], split
        assert studies["patient_id"].n_unique() == expected["patients"], split
        assert tables["images"].filter(pl.col("split") == split).height == expected["images"], split
    assert tables["patients"].height == truth["total"]["patients"]


def test_sections_present_and_token_sums_match_truth(sample, tables):
    _, truth = sample
    reports = tables["reports"].join(tables["studies"].select("study_id", "split"), on="study_id")
    for split in SPLITS:
        rows = reports.filter(pl.col("split") == split)
        for section in SECTIONS:
            column = section.lower()
            expected = truth["splits"][split]["sections"][section]
            assert rows[column].is_not_null().sum() == expected["studies_present"], (split, section)
            assert rows[f"tokens_{column}"].sum() == expected["tokens"], (split, section)
            assert (rows[f"tokens_{column}"].is_not_null() == rows[column].is_not_null()).all()


def test_sex_and_age_buckets_per_study_match_truth(sample, tables):
    _, truth = sample
    per_study = tables["studies"].join(tables["patients"], on="patient_id")
    for split in SPLITS:
        rows = per_study.filter(pl.col("split") == split)
        sexes = Counter(value or "" for value in rows["sex_source"])
        assert {sex: sexes[sex] for sex in ("M", "F", "O", "")} == truth["splits"][split]["sex"]
        buckets = Counter(age_bucket(years) for years in rows["age_years"])
        assert {name: buckets[name] for name in AGE_BUCKETS} == truth["splits"][split]["age_bucket"]
    assert set(tables["patients"]["sex"]) <= {"F", "M", "U"}
    assert per_study.filter(pl.col("sex_source").is_in(["O"]) | pl.col("sex_source").is_null())["sex"].eq("U").all()


# --- ids, joins, keys -------------------------------------------------------------------------
def test_ids_and_paths_come_from_the_files(sample, tables):
    root, _ = sample
    images = tables["images"]
    for split in SPLITS:
        rows = raw_csv(root, split)
        studies = tables["studies"].filter(pl.col("split") == split)
        assert dict(zip(studies["study_id"], studies["patient_id"])) == {r["id"]: r["PatientID"] for r in rows}
        expected = {}
        for key, record in raw_json(root, split).items():
            for path, view, shape in zip(record["ImagePath"], record["ImageViewPosition"], record["ImageShape"]):
                sop = path.rsplit("/", 1)[1].removesuffix(".png")
                expected[sop] = (key, path.removeprefix("../"), view, shape[1], shape[0])
        got = images.filter(pl.col("split") == split)
        assert {
            r["image_id"]: (r["study_id"], r["path"], r["view_source"], r["width"], r["height"])
            for r in got.iter_rows(named=True)
        } == expected
    assert images["path"].str.starts_with("deid_png/").all()


def test_keys_are_unique_and_every_row_has_its_parent(tables):
    for name, key in (
        ("patients", "patient_id"),
        ("studies", "study_id"),
        ("images", "image_id"),
        ("reports", "study_id"),
    ):
        assert tables[name][key].is_unique().all(), name
    studies = tables["studies"]
    assert tables["images"].join(studies, on=["study_id", "patient_id", "split"], how="anti").is_empty()
    assert tables["reports"].join(studies, on=["study_id", "patient_id"], how="anti").is_empty()
    assert studies.join(tables["patients"], on="patient_id", how="anti").is_empty()
    splits_per_patient = studies.group_by("patient_id").agg(pl.col("split").n_unique())
    assert (splits_per_patient["split"] == 1).all()


def test_study_values_are_read_as_dicom_writes_them(sample, tables):
    root, _ = sample
    studies = {r["study_id"]: r for r in tables["studies"].iter_rows(named=True)}
    race = dict(zip(tables["patients"]["patient_id"], tables["patients"]["race_source"]))
    seen_months = seen_zero_weight = 0
    for split in SPLITS:
        for row in raw_csv(root, split):
            got = studies[row["id"]]
            assert got["age_source"] == row["PatientAge"]
            number, unit = int(row["PatientAge"][:3]), row["PatientAge"][3]
            assert got["age_years"] == pytest.approx(number / {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}[unit])
            seen_months += unit == "M"
            assert got["study_date"].strftime("%Y%m%d") == row["StudyDate"]
            weight = float(row["PatientWeight"] or 0)
            assert got["weight_kg"] == (pytest.approx(weight) if weight else None)
            seen_zero_weight += row["PatientWeight"] == "0"
            assert got["institution"] == (row["InstitutionName"] or None)
            assert got["manufacturer"] == (row["Manufacturer"] or None)
            assert race[row["PatientID"]] == (row["EthnicGroup"] or None)
    assert seen_zero_weight and seen_months, "the sample should exercise '0' weights and month ages"


def test_view_positions_are_harmonized_and_raw_kept(tables):
    images = tables["images"]
    pairs = set(zip(images["view_source"], images["view_position"]))
    assert ("POSTERO_ANTERIOR", "PA") in pairs and ("LATERAL", "LATERAL") in pairs
    assert (None, "UNKNOWN") in pairs or ("UNKNOWN", "UNKNOWN") in pairs
    assert images.filter(pl.col("is_frontal"))["view_position"].is_in(["PA", "AP", "AP_SUPINE"]).all()


# --- reports ----------------------------------------------------------------------------------
def test_absent_sections_are_null_and_full_text_joins_the_present_ones(sample, tables):
    root, _ = sample
    reports = {r["study_id"]: r for r in tables["reports"].iter_rows(named=True)}
    spellings = Counter()
    for split in SPLITS:
        for row in raw_csv(root, split):
            got = reports[row["id"]]
            for section in SECTIONS:
                value = row[section]
                if not present(value):
                    spellings[value] += 1
                    assert got[section.lower()] is None
                else:
                    assert got[section.lower()] == value.strip()
            assert got["full_text"] == "\n\n".join(
                f"{s.upper()}: {row[s].strip()}" for s in SECTIONS if present(row[s])
            )
            assert got["language"] == "en" and got["source_file"].endswith(f"metadata/{split}_metadata.csv")
    assert {"", "None"} <= set(spellings), spellings  # blank and the literal 'None' both occur


def test_a_study_with_no_report_text_has_no_report_row(sample, tmp_path):
    root = fresh_copy(sample, tmp_path)
    path = root / "metadata" / "valid_metadata.csv"
    rows = raw_csv(root, "valid")
    for section in SECTIONS:
        rows[0][section] = "none" if section == "Comparison" else ""
    rows[1]["Findings"], rows[1]["Indication"] = "", "NONE"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    result = read(root)
    reports = result.tables["reports"]
    assert rows[0]["id"] in set(result.tables["studies"]["study_id"])
    assert rows[0]["id"] not in set(reports["study_id"])
    kept = reports.filter(pl.col("study_id") == rows[1]["id"]).row(0, named=True)
    assert kept["findings"] is None and kept["indication"] is None and kept["tokens_findings"] is None
    assert "FINDINGS:" not in kept["full_text"] and kept["full_text"].startswith("COMPARISON: ")


# --- damaged input ----------------------------------------------------------------------------
def test_csv_and_json_ids_disagreeing_are_quarantined(sample, tmp_path):
    root = fresh_copy(sample, tmp_path)
    json_path = root / "metadata" / "test_metadata_view_position.json"
    doc = json.loads(json_path.read_text())
    dropped = next(iter(doc))
    stray = "pGRDNSTRAY_aGRDNSTRAY_s1.2.3"
    doc[stray] = doc.pop(dropped)
    json_path.write_text(json.dumps(doc))

    result = read(root)
    rejected = result.rejected().to_dicts()
    by_value = {r["value"]: r for r in rejected}
    assert set(by_value) == {dropped, stray}
    assert "not in this JSON" in by_value[dropped]["reason"]
    assert "not in the split's CSV" in by_value[stray]["reason"]
    assert all(r["source_file"].endswith("metadata/test_metadata_view_position.json") for r in rejected)
    # a JSON member is not a line of the file: the row number is its position, the line is unknown
    assert by_value[stray]["line_number"] is None and by_value[stray]["row_number"] is not None
    assert dropped in set(result.tables["studies"]["study_id"])
    assert dropped not in set(result.tables["images"]["study_id"]) | {stray}
    assert stray not in set(result.tables["images"]["study_id"])


def test_truncated_json_is_quarantined_with_its_path(sample, tmp_path):
    root = fresh_copy(sample, tmp_path)
    json_path = root / "metadata" / "train_metadata_view_position.json"
    text = json_path.read_text()
    keys = list(json.loads(text))
    cut = text.index(json.dumps(keys[3]))  # the 4th study's entry and everything after it are lost
    json_path.write_text(text[: cut + 30])

    result = read(root)
    rejected = result.rejected()
    unreadable = rejected.filter(pl.col("reason").str.contains("not readable as JSON"))
    assert unreadable.height == 1
    assert unreadable["source_file"][0].endswith("metadata/train_metadata_view_position.json")
    assert unreadable["raw_record"][0].startswith(json.dumps(keys[3])[:10])
    assert set(rejected.filter(pl.col("reason").str.contains("not in this JSON"))["value"]) == set(keys[3:])
    assert set(result.tables["images"].filter(pl.col("split") == "train")["study_id"]) == set(keys[:3])
    assert result.tables["studies"].filter(pl.col("split") == "train").height == len(keys)


def test_bad_image_entries_are_quarantined_and_the_rest_kept(sample, tmp_path):
    root = fresh_copy(sample, tmp_path)
    json_path = root / "metadata" / "valid_metadata_view_position.json"
    doc = json.loads(json_path.read_text())
    first, second, third = list(doc)[:3]
    doc[first]["ImageViewPosition"].append("PA")  # lists no longer aligned
    doc[second]["ImagePath"][0] = "deid_png/somewhere/else.png"
    doc[third]["ImageShape"][0] = "2500x2048"
    json_path.write_text(json.dumps(doc))

    result = read(root)
    rejected = {r["column_name"]: r for r in result.rejected().to_dicts()}
    assert rejected["id"]["value"] == first and "aligned" in rejected["id"]["reason"]
    assert rejected["id"]["row_number"] == 1
    assert rejected["ImagePath"]["value"] == "deid_png/somewhere/else.png"
    assert rejected["ImageShape"]["value"] == '"2500x2048"' and rejected["ImageShape"]["row_number"] == 3
    images = result.tables["images"]
    assert first not in set(images["study_id"])
    assert images.filter(pl.col("study_id") == second).height == len(doc[second]["ImagePath"]) - 1
    kept = images.filter(pl.col("study_id") == third).sort("path")
    assert kept.height == len(doc[third]["ImagePath"]) and kept["width"].null_count() == 1


def test_unreadable_csv_rows_are_quarantined_and_a_wrong_header_is_an_error(sample, tmp_path):
    root = fresh_copy(sample, tmp_path)
    path = root / "metadata" / "valid_metadata.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines.insert(1, "pGRDNBROKEN,20200101,GRDNBROKEN,too,few")
    path.write_text("\n".join(lines), encoding="utf-8")
    result = read(root)
    bad = result.rejected().filter(pl.col("source_file").str.ends_with("valid_metadata.csv"))
    assert bad.height == 1 and bad["line_number"][0] == 2 and "pGRDNBROKEN" in bad["raw_record"][0]
    assert "pGRDNBROKEN" not in set(result.tables["studies"]["study_id"])

    path.write_text("\n".join([lines[0].replace("PatientWeight", "Weight")] + lines[1:]), encoding="utf-8")
    with pytest.raises(SourceError, match=r"valid_metadata\.csv, line 1.*unexpected header"):
        read(root)


def test_missing_files_are_named(sample, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"metadata/train_metadata\.csv\[\.gz\]"):
        read(tmp_path / "empty")
    root = fresh_copy(sample, tmp_path)
    (root / "metadata" / "test_metadata_view_position.json").unlink()
    with pytest.raises(SourceError, match=r"test_metadata_view_position\.json"):
        read(root)


def test_gzipped_copies_read_the_same(sample, tables, tmp_path):
    root = fresh_copy(sample, tmp_path)
    for path in (root / "metadata").glob("*_metadata*"):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    result = read(root)
    for name, frame in tables.items():
        assert result.tables[name].drop("source_file", strict=False).equals(frame.drop("source_file", strict=False)), (
            name
        )


# --- the streaming JSON reader ---------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_streamed_members_equal_json_load_whatever_the_buffer_size(chunk):
    doc = {
        "a": {"ImagePath": ["../deid_png/x \\\"q\\\".png"], "n": 12345678901234567890, "f": -1.5e-3},
        "é\u2028": [None, True, False, {"nested": "}{,:"}],
        "num": 1234567,
        "": "",
        "s": "\\",
    }
    data = ("\ufeff" + json.dumps(doc, indent=2, ensure_ascii=False)).encode("utf-8")
    assert dict(json_object_members(io.BytesIO(data), chunk=chunk)) == doc
    assert list(json_object_members(io.BytesIO(b" { } "), chunk=chunk)) == []


@pytest.mark.parametrize("text", ['{"a": 1,}', '{"a" 1}', '[1, 2]', '{"a": {"b": 1}', '{"a": 1} x', '{1: 2}'])
def test_streamed_invalid_json_raises_value_error(text):
    with pytest.raises(ValueError):
        dict(json_object_members(io.BytesIO(text.encode()), chunk=4))


# --- end to end --------------------------------------------------------------------------------
def test_ingest_and_split_stats_give_the_truths_mean_tokens(sample, tmp_path, cache_dir):
    root, truth = sample
    wh = Warehouse(make_settings(tmp_path, cache_dir, rexgradient=root))
    wh.ingest(["rexgradient"], say=lambda m: None)
    stats = {
        r["split"]: r
        for r in wh.sql(named_query("stats", "split_stats").sql).to_pylist()
        if r["dataset"] == "rexgradient"
    }
    assert list(stats) == list(SPLITS)
    for split in SPLITS:
        expected = truth["splits"][split]
        got = stats[split]
        assert (got["studies"], got["images"], got["patients"]) == (
            expected["studies"],
            expected["images"],
            expected["patients"],
        )
        for section in SECTIONS:
            counted = expected["sections"][section]
            assert got[f"mean_tokens_{section.lower()}"] == pytest.approx(
                counted["tokens"] / counted["studies_present"], rel=1e-12
            ), (split, section)
    orphans = (
        wh.sql(
            "SELECT count(*) AS n FROM images i ANTI JOIN studies s USING (dataset, study_id) "
            "WHERE i.dataset = 'rexgradient'"
        )
        .column(0)[0]
        .as_py()
    )
    assert orphans == 0


@pytest.mark.parametrize(
    "shape,expected",
    [
        (None, (None, None, True)),  # not given: no size, not an error
        ([2500, 2048], (2500, 2048, True)),
        ([2500, 2048, 3], (2500, 2048, True)),  # a trailing channel count
        ([0, 2048], (None, None, False)),
        ([2500, -1], (None, None, False)),
        ([True, 2048], (None, None, False)),  # JSON true is not a size
        ([2500.0, 2048], (None, None, False)),
        ([2500], (None, None, False)),
        ("2500x2048", (None, None, False)),
    ],
)
def test_an_image_shape_is_two_or_three_positive_whole_numbers(shape, expected):
    from warehouse.sources.rexgradient import _rows_columns

    assert _rows_columns(shape) == expected

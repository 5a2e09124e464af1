"""The ReXGradient-160K sample must look like the real HF repository and agree with its own truth."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from warehouse.samples.rexgradient import write_samples

SPLITS = ("train", "valid", "test")
EXPECTED_FILES = sorted(
    [f"metadata/{split}_metadata{suffix}" for split in SPLITS for suffix in (".csv", ".json", "_view_position.json")]
    + ["metadata/interstitial_pattern_bbox.json"]
)
CSV_HEADER = [
    "id",
    "StudyDate",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUid",
    "PatientSex",
    "PatientAge",
    "EthnicGroup",
    "PatientWeight",
    "InstitutionName",
    "Manufacturer",
    "Indication",
    "Comparison",
    "Findings",
    "Impression",
]
JSON_FIELDS = ["ImagePath", "ImageModality", "ImageShape", "ImageBodyPart"] + CSV_HEADER[1:]
GRDN = r"GRDN[A-Z0-9]{12}"
UID = r"1\.2\.826\.0\.1\.3680043\.8\.498\.[1-9]\d{37}"
KEY_RE = re.compile(rf"^p({GRDN})_a({GRDN})_s({UID})$")
PATH_RE = re.compile(rf"^\.\./deid_png/({GRDN})/({GRDN})/studies/({UID})/series/{UID}/instances/{UID}\.png$")
VIEWS = {
    "PA",
    "AP",
    "POSTERO_ANTERIOR",
    "ANTERO_POSTERIOR",
    "LATERAL",
    "LAT",
    "LL",
    "AP AXIAL",
    "DECUBITUS",
    "ERECT",
    "SUPINE",
    "OBLIQUE",
    "UNKNOWN",
    "N/A",
    None,
    "OTHER",
    "PICC LINE",
    "KUB",
    "RAO",
    "LAO",
    "RPO",
    "LPO",
}
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+")
TABLE1_MEAN_TOKENS = {"Indication": 5.11, "Comparison": 2.65, "Findings": 32.27, "Impression": 11.17}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rexgradient")
    return out, write_samples(out, patients=120, seed=7)


def read_csv(root: Path, split: str) -> list[dict]:
    with (root / "metadata" / f"{split}_metadata.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(root: Path, name: str) -> dict | list:
    return json.loads((root / "metadata" / name).read_text(encoding="utf-8"))


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_has_exactly_the_real_file_names(sample):
    root, _ = sample
    assert sorted(all_files(root)) == EXPECTED_FILES


def test_same_seed_is_byte_identical_and_other_seed_differs(sample, tmp_path):
    root, _ = sample
    write_samples(tmp_path / "again", patients=120, seed=7)
    write_samples(tmp_path / "other", patients=120, seed=8)
    assert all_files(tmp_path / "again") == all_files(root)
    other = all_files(tmp_path / "other")
    assert all(other[name] != content for name, content in all_files(root).items())


def test_csv_header_is_exact_and_ids_are_unique(sample):
    root, _ = sample
    for split in SPLITS:
        with (root / "metadata" / f"{split}_metadata.csv").open(encoding="utf-8", newline="") as handle:
            assert next(csv.reader(handle)) == CSV_HEADER
        ids = [row["id"] for row in read_csv(root, split)]
        assert len(ids) == len(set(ids))


def test_csv_needs_real_quoting(sample):
    """Multi-line reports, embedded commas and quotes: a naive line/comma split must fail."""
    root, _ = sample
    text = (root / "metadata" / "train_metadata.csv").read_text(encoding="utf-8")
    rows = read_csv(root, "train")
    assert text.count("\n") > len(rows) + 1
    assert any('"' in row["Indication"] for row in rows)
    assert any("," in row["Findings"] for row in rows)


@pytest.mark.parametrize("suffix", ["_metadata.json", "_metadata_view_position.json"])
def test_json_keys_match_csv_ids_one_to_one(sample, suffix):
    root, _ = sample
    for split in SPLITS:
        payload = read_json(root, f"{split}{suffix}")
        assert list(payload) == [row["id"] for row in read_csv(root, split)]


def test_json_records_have_the_expected_fields_in_order(sample):
    root, _ = sample
    for split in SPLITS:
        for record in read_json(root, f"{split}_metadata.json").values():
            assert list(record) == JSON_FIELDS
        for record in read_json(root, f"{split}_metadata_view_position.json").values():
            assert list(record) == JSON_FIELDS + ["ImageViewPosition"]


def test_keys_paths_and_per_image_lists_agree(sample):
    root, _ = sample
    image_counts = Counter()
    for split in SPLITS:
        for key, record in read_json(root, f"{split}_metadata_view_position.json").items():
            patient, accession, study_uid = KEY_RE.match(key).groups()
            assert (record["PatientID"], record["AccessionNumber"], record["StudyInstanceUid"]) == (
                patient,
                accession,
                study_uid,
            )
            n_images = len(record["ImagePath"])
            assert 1 <= n_images <= 4
            image_counts[n_images] += 1
            for field in ("ImageViewPosition", "ImageModality", "ImageShape", "ImageBodyPart"):
                assert len(record[field]) == n_images, field
            for path, view in zip(record["ImagePath"], record["ImageViewPosition"]):
                assert PATH_RE.match(path).groups() == (patient, accession, study_uid)
                assert view in VIEWS
            assert len(set(record["ImagePath"])) == n_images
    assert image_counts[1] and image_counts[2]


def test_csv_scalars_equal_json_scalars(sample):
    root, _ = sample
    for split in SPLITS:
        payload = read_json(root, f"{split}_metadata.json")
        for row in read_csv(root, split):
            record = payload[row["id"]]
            for column in CSV_HEADER[1:]:
                assert row[column] == ("" if record[column] is None else record[column]), column


def test_value_formats(sample):
    root, _ = sample
    for split in SPLITS:
        for row in read_csv(root, split):
            assert re.fullmatch(r"\d{3}[YMD]", row["PatientAge"])
            assert row["PatientSex"] in {"M", "F", "O", ""}
            assert re.fullmatch(r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", row["StudyDate"])
            assert len(row["StudyInstanceUid"]) <= 64


def test_absent_sections_use_the_real_spellings(sample):
    root, _ = sample
    values = [
        record[section]
        for split in SPLITS
        for record in read_json(root, f"{split}_metadata.json").values()
        for section in ("Indication", "Comparison", "Findings", "Impression")
    ]
    assert None in values and "" in values
    assert any(isinstance(value, str) and value.lower() == "none" for value in values)


def test_patients_are_disjoint_across_splits(sample):
    root, _ = sample
    patients = {split: {row["PatientID"] for row in read_csv(root, split)} for split in SPLITS}
    assert all(patients.values())
    assert not patients["train"] & patients["valid"]
    assert not patients["train"] & patients["test"]
    assert not patients["valid"] & patients["test"]


def test_patient_attributes_are_constant_across_studies(sample):
    root, _ = sample
    seen: dict[str, tuple] = {}
    for split in SPLITS:
        for row in read_csv(root, split):
            attributes = (row["PatientSex"], row["EthnicGroup"])
            assert seen.setdefault(row["PatientID"], attributes) == attributes


def bucket(age: str) -> str:
    years = int(age[:3]) / {"Y": 1, "M": 12, "D": 365}[age[3]]
    return AGE_BUCKETS[min(4, int(years // 20))]


def present(value: str) -> bool:
    return value.strip() != "" and value.strip().lower() != "none"


def test_truth_agrees_with_a_recount_of_the_files(sample):
    root, truth = sample
    for split in SPLITS:
        rows = read_csv(root, split)
        views = read_json(root, f"{split}_metadata_view_position.json")
        expected = truth["splits"][split]
        assert expected["patients"] == len({row["PatientID"] for row in rows})
        assert expected["studies"] == len(rows)
        assert expected["images"] == sum(len(record["ImagePath"]) for record in views.values())
        for section in ("Indication", "Comparison", "Findings", "Impression"):
            texts = [row[section] for row in rows if present(row[section])]
            assert expected["sections"][section] == {
                "studies_present": len(texts),
                "tokens": sum(len(text.split()) for text in texts),
            }
        assert expected["sex"] == {sex: sum(row["PatientSex"] == sex for row in rows) for sex in ("M", "F", "O", "")}
        ages = Counter(bucket(row["PatientAge"]) for row in rows)
        assert expected["age_bucket"] == {name: ages[name] for name in AGE_BUCKETS}
    for key in ("patients", "studies", "images"):
        assert truth["total"][key] == sum(truth["splits"][split][key] for split in SPLITS)
    json.dumps(truth)  # serializable


def test_interstitial_boxes_are_label_studio_rectangles_on_train_images(sample):
    root, truth = sample
    train_paths = {
        path for record in read_json(root, "train_metadata_view_position.json").values() for path in record["ImagePath"]
    }
    tasks = read_json(root, "interstitial_pattern_bbox.json")
    boxes = [result for task in tasks for annotation in task["annotations"] for result in annotation["result"]]
    assert len(boxes) == truth["interstitial_boxes"] > 0
    assert all(task["data"]["image"] in train_paths for task in tasks)
    for box in boxes:
        value = box["value"]
        assert box["type"] == "rectanglelabels" and value["rectanglelabels"]
        assert value["x"] >= 0 and value["x"] + value["width"] <= 100
        assert value["y"] >= 0 and value["y"] + value["height"] <= 100


def test_report_lengths_and_demographics_follow_the_paper(tmp_path):
    truth = write_samples(tmp_path, patients=1500, seed=1)
    studies = truth["total"]["studies"]
    for section, mean in TABLE1_MEAN_TOKENS.items():
        tokens = sum(split["sections"][section]["tokens"] for split in truth["splits"].values())
        assert tokens / studies == pytest.approx(mean, rel=0.15), section
    assert truth["total"]["images"] / studies == pytest.approx(273_004 / 160_000, rel=0.05)
    male = sum(split["sex"]["M"] for split in truth["splits"].values()) / studies
    assert male == pytest.approx(0.49, abs=0.04)

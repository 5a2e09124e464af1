"""The CheXpert Plus sample must look like the real release, link to CheXpert, and agree with its truth."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from warehouse.samples.chexpert_plus import write_samples

HEADER = [
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
]
SECTIONS = HEADER[7:18]
LABELS = {
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
}
LABEL_FILES = ("findings_fixed.json", "impression_fixed.json", "report_fixed.json")
PATIENT_COLUMNS = ("race", "ethnicity", "interpreter_needed", "insurance_type", "recent_bmi", "deceased", "sex")
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+", "unknown")
ANONYMIZED = (
    "This report has been anonymized. All dates are offset from the actual dates by a fixed "
    "interval associated with the patient."
)
PATH_RE = re.compile(r"^(train|valid)/(patient\d{5})/(study\d+)/view\d+_(frontal|lateral)\.jpg$")
CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
# A few real-format CheXpert v1.0 train.csv rows (studies listed newest first, as the real file does).
CHEXPERT_ROWS = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,PA,,,,,,1.0,,,,0.0,,,,",
    "CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg,Unknown,0,Frontal,AP,1.0,,,,,,,,,,,,,",
    "CheXpert-v1.0-small/train/patient00004/study1/view2_frontal.jpg,Unknown,0,Frontal,LL,1.0,,,,,,,,,,,,,",
]


def expected_images() -> dict[str, dict]:
    """Plus path -> the CheXpert facts the sample must carry over."""
    images = {}
    for line in CHEXPERT_ROWS:
        path, sex, age, view, ap_pa = line.split(",")[:5]
        images[path.removeprefix("CheXpert-v1.0-small/")] = {
            "sex": sex,
            "age": f"{float(age)}",
            "frontal_lateral": view,
            "ap_pa": ap_pa,
        }
    return images


@pytest.fixture(params=["train.csv", "train.csv.gz"])
def chexpert_csv(request, tmp_path) -> Path:
    text = "\n".join([CHEXPERT_HEADER] + CHEXPERT_ROWS) + "\n"
    path = tmp_path / request.param
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("chexpert_plus")
    return out, write_samples(out, patients=80, seed=5)


def read_rows(root: Path) -> list[dict]:
    with (root / "df_chexpert_plus_240401.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_labels(root: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (root / "chexbert_labels" / name).read_text().splitlines()]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket(age: str) -> str:
    return "unknown" if age == "" else AGE_BUCKETS[min(4, int(float(age) // 20))]


def study_key(path: str) -> tuple[str, str]:
    return tuple(path.split("/")[1:3])


def test_layout_and_exact_header(sample):
    root, _ = sample
    assert sorted(all_files(root)) == sorted(
        ["df_chexpert_plus_240401.csv"] + [f"chexbert_labels/{name}" for name in LABEL_FILES]
    )
    with (root / "df_chexpert_plus_240401.csv").open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == HEADER


def test_same_seed_is_byte_identical_and_other_seed_differs(sample, tmp_path):
    root, _ = sample
    write_samples(tmp_path / "again", patients=80, seed=5)
    write_samples(tmp_path / "other", patients=80, seed=6)
    assert all_files(tmp_path / "again") == all_files(root)
    other = all_files(tmp_path / "other")
    assert all(other[name] != content for name, content in all_files(root).items())


def test_linked_rows_reuse_the_chexpert_paths_views_sexes_and_ages(chexpert_csv, tmp_path):
    truth = write_samples(tmp_path / "out", patients=4, seed=0, chexpert_train_csv=chexpert_csv)
    train = [row for row in read_rows(tmp_path / "out") if row["split"] == "train"]
    expected = expected_images()
    assert [row["path_to_image"] for row in train] == list(expected)
    for row in train:
        facts = expected[row["path_to_image"]]
        assert {column: row[column] for column in facts} == facts
        assert row["deid_patient_id"] == row["path_to_image"].split("/")[1]
        assert row["patient_report_date_order"] == row["path_to_image"].split("/")[2].removeprefix("study")
    assert truth["linked_to_chexpert_patients"] == 4
    assert truth["splits"]["train"]["patients"] == 4


def test_linking_a_subset_keeps_every_image_of_the_chosen_patients(chexpert_csv, tmp_path):
    write_samples(tmp_path / "out", patients=2, seed=3, chexpert_train_csv=chexpert_csv)
    train = [row["path_to_image"] for row in read_rows(tmp_path / "out") if row["split"] == "train"]
    chosen = {path.split("/")[1] for path in train}
    assert len(chosen) == 2
    assert train == [path for path in expected_images() if path.split("/")[1] in chosen]


def test_linking_more_patients_than_the_csv_has_fails(chexpert_csv, tmp_path):
    with pytest.raises(ValueError):
        write_samples(tmp_path / "out", patients=5, chexpert_train_csv=chexpert_csv)


def test_rows_are_images_with_chexpert_shaped_paths(sample):
    root, _ = sample
    rows = read_rows(root)
    assert len({row["path_to_image"] for row in rows}) == len(rows)
    for row in rows:
        split, patient, _, view = PATH_RE.match(row["path_to_image"]).groups()
        assert row["split"] == split and row["deid_patient_id"] == patient
        assert row["path_to_dcm"] == row["path_to_image"].removesuffix(".jpg") + ".dcm"
        assert row["frontal_lateral"] == view.capitalize()
        assert (row["ap_pa"] == "") == (view == "lateral")
        assert row["sex"] in {"Female", "Male", "Unknown"}
        assert row["age"] == "" or re.fullmatch(r"\d+\.0", row["age"])
        assert row["recent_bmi"] == "" or re.fullmatch(r"\d+\.\d", row["recent_bmi"])


def test_valid_rows_use_the_valid_patient_range(sample):
    root, _ = sample
    valid = [row for row in read_rows(root) if row["split"] == "valid"]
    assert len({row["deid_patient_id"] for row in valid}) >= 2
    assert all(64541 <= int(row["deid_patient_id"][7:]) <= 64740 for row in valid)
    assert all(row["path_to_image"].startswith(f"valid/{row['deid_patient_id']}/study1/") for row in valid)


def test_report_is_repeated_per_image_and_demographics_per_patient(sample):
    root, _ = sample
    by_study: dict[tuple, dict] = {}
    by_patient: dict[str, tuple] = {}
    for row in read_rows(root):
        text = {column: row[column] for column in ["report"] + SECTIONS + ["age", "patient_report_date_order"]}
        assert by_study.setdefault(study_key(row["path_to_image"]), text) == text
        demographics = tuple(row[column] for column in PATIENT_COLUMNS)
        assert by_patient.setdefault(row["deid_patient_id"], demographics) == demographics


def test_reports_have_headers_sections_and_the_anonymization_line(sample):
    root, _ = sample
    rows = read_rows(root)
    for row in rows:
        report = row["report"]
        assert report.endswith("\n" + ANONYMIZED)
        assert re.match(r"^(NARRATIVE|CLINICAL HISTORY|HISTORY|COMPARISON):", report)
        for column in SECTIONS:
            assert row[column] in report, column
    assert any(not row["section_findings"] for row in rows)
    assert any(row["section_findings"] for row in rows)
    headers = Counter(header for row in rows for header in re.findall(r"^([A-Z][A-Z ]+):", row["report"], re.M))
    assert {
        "NARRATIVE",
        "HISTORY",
        "CLINICAL HISTORY",
        "COMPARISON",
        "TECHNIQUE",
        "FINDINGS",
        "IMPRESSION",
        "SUMMARY",
        "ACCESSION NUMBER",
    } <= set(headers)


def test_label_files_are_json_lines_one_record_per_image(sample):
    root, _ = sample
    rows = read_rows(root)
    for name in LABEL_FILES:
        text = (root / "chexbert_labels" / name).read_text()
        assert text.endswith("\n") and "\\/" in text  # pandas to_json escapes "/"
        records = read_labels(root, name)
        assert [record["path_to_image"] for record in records] == [row["path_to_image"] for row in rows]
        for record in records:
            assert set(record) == LABELS | {"path_to_image"}
            assert {record[label] for label in LABELS} <= {1.0, 0.0, -1.0, None}


def test_labels_follow_the_text_they_were_read_from(sample):
    root, _ = sample
    rows = read_rows(root)
    scopes = {"findings_fixed.json": "section_findings", "impression_fixed.json": "section_impression"}
    for name, column in scopes.items():
        for row, record in zip(rows, read_labels(root, name)):
            if not row[column].strip():
                assert all(record[label] is None for label in LABELS)
    keywords = {
        "Pleural Effusion": ("effusion",),
        "Pneumothorax": ("pneumothorax",),
        "Fracture": ("fracture",),
        "Cardiomegaly": ("cardiomegaly", "cardiac silhouette is enlarged"),
        "Lung Lesion": ("nodul",),
    }
    for row, record in zip(rows, read_labels(root, "report_fixed.json")):
        for label, words in keywords.items():
            if record[label] == 1.0:
                assert any(word in row["report"].lower() for word in words), label
        if record["No Finding"] == 1.0:
            assert not any(record[label] in (1.0, -1.0) for label in LABELS - {"No Finding", "Support Devices"})


def test_truth_agrees_with_a_recount_of_the_files(sample):
    root, truth = sample
    rows = read_rows(root)
    first_rows = {}
    for row in rows:
        first_rows.setdefault(study_key(row["path_to_image"]), row)
    assert truth["rows"] == len(rows)
    assert truth["studies"] == len(first_rows)
    assert truth["patients"] == len({row["deid_patient_id"] for row in rows})
    assert truth["linked_to_chexpert_patients"] == 0
    for split in ("train", "valid"):
        split_rows = [row for row in rows if row["split"] == split]
        studies = [row for row in first_rows.values() if row["split"] == split]
        expected = truth["splits"][split]
        assert expected["patients"] == len({row["deid_patient_id"] for row in split_rows})
        assert expected["studies"] == len(studies)
        assert expected["images"] == len(split_rows)
        for column in SECTIONS:
            texts = [row[column] for row in studies if row[column].strip()]
            assert expected["sections"][column] == {
                "studies_present": len(texts),
                "tokens": sum(len(text.split()) for text in texts),
            }
        assert expected["sex"] == {
            sex: sum(row["sex"] == sex for row in studies) for sex in ("Female", "Male", "Unknown")
        }
        ages = Counter(bucket(row["age"]) for row in studies)
        assert expected["age_bucket"] == {name: ages[name] for name in AGE_BUCKETS}
    for name in LABEL_FILES:
        records = read_labels(root, name)
        assert truth["label_positives"][name] == {
            label: sum(record[label] == 1.0 for record in records) for label in truth["label_positives"][name]
        }
    json.dumps(truth)  # serializable

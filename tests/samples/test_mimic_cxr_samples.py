"""The MIMIC-CXR sample generator writes what the real release holds, and its truth is honest.

Everything is re-read here with csv / gzip / zipfile only, never through the generator's own
helpers, so a drift in file layout or in the truth dict shows up as a failing recount.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.samples.mimic_cxr import write_samples, write_split_file

PATIENTS = 60
SEED = 3

EXPECTED_HEADERS = {
    "mimic-cxr-2.0.0-metadata.csv.gz": "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,"
    "ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,"
    "ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning",
    "mimic-cxr-2.0.0-split.csv.gz": "dicom_id,study_id,subject_id,split",
    "mimic-cxr-2.0.0-chexpert.csv.gz": "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,"
    "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,"
    "Pleural Other,Pneumonia,Pneumothorax,Support Devices",
    "mimic-cxr-2.0.0-negbio.csv.gz": "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,"
    "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,"
    "Pleural Other,Pneumonia,Pneumothorax,Support Devices",
    "cxr-record-list.csv.gz": "subject_id,study_id,dicom_id,path",
    "cxr-study-list.csv.gz": "subject_id,study_id,path",
    "cxr-provider-list.csv.gz": "study_id,ordering_provider_id,attending_provider_id,resident_provider_id",
    "mimiciv/3.1/hosp/patients.csv.gz": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "mimiciv/3.1/hosp/admissions.csv.gz": "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,"
    "admit_provider_id,admission_location,discharge_location,insurance,language,marital_status,race,"
    "edregtime,edouttime,hospital_expire_flag",
}
TEST_SET_LABELS = {
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Airspace Opacity",
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
PATHOLOGIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
)
# Words a labelled section must contain when a labeler gave the label any value.
LABEL_WORDS = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly|heart|cardiac",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Enlarged Cardiomediastinum": "mediastin",
    "Fracture": "fracture",
    "Lung Lesion": "nodul",
    "Lung Opacity": "opacity",
    "Pleural Effusion": "effusion",
    "Pleural Other": "pleural thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "tube|catheter|line|pacemaker",
}

# Our reading of mimic-code's section_parser.py: the official header regex, the header spellings
# its normalizer maps that this generator emits, and its last-paragraph fallback.
HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
NORMALIZED_HEADERS = {
    "impresson": "impression",
    "conclusion": "impression",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
}
KNOWN_SECTIONS = {
    "preamble",
    "examination",
    "indication",
    "technique",
    "comparison",
    "history",
    "findings",
    "impression",
    "notification",
    "last_paragraph",
}


def section_text(text: str) -> list[tuple[str, str]]:
    match = HEADER.search(text)
    if match is None:
        return [("full report", text)]
    sections = [("preamble", text[: match.start(1)])]
    while match:
        name = match.group(1).lower().strip()
        start = match.end()
        newline = text[start:].find("\n")
        match = HEADER.search(text, start + max(newline, 0))
        sections.append((NORMALIZED_HEADERS.get(name, name), text[start : match.start() if match else len(text)]))
    sections = [(name, body) for name, body in sections if name not in ("impression", "findings") or body.strip()]
    names = {name for name, _ in sections}
    if not names & {"impression", "findings"} and "\n \n" in sections[-1][1]:
        head, *rest = sections[-1][1].split("\n \n")
        sections[-1] = (sections[-1][0], head)
        sections.append(("last_paragraph", "\n \n".join(rest)))
    return sections


def labelled_text(sections: list[tuple[str, str]]) -> str | None:
    """What CheXpert/NegBio read: the impression, else the findings, else the last paragraph."""
    for wanted in ("impression", "findings", "last_paragraph"):
        bodies = [body for name, body in sections if name == wanted]
        if bodies:
            return bodies[-1]
    return None


def read_gz_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_reports(root: Path) -> dict[str, str]:
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip") as archive:
        return {name: archive.read(name).decode("utf-8") for name in archive.namelist() if not name.endswith("/")}


def all_files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mimic_cxr")
    truth = write_samples(root, patients=PATIENTS, seed=SEED, extract_reports=True)
    return root, truth


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_writes_identical_bytes(tmp_path):
    first = write_samples(tmp_path / "a", patients=30, seed=7, extract_reports=True)
    second = write_samples(tmp_path / "b", patients=30, seed=7, extract_reports=True)
    assert all_files(tmp_path / "a") == all_files(tmp_path / "b")
    assert first == second


def test_other_seed_changes_every_file(tmp_path):
    write_samples(tmp_path / "a", patients=30, seed=7)
    write_samples(tmp_path / "b", patients=30, seed=8)
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert first.keys() == second.keys()
    unchanged = [name for name in first if first[name] == second[name]]
    # A cohort without labelled test studies leaves only the header in the test-set file.
    assert all(name == "mimic-cxr-2.1.0-test-set-labeled.csv" and first[name].count(b"\n") == 1 for name in unchanged)


def test_gzip_headers_carry_no_file_name_or_timestamp(sample):
    root, truth = sample
    for name in (n for n in truth["files"] if n.endswith(".gz")):
        head = (root / name).read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and head[3] & 0x08 == 0, name
        assert head[4:8] == b"\0\0\0\0", name


def test_mimic_iv_switch_leaves_mimic_cxr_bytes_alone(tmp_path):
    with_iv = write_samples(tmp_path / "with", patients=30, seed=2)
    without_iv = write_samples(tmp_path / "without", patients=30, seed=2, mimic_iv=False)
    assert without_iv["mimic_iv"] is None and not (tmp_path / "without" / "mimiciv").exists()
    cxr_files = {name: data for name, data in all_files(tmp_path / "with").items() if not name.startswith("mimiciv/")}
    assert cxr_files == all_files(tmp_path / "without")
    assert {k: v for k, v in with_iv.items() if k not in ("mimic_iv", "files")} == {
        k: v for k, v in without_iv.items() if k not in ("mimic_iv", "files")
    }


def test_truth_is_json_serializable(sample):
    _, truth = sample
    assert json.loads(json.dumps(truth)) == truth


# --- layout and headers --------------------------------------------------------------------------


def test_release_files_are_all_there(sample):
    root, truth = sample
    expected = set(EXPECTED_HEADERS) | {
        "mimic-cxr-2.1.0-test-set-labeled.csv",
        "IMAGE_FILENAMES",
        "mimic-cxr-reports.zip",
    }
    assert set(truth["files"]) == expected
    assert all((root / name).is_file() for name in expected)


@pytest.mark.parametrize("name", sorted(EXPECTED_HEADERS))
def test_gzip_csv_header_is_exact(sample, name):
    root, _ = sample
    with gzip.open(root / name, "rt", encoding="utf-8", newline="") as handle:
        assert handle.readline() == EXPECTED_HEADERS[name] + "\n"


def test_test_set_file_is_plain_csv_without_subject_id(sample):
    root, _ = sample
    raw = (root / "mimic-cxr-2.1.0-test-set-labeled.csv").read_bytes()
    assert not raw.startswith(b"\x1f\x8b")
    header = raw.decode("utf-8").split("\n")[0].split(",")
    assert header[0] == "study_id" and set(header[1:]) == TEST_SET_LABELS and len(header) == 15


# --- ids, splits and paths -----------------------------------------------------------------------


def test_split_covers_metadata_and_no_subject_spans_two_splits(sample):
    root, _ = sample
    metadata = read_gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = read_gz_rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    split_by_dicom = {row["dicom_id"]: row for row in split}
    assert len(split_by_dicom) == len(split) == len(metadata)
    for row in metadata:
        assert (split_by_dicom[row["dicom_id"]]["study_id"], split_by_dicom[row["dicom_id"]]["subject_id"]) == (
            row["study_id"],
            row["subject_id"],
        )
    splits_of_subject = defaultdict(set)
    for row in split:
        splits_of_subject[row["subject_id"]].add(row["split"])
    assert {s for splits in splits_of_subject.values() for s in splits} <= {"train", "validate", "test"}
    assert all(len(splits) == 1 for splits in splits_of_subject.values())


def test_split_file_helper_matches_full_release(sample, tmp_path):
    root, _ = sample
    write_split_file(tmp_path, plan_mimic_cohort(PATIENTS, SEED))
    assert (tmp_path / "mimic-cxr-2.0.0-split.csv.gz").read_bytes() == (
        root / "mimic-cxr-2.0.0-split.csv.gz"
    ).read_bytes()


def test_explicit_cohort_drives_the_files(tmp_path):
    cohort = plan_mimic_cohort(12, seed=99)
    truth = write_samples(tmp_path, cohort=cohort, seed=1)
    studies = {str(study.study_id) for study in cohort}
    assert truth["studies"] == len(cohort)
    assert {row["study_id"] for row in read_gz_rows(tmp_path / "cxr-study-list.csv.gz")} == studies


def test_metadata_values_look_like_mimic(sample):
    root, _ = sample
    view_codes = {
        "PA": {"postero-anterior"},
        "AP": {"antero-posterior"},
        "LATERAL": {"lateral", "left lateral"},
        "LL": {"left lateral"},
        "": {""},
    }
    for row in read_gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz"):
        assert re.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}", row["dicom_id"])
        assert re.fullmatch(r"1\d{7}", row["subject_id"]) and re.fullmatch(r"5\d{7}", row["study_id"])
        assert re.fullmatch(r"2[12]\d{6}", row["StudyDate"])
        clock = f"{int(float(row['StudyTime'])):06d}"
        assert int(clock[:2]) < 24 and int(clock[2:4]) < 60 and int(clock[4:]) < 60
        assert row["ViewCodeSequence_CodeMeaning"] in view_codes[row["ViewPosition"]]
        assert row["PatientOrientationCodeSequence_CodeMeaning"] in {"Erect", "Recumbent", ""}
        assert row["ProcedureCodeSequence_CodeMeaning"].startswith("CHEST")
        assert int(row["Rows"]) > 0 and int(row["Columns"]) > 0


def test_record_list_and_image_filenames_match_metadata(sample):
    root, _ = sample
    metadata = read_gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    expected = {f"files/p{r['subject_id'][:2]}/p{r['subject_id']}/s{r['study_id']}/{r['dicom_id']}" for r in metadata}
    records = read_gz_rows(root / "cxr-record-list.csv.gz")
    assert {row["path"] for row in records} == {path + ".dcm" for path in expected}
    assert all(row["path"].endswith(f"/s{row['study_id']}/{row['dicom_id']}.dcm") for row in records)
    lines = (root / "IMAGE_FILENAMES").read_text(encoding="utf-8").splitlines()
    assert lines == sorted(lines) and set(lines) == {path + ".jpg" for path in expected}


def test_reports_zip_matches_study_list(sample):
    root, truth = sample
    studies = read_gz_rows(root / "cxr-study-list.csv.gz")
    assert all(
        row["path"] == f"files/p{row['subject_id'][:2]}/p{row['subject_id']}/s{row['study_id']}.txt" for row in studies
    )
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip") as archive:
        names = archive.namelist()
    members = [name for name in names if not name.endswith("/")]
    assert sorted(members) == sorted(row["path"] for row in studies)
    patient_dirs = {name for name in names if re.fullmatch(r"files/p1\d/p1\d{7}/", name)}
    used_dirs = {name.rsplit("/", 1)[0] + "/" for name in members}
    assert names[0] == "files/" and used_dirs <= patient_dirs
    assert len(patient_dirs - used_dirs) == truth["reports_zip_empty_patient_dirs"] == 1
    extracted = {p.relative_to(root).as_posix() for p in (root / "files").rglob("*.txt")}
    assert extracted == set(members)


def test_provider_list_has_one_row_per_study(sample):
    root, truth = sample
    rows = read_gz_rows(root / "cxr-provider-list.csv.gz")
    assert len(rows) == len({row["study_id"] for row in rows}) == truth["studies"]
    ids = [value for row in rows for key, value in row.items() if key != "study_id" and value]
    assert all(re.fullmatch(r"P[0-9A-Z]{5}", value) for value in ids)


# --- reports -------------------------------------------------------------------------------------


def test_reports_look_like_mimic_reports(sample):
    root, truth = sample
    reports = read_reports(root)
    non_ascii, addenda = [], []
    for name, text in reports.items():
        lines = text.split("\n")
        assert text.endswith("\n") and " " * 33 + "FINAL REPORT" in lines
        assert all(len(line) <= 79 for line in lines), name
        assert all(line.startswith(" ") for line in lines if line), name
        assert "\t" not in text and "\r" not in text
        if not text.isascii():
            non_ascii.append(name)
        if "_" * 78 in text:
            assert lines[0].strip() == "FINAL ADDENDUM"
            addenda.append(name)
        else:
            assert lines[0] == " " * 33 + "FINAL REPORT"
    assert any("___" in text for text in reports.values())
    paths = lambda pairs: sorted(f"files/p{str(s)[:2]}/p{s}/s{t}.txt" for s, t in pairs)
    assert sorted(non_ascii) == paths(truth["reports_non_ascii"]) and len(non_ascii) == 2
    assert sorted(addenda) == paths(truth["reports_with_addendum"])


def test_sectioner_finds_the_expected_sections(sample):
    root, truth = sample
    counts = defaultdict(int)
    misspelled = []
    for name, text in read_reports(root).items():
        sections = section_text(text)
        names = {section for section, _ in sections}
        assert names <= KNOWN_SECTIONS, (name, names)
        if re.search(r"\n IMPRESSON:\s", text):
            misspelled.append(name)
        counts["impression"] += "impression" in names
        counts["findings"] += "findings" in names
        counts["findings_only"] += "findings" in names and "impression" not in names
        counts["impression_only"] += "impression" in names and "findings" not in names
        counts["last_paragraph"] += "last_paragraph" in names
        counts["none"] += labelled_text(sections) is None
    assert counts["impression"] == truth["reports_with_impression"]
    assert counts["findings"] == truth["reports_with_findings"]
    assert counts["findings_only"] == truth["reports_findings_only"] > 0
    assert counts["impression_only"] == truth["reports_impression_only"] > 0
    assert counts["last_paragraph"] == truth["reports_last_paragraph_only"] > 0
    assert counts["none"] == truth["reports_without_sections"] == len(truth["studies_without_label_rows"]) > 0
    assert len(misspelled) == len(truth["reports_misspelled_impression_header"]) > 0


def test_label_values_are_mentioned_in_the_section_the_labelers_read(sample):
    root, _ = sample
    reports = read_reports(root)
    for labeler in ("chexpert", "negbio"):
        for row in read_gz_rows(root / f"mimic-cxr-2.0.0-{labeler}.csv.gz"):
            text = labelled_text(
                section_text(reports[f"files/p{row['subject_id'][:2]}/p{row['subject_id']}/s{row['study_id']}.txt"])
            )
            assert text is not None
            words_in_text = " ".join(text.lower().split())  # undo the 79-column wrapping
            for label, words in LABEL_WORDS.items():
                if row[label]:
                    assert re.search(words, words_in_text), (labeler, row["study_id"], label, text)


# --- labels and truth ----------------------------------------------------------------------------


def test_label_files_match_truth(sample):
    root, truth = sample
    chexpert = read_gz_rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    negbio = read_gz_rows(root / "mimic-cxr-2.0.0-negbio.csv.gz")
    assert len(chexpert) == truth["chexpert_rows"] and len(negbio) == truth["negbio_rows"]
    keys = lambda rows: {(int(row["subject_id"]), int(row["study_id"])) for row in rows}
    all_studies = {
        (int(row["subject_id"]), int(row["study_id"])) for row in read_gz_rows(root / "cxr-study-list.csv.gz")
    }
    assert all_studies - keys(negbio) == {tuple(pair) for pair in truth["studies_without_label_rows"]}
    assert keys(negbio) - keys(chexpert) == {tuple(pair) for pair in truth["studies_without_chexpert_row"]} != set()
    for name, rows in (("chexpert", chexpert), ("negbio", negbio)):
        for label, positives in truth["positives"][name].items():
            assert sum(row[label] == "1.0" for row in rows) == positives, (name, label)
            assert sum(row[label] == "-1.0" for row in rows) == truth["uncertain"][name][label], (name, label)
        for row in rows:
            assert {value for key, value in row.items() if key not in ("subject_id", "study_id")} <= {
                "1.0",
                "0.0",
                "-1.0",
                "",
            }
            assert row["No Finding"] in ("1.0", "")
            assert (row["No Finding"] == "1.0") == all(row[label] in ("0.0", "") for label in PATHOLOGIES)


def test_test_set_labels_cover_only_test_studies(sample):
    root, truth = sample
    with open(root / "mimic-cxr-2.1.0-test-set-labeled.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    split_of_study = {row["study_id"]: row["split"] for row in read_gz_rows(root / "mimic-cxr-2.0.0-split.csv.gz")}
    assert len(rows) == truth["test_set_labeled_rows"]
    assert (len(rows) > 0) == (truth["studies_per_split"]["test"] > 0)
    assert all(split_of_study[row["study_id"]] == "test" for row in rows)
    for label, positives in truth["positives"]["test_set_labeled"].items():
        assert sum(row[label] == "1.0" for row in rows) == positives


def test_split_counts_match_truth(sample):
    root, truth = sample
    split = read_gz_rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    for name in ("train", "validate", "test"):
        rows = [row for row in split if row["split"] == name]
        assert len(rows) == truth["images_per_split"][name]
        assert len({row["study_id"] for row in rows}) == truth["studies_per_split"][name]
        assert len({row["subject_id"] for row in rows}) == truth["patients_per_split"][name]
    assert (len(split), len({r["study_id"] for r in split}), len({r["subject_id"] for r in split})) == (
        truth["images"],
        truth["studies"],
        truth["patients"],
    )
    assert truth["reports"] == truth["studies"]


# --- MIMIC-IV --------------------------------------------------------------------------------------


def test_mimic_iv_demographics_match_truth(sample):
    root, truth = sample
    mimic_iv = truth["mimic_iv"]
    patients = {row["subject_id"]: row for row in read_gz_rows(root / "mimiciv/3.1/hosp/patients.csv.gz")}
    admissions = read_gz_rows(root / "mimiciv/3.1/hosp/admissions.csv.gz")
    metadata = read_gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    cxr_subjects = {row["subject_id"] for row in metadata}
    linked = cxr_subjects & patients.keys()
    assert len(patients) == mimic_iv["patients_rows"]
    assert len(linked) == mimic_iv["linked_cxr_patients"]
    assert len(cxr_subjects - linked) == mimic_iv["cxr_patients_not_in_mimic_iv"] > 0
    assert len(patients.keys() - cxr_subjects) == mimic_iv["mimic_iv_only_patients"]
    assert len(admissions) == mimic_iv["admissions_rows"]
    assert len({row["hadm_id"] for row in admissions}) == len(admissions)
    races = defaultdict(set)
    for row in admissions:
        races[row["subject_id"]].add(row["race"])
        assert row["hospital_expire_flag"] in ("0", "1") and (row["deathtime"] != "") == (
            row["hospital_expire_flag"] == "1"
        )
        assert row["admittime"] < row["dischtime"]
    conflicting = sorted(int(subject) for subject, values in races.items() if len(values) > 1 and subject in linked)
    assert conflicting == mimic_iv["conflicting_race_subject_ids"]
    assert len(conflicting) == mimic_iv["patients_with_conflicting_race"]
    assert len(linked & races.keys()) == mimic_iv["linked_patients_with_admissions"]
    for row in patients.values():
        assert row["gender"] in ("F", "M") and re.fullmatch(r"20\d\d - 20\d\d", row["anchor_year_group"])
        assert 18 <= int(row["anchor_age"]) <= 89 or row["anchor_age"] == "91"
        assert row["dod"] == "" or re.fullmatch(r"2\d{3}-\d\d-\d\d", row["dod"])
    ages = [
        int(patients[row["subject_id"]]["anchor_age"])
        + int(row["StudyDate"]) // 10000
        - int(patients[row["subject_id"]]["anchor_year"])
        for row in metadata
        if row["subject_id"] in linked
    ]
    assert 18 <= min(ages) == mimic_iv["age_at_study_min"]
    assert max(ages) == mimic_iv["age_at_study_max"]

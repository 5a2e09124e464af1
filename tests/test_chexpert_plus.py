"""CheXpert Plus adapter: the generator's truth, a recount of the files, and the join to real CheXpert.

Expected numbers come from the generator's truth dict, from reading the written files with the csv
and json modules here, or from the real CheXpert train.csv, never from the adapter itself.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.queries import named_query
from warehouse.samples.chexpert_plus import write_samples
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings

CSV_NAME = "df_chexpert_plus_240401.csv"
LABEL_FILES = {"findings": "findings_fixed.json", "impression": "impression_fixed.json", "report": "report_fixed.json"}
SECTION_COLUMNS = {
    "indication": ("section_clinical_history", "section_history"),
    "comparison": ("section_comparison",),
    "findings": ("section_findings",),
    "impression": ("section_impression",),
}
AGE_BUCKETS = ("0-20", "20-40", "40-60", "60-80", "80+", "unknown")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("chexpert_plus")
    return root, write_samples(root, patients=40, seed=2)


@pytest.fixture(scope="module")
def tables(sample) -> dict[str, pl.DataFrame]:
    result = get_adapter("chexpert_plus").read(SourceFolder(str(sample[0])))
    assert result.rejected().is_empty()
    return result.tables


def read(folder: Path):
    return get_adapter("chexpert_plus").read(SourceFolder(str(folder)))


def raw_rows(root: Path) -> list[dict]:
    with (root / CSV_NAME).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(root: Path, rows: list[dict]) -> None:
    with (root / CSV_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def ids(path: str) -> tuple[str, str, str]:
    """(patient, study, image) ids as the chexpert adapter writes them, from a Plus path."""
    _, patient, study, view = path.removesuffix(".jpg").split("/")
    return patient, f"{patient}/{study}", f"{patient}/{study}/{view}"


def first_rows_per_study(rows: list[dict]) -> dict[str, dict]:
    firsts: dict[str, dict] = {}
    for row in rows:
        firsts.setdefault(ids(row["path_to_image"])[1], row)
    return firsts


def bucket(age_years) -> str:
    return "unknown" if age_years is None else AGE_BUCKETS[min(4, int(age_years // 20))]


# --- counts against the generator's truth ----------------------------------------------------
def test_patients_and_studies_per_split_match_truth(sample, tables):
    _, truth = sample
    assert tables["patients"].height == truth["patients"]
    assert tables["studies"].height == tables["reports"].height == truth["studies"]
    for split in ("train", "valid"):
        studies = tables["studies"].filter(pl.col("split") == split)
        assert studies.height == truth["splits"][split]["studies"], split
        assert studies["patient_id"].n_unique() == truth["splits"][split]["patients"], split


def test_section_tokens_per_split_match_truth(sample, tables):
    _, truth = sample
    reports = tables["reports"].join(tables["studies"].select("study_id", "split"), on="study_id")
    for split in ("train", "valid"):
        rows = reports.filter(pl.col("split") == split)
        counted = truth["splits"][split]["sections"]
        for section, columns in SECTION_COLUMNS.items():
            assert rows[f"tokens_{section}"].sum() == sum(counted[c]["tokens"] for c in columns), (split, section)
            # the sample never fills both history columns of one report, so presence adds up
            assert rows[section].is_not_null().sum() == sum(counted[c]["studies_present"] for c in columns)


def test_sex_and_age_per_study_match_truth(sample, tables):
    _, truth = sample
    per_study = tables["studies"].join(tables["patients"], on="patient_id")
    for split in ("train", "valid"):
        rows = per_study.filter(pl.col("split") == split)
        sexes = Counter(rows["sex_source"])
        assert {sex: sexes[sex] for sex in ("Female", "Male", "Unknown")} == truth["splits"][split]["sex"]
        buckets = Counter(bucket(age) for age in rows["age_years"])
        assert {name: buckets[name] for name in AGE_BUCKETS} == truth["splits"][split]["age_bucket"]
    assert set(zip(per_study["sex_source"], per_study["sex"])) <= {("Female", "F"), ("Male", "M"), ("Unknown", "U")}


def test_chexbert_positives_per_file_match_truth(sample, tables):
    _, truth = sample
    labels = tables["labels"]
    assert set(labels["labeler"]) == {"chexbert"}
    for method, name in LABEL_FILES.items():
        positives = labels.filter((pl.col("method") == method) & (pl.col("value") == 1))
        counts = Counter(positives["raw_label"])
        assert {label: counts[label] for label in truth["label_positives"][name]} == truth["label_positives"][name]


def test_labels_equal_a_recount_of_the_json_lines(sample, tables):
    root, _ = sample
    expected = Counter()
    for method, name in LABEL_FILES.items():
        for line in (root / "chexbert_labels" / name).read_text().splitlines():
            record = json.loads(line)
            image = ids(record.pop("path_to_image"))[2]
            for label, value in record.items():
                if value is not None:
                    expected[(method, image, label, int(value))] += 1
    got = Counter(
        zip(
            tables["labels"]["method"],
            tables["labels"]["image_id"],
            tables["labels"]["raw_label"],
            tables["labels"]["value"],
        )
    )
    assert got == expected
    findings = dict(zip(tables["labels"]["raw_label"], tables["labels"]["finding"]))
    assert findings["Pleural Effusion"] == "pleural_effusion" and findings["Support Devices"] == "support_devices"


# --- ids, joins, keys -------------------------------------------------------------------------
def test_ids_are_chexperts_and_keys_unique(sample, tables):
    root, _ = sample
    rows = raw_rows(root)
    firsts = first_rows_per_study(rows)
    studies = tables["studies"]
    assert dict(zip(studies["study_id"], studies["patient_id"])) == {
        study: row["deid_patient_id"] for study, row in firsts.items()
    }
    assert dict(zip(studies["study_id"], studies["split"])) == {study: row["split"] for study, row in firsts.items()}
    assert set(tables["labels"]["image_id"]) == {ids(row["path_to_image"])[2] for row in rows}
    assert tables["patients"]["patient_id"].is_unique().all()
    assert studies["study_id"].is_unique().all() and tables["reports"]["study_id"].is_unique().all()
    assert not tables["labels"].select("study_id", "image_id", "labeler", "method", "raw_label").is_duplicated().any()
    assert tables["reports"].join(studies, on=["study_id", "patient_id"], how="anti").is_empty()
    assert tables["labels"].join(studies, on="study_id", how="anti").is_empty()
    assert studies.join(tables["patients"], on="patient_id", how="anti").is_empty()
    assert (studies.group_by("patient_id").agg(pl.col("split").n_unique())["split"] == 1).all()
    assert "images" not in tables  # the chexpert partition holds the image rows


def test_full_text_is_the_report_and_sections_follow_the_columns(sample, tables):
    root, _ = sample
    reports = {r["study_id"]: r for r in tables["reports"].iter_rows(named=True)}
    misplaced = 0
    for study, row in first_rows_per_study(raw_rows(root)).items():
        got = reports[study]
        assert got["full_text"] == row["report"]
        for section, columns in SECTION_COLUMNS.items():
            texts = [row[c].strip() for c in columns if row[c].strip()]
            assert got[section] == ("\n".join(texts) if texts else None), (study, section)
        # the documented odd row: an IMPRESSION header whose body sits in section_findings
        if "\nIMPRESSION:" in row["report"] and not row["section_impression"].strip():
            misplaced += 1
            assert got["impression"] is None and got["findings"] and "IMPRESSION:" in got["full_text"]
    assert misplaced, "the sample should contain reports whose sections do not follow their headers"


def test_both_history_columns_feed_the_indication(sample, tmp_path):
    root = Path(shutil.copytree(sample[0], tmp_path / "plus"))
    rows = raw_rows(root)
    study = ids(rows[0]["path_to_image"])[1]
    for row in rows:
        if ids(row["path_to_image"])[1] == study:
            row["section_clinical_history"], row["section_history"] = " Cough. \n", "\nFever for 3 days."
            row["section_findings"] = "  \n"
    write_rows(root, rows)
    report = read(root).tables["reports"].filter(pl.col("study_id") == study).row(0, named=True)
    assert report["indication"] == "Cough.\nFever for 3 days." and report["tokens_indication"] == 5
    assert report["findings"] is None and report["tokens_findings"] is None


# --- damaged input ----------------------------------------------------------------------------
def test_bad_label_lines_and_paths_are_quarantined_with_line_numbers(sample, tmp_path):
    root = Path(shutil.copytree(sample[0], tmp_path / "plus"))
    path = root / "chexbert_labels" / "impression_fixed.json"
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    lines[1] = lines[1][:-5]  # line 2: cut JSON
    lines[2] = json.dumps({**records[2], "Cardiomegaly": "yes"})  # line 3: not a number
    lines[3] = json.dumps({**records[3], "path_to_image": "elsewhere/x.jpg"})  # line 4: not a CheXpert path
    lines[4] = json.dumps({**records[4], "Edema": 0.5})  # line 5: not a whole number
    path.write_text("\n".join(lines) + "\n")

    result = read(root)
    rejected = result.rejected().sort("line_number").to_dicts()
    assert [(r["line_number"], r["column_name"]) for r in rejected] == [
        (2, ""),
        (3, ""),
        (4, "path_to_image"),
        (5, "value"),
    ]
    assert all(r["source_file"].endswith("chexbert_labels/impression_fixed.json") for r in rejected)
    assert rejected[0]["raw_record"] == lines[1] and "Cardiomegaly" in rejected[1]["reason"]
    assert rejected[2]["value"] == "elsewhere/x.jpg" and rejected[3]["value"] == "Edema: 0.5"
    expected = Counter()
    for number, record in enumerate(records, start=1):
        if number in (2, 3, 4):
            continue
        for label, value in record.items():
            if label != "path_to_image" and value is not None and not (number == 5 and label == "Edema"):
                expected[(ids(record["path_to_image"])[2], label, int(value))] += 1
    impression = result.tables["labels"].filter(pl.col("method") == "impression")
    assert Counter(zip(impression["image_id"], impression["raw_label"], impression["value"])) == expected


def test_bad_csv_path_is_quarantined_and_a_wrong_header_is_an_error(sample, tmp_path):
    root = Path(shutil.copytree(sample[0], tmp_path / "plus"))
    rows = raw_rows(root)
    rows[-1]["path_to_image"] = "CheXpert-v1.0/oops.jpg"
    write_rows(root, rows)
    result = read(root)
    bad = result.rejected().filter(pl.col("column_name") == "path_to_image")
    assert bad["value"].to_list() == ["CheXpert-v1.0/oops.jpg"] and bad["source_file"][0].endswith(CSV_NAME)

    text = (root / CSV_NAME).read_text(encoding="utf-8")
    (root / CSV_NAME).write_text(text.replace("recent_bmi", "bmi", 1), encoding="utf-8")
    with pytest.raises(SourceError, match=r"df_chexpert_plus_240401\.csv, line 1.*unexpected header"):
        read(root)
    (root / CSV_NAME).unlink()
    with pytest.raises(SourceError, match=r"df_chexpert_plus_240401\.csv\[\.gz\]"):
        read(root)


def test_gzipped_csv_and_missing_label_file(sample, tables, tmp_path):
    root = Path(shutil.copytree(sample[0], tmp_path / "plus"))
    csv_path = root / CSV_NAME
    csv_path.with_name(CSV_NAME + ".gz").write_bytes(gzip.compress(csv_path.read_bytes()))
    csv_path.unlink()
    (root / "chexbert_labels" / "report_fixed.json").unlink()
    result = read(root)
    assert result.tables["studies"].equals(tables["studies"])
    assert set(result.tables["labels"]["method"]) == {"findings", "impression"}
    assert any("report_fixed.json" in note for note in result.notes)


# --- with the real CheXpert -------------------------------------------------------------------
def test_plus_joins_real_chexpert_studies_images_and_labels(public_data, cache_dir, tmp_path):
    chexpert_csv = Path(public_data.root) / "chexpert" / "train.csv.gz"
    plus = tmp_path / "plus"
    truth = write_samples(plus, patients=25, seed=11, chexpert_train_csv=chexpert_csv)
    wh = Warehouse(make_settings(tmp_path, cache_dir, chexpert_plus=plus))
    wh.ingest(["chexpert", "chexpert_plus"], say=lambda m: None)

    def scalar(sql: str):
        return wh.sql(sql).column(0)[0].as_py()

    train = "FROM studies p WHERE p.dataset = 'chexpert_plus' AND p.split = 'train'"
    assert scalar(f"SELECT count(*) {train}") == truth["splits"]["train"]["studies"] > 25
    assert (
        scalar(
            f"SELECT count(*) {train} AND NOT EXISTS (SELECT 1 FROM studies c WHERE c.dataset = "
            "'chexpert' AND c.study_id = p.study_id AND c.patient_id = p.patient_id AND c.split = 'train')"
        )
        == 0
    )
    plus_images = {ids(row["path_to_image"])[2] for row in raw_rows(plus) if row["split"] == "train"}
    chexpert_images = set(
        wh.sql(
            "SELECT image_id FROM images WHERE dataset = 'chexpert' AND study_id IN "
            "(SELECT study_id FROM studies WHERE dataset = 'chexpert_plus')"
        )
        .column(0)
        .to_pylist()
    )
    assert plus_images == chexpert_images
    train_labels = (
        "FROM labels l JOIN studies s USING (dataset, study_id) WHERE l.dataset = 'chexpert_plus' AND s.split = 'train'"
    )
    assert scalar(f"SELECT count(*) {train_labels}") > 0
    assert (
        scalar(
            f"SELECT count(*) {train_labels} AND NOT EXISTS (SELECT 1 FROM images i "
            "WHERE i.dataset = 'chexpert' AND i.image_id = l.image_id)"
        )
        == 0
    )
    assert (
        scalar(
            "SELECT count(*) FROM patients p JOIN patients c USING (patient_id) WHERE p.dataset = "
            "'chexpert_plus' AND c.dataset = 'chexpert' AND p.sex_source IS DISTINCT FROM c.sex_source"
        )
        == 0
    )

    # CheXpert's own labels beside CheXpert Plus's report text, joined on the shared study id
    effusion = wh.sql(
        "SELECT DISTINCT r.study_id, r.impression, r.full_text FROM reports r JOIN labels l USING (study_id) "
        "WHERE r.dataset = 'chexpert_plus' AND l.dataset = 'chexpert' AND l.labeler = 'chexpert' "
        "AND l.finding = 'pleural_effusion' AND l.value = 1"
    ).to_pylist()
    expected = set()
    with gzip.open(chexpert_csv, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            study = "/".join(row["Path"].split("/")[2:4])
            if study in {image.rsplit("/", 1)[0] for image in plus_images} and row["Pleural Effusion"] == "1.0":
                expected.add(study)
    assert {r["study_id"] for r in effusion} == expected
    assert all(r["full_text"].endswith("associated with the patient.") for r in effusion)

    stats = {
        r["split"]: r
        for r in wh.sql(named_query("stats", "split_stats").sql).to_pylist()
        if r["dataset"] == "chexpert_plus"
    }
    findings = truth["splits"]["train"]["sections"]["section_findings"]
    assert stats["train"]["reports"] == truth["splits"]["train"]["studies"]
    assert stats["train"]["mean_tokens_findings"] == pytest.approx(findings["tokens"] / findings["studies_present"])

"""The warehouse against real metadata nobody here wrote: NIH ChestX-ray14 and CheXpert.

Expected numbers come from two places the adapters cannot influence: the datasets' published
counts, and counts this test computes straight from the raw CSV files with the csv module.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter

import pytest

CHEXPERT_LABELS = (
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
)


def _rows(path):
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in reader:
            yield dict(zip(header, row)) if len(row) == len(header) else row


def _nih_rows(path):
    # The header's bracketed names contain commas; read positionally, as a careful person would.
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            yield {
                "image": row[0],
                "labels": row[1],
                "patient": row[3],
                "age": row[4],
                "sex": row[5],
                "view": row[6],
                "width": row[7],
                "height": row[8],
            }


def _scalar(wh, sql, params=None):
    return wh.sql(sql, params).column(0)[0].as_py()


def _pairs(wh, sql):
    """{first column: second column} of a two-column result."""
    table = wh.sql(sql)
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


def test_nih_matches_published_counts(public_warehouse):
    wh = public_warehouse
    assert _scalar(wh, "SELECT count(*) FROM images WHERE dataset = 'nih_cxr14'") == 112_120
    assert _scalar(wh, "SELECT count(*) FROM patients WHERE dataset = 'nih_cxr14'") == 30_805
    assert _pairs(wh, "SELECT view_position, count(*) FROM images WHERE dataset='nih_cxr14' GROUP BY 1") == {
        "PA": 67_310,
        "AP": 44_810,
    }
    assert _scalar(wh, "SELECT count(*) FROM boxes WHERE dataset = 'nih_cxr14'") == 984
    assert _scalar(wh, "SELECT count(DISTINCT image_id) FROM boxes WHERE dataset = 'nih_cxr14'") == 880


def test_nih_published_label_counts(public_warehouse):
    published = {  # NIH ChestX-ray14 v2020 label frequencies
        "No Finding": 60_361,
        "Infiltration": 19_894,
        "Effusion": 13_317,
        "Atelectasis": 11_559,
        "Nodule": 6_331,
        "Mass": 5_782,
        "Pneumothorax": 5_302,
        "Consolidation": 4_667,
        "Pleural_Thickening": 3_385,
        "Cardiomegaly": 2_776,
        "Emphysema": 2_516,
        "Edema": 2_303,
        "Fibrosis": 1_686,
        "Pneumonia": 1_431,
        "Hernia": 227,
    }
    # the NLP labels; the Google 2019 expert labels (labeler radiologist) are tests/test_expert_labels.py's
    got = _pairs(
        public_warehouse,
        "SELECT raw_label, count(*) FROM labels WHERE dataset='nih_cxr14' "
        "AND labeler = 'nih_nlp' AND value = 1 GROUP BY 1",
    )
    assert got == published


def test_nih_labels_equal_raw_csv_counts(public_warehouse, raw_files):
    expected = Counter()
    for row in _nih_rows(raw_files["nih_entry"]):
        for label in row["labels"].split("|"):
            expected[label] += 1
    # the NLP labels; the Google 2019 expert labels (labeler radiologist) are tests/test_expert_labels.py's
    got = _pairs(
        public_warehouse,
        "SELECT raw_label, count(*) FROM labels WHERE dataset='nih_cxr14' "
        "AND labeler = 'nih_nlp' AND value = 1 GROUP BY 1",
    )
    assert got == dict(expected)
    # Harmonized findings carry the same counts under their shared names.
    findings = _pairs(
        public_warehouse,
        "SELECT finding, count(*) FROM labels WHERE dataset='nih_cxr14' AND labeler = 'nih_nlp' GROUP BY 1",
    )
    assert findings["pleural_effusion"] == expected["Effusion"]
    assert findings["pleural_thickening"] == expected["Pleural_Thickening"]
    assert findings["no_finding"] == expected["No Finding"]


def test_nih_image_sizes_come_from_the_bracketed_columns(public_warehouse, raw_files):
    rows = {r["image"]: r for r in _nih_rows(raw_files["nih_entry"])}
    sample = public_warehouse.sql(
        "SELECT image_id, width, height, patient_id, age_years FROM images JOIN studies USING (dataset, study_id, "
        "patient_id) WHERE dataset='nih_cxr14' ORDER BY hash(image_id) LIMIT 500"
    ).to_pylist()
    for got in sample:
        raw = rows[got["image_id"] + ".png"]
        assert (got["width"], got["height"]) == (int(raw["width"]), int(raw["height"]))
        assert got["patient_id"] == raw["patient"]
        assert got["age_years"] == float(raw["age"])


def test_chexpert_matches_published_counts(public_warehouse):
    wh = public_warehouse
    assert _scalar(wh, "SELECT count(*) FROM images WHERE dataset = 'chexpert'") == 223_414
    assert _scalar(wh, "SELECT count(*) FROM patients WHERE dataset = 'chexpert'") == 64_540
    assert _scalar(wh, "SELECT count(*) FROM studies WHERE dataset = 'chexpert'") == 187_641
    assert _pairs(
        wh,
        "SELECT sex_source, count(*) FROM images JOIN patients USING (dataset, patient_id) "
        "WHERE dataset='chexpert' GROUP BY 1",
    ) == {"Male": 132_636, "Female": 90_777, "Unknown": 1}
    # 191,027 Frontal and 32,387 Lateral rows as published; 17 Frontal rows say LL/RL (lateral projections) in
    # AP/PA and are not frontal (warehouse/sources/chexpert.py)
    assert _pairs(wh, "SELECT is_frontal, count(*) FROM images WHERE dataset='chexpert' GROUP BY 1") == {
        True: 191_027 - 17,
        False: 32_387 + 17,
    }
    assert _scalar(wh, "SELECT count(*) FROM images WHERE dataset='chexpert' AND view_source = 'Lateral'") == 32_387


def test_chexpert_labels_equal_raw_csv_counts(public_warehouse, raw_files):
    expected = Counter()
    for row in _rows(raw_files["chexpert_train"]):
        for label in CHEXPERT_LABELS:
            if row[label] != "":
                expected[(label, int(float(row[label])))] += 1
    got = public_warehouse.sql(
        "SELECT raw_label, value, count(*) AS n FROM labels WHERE dataset='chexpert' GROUP BY 1, 2"
    ).to_pylist()
    assert {(r["raw_label"], r["value"]): r["n"] for r in got} == dict(expected)
    # the positive counts, per finding, that a cohort author would query
    positives = _pairs(
        public_warehouse, "SELECT raw_label, count(*) FROM labels WHERE dataset='chexpert' AND value=1 GROUP BY 1"
    )
    assert positives == {label: n for (label, v), n in expected.items() if v == 1}


def test_cross_dataset_effusion_cohort(public_warehouse, raw_files):
    """Frontal images with pleural effusion positive, by dataset and sex, against the raw files."""
    expected = Counter()
    for row in _nih_rows(raw_files["nih_entry"]):
        if "Effusion" in row["labels"].split("|"):
            expected[("nih_cxr14", row["sex"])] += 1
    sex_word = {"Male": "M", "Female": "F", "Unknown": "U"}
    for row in _rows(raw_files["chexpert_train"]):
        frontal = row["Frontal/Lateral"] == "Frontal" and row["AP/PA"] not in ("LL", "RL")  # see chexpert.py
        if frontal and row["Pleural Effusion"] == "1.0":
            expected[("chexpert", sex_word[row["Sex"]])] += 1
    got = public_warehouse.sql("""
        SELECT i.dataset, p.sex, count(*) AS n
        FROM images i
        JOIN labels l ON l.dataset = i.dataset AND l.image_id = i.image_id
        JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
        WHERE i.is_frontal AND l.finding = 'pleural_effusion' AND l.value = 1
        GROUP BY ALL
    """).to_pylist()
    assert {(r["dataset"], r["sex"]): r["n"] for r in got} == dict(expected)
    assert {d for d, _ in expected} == {"nih_cxr14", "chexpert"}


def test_no_duplicate_keys(public_warehouse):
    from warehouse.schema import TABLES

    for name, spec in TABLES.items():
        key = ", ".join(["dataset", *spec.key])
        dupes = _scalar(
            public_warehouse, f"SELECT count(*) FROM (SELECT {key} FROM {name} GROUP BY ALL HAVING count(*) > 1)"
        )
        assert dupes == 0, f"{name} has duplicate keys"


@pytest.mark.parametrize(
    "child, parent, key",
    [
        ("images", "studies", "study_id"),
        ("studies", "patients", "patient_id"),
        ("labels", "studies", "study_id"),
        ("boxes", "images", "image_id"),
    ],
)
def test_every_row_has_its_parent(public_warehouse, child, parent, key):
    orphans = _scalar(public_warehouse, f"SELECT count(*) FROM {child} c ANTI JOIN {parent} p USING (dataset, {key})")
    assert orphans == 0

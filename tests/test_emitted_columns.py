"""Every column an adapter emits, recounted from the native files with csv/json/gzip/zipfile/tarfile.

Counts alone miss a wrong value in the right number of rows (every lateral turned UNKNOWN, an age 0
published as 0, PadChest's `normal` given value 0, a grade one step off). So each test rebuilds whole
tables from the raw files here, restating the documented rules (docs/datasets.md and each adapter's
docstring) in plain Python, and compares them row by row with what the adapter (or the published
warehouse, for the real NIH and CheXpert files) holds.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import gzip
import io
import itertools
import json
import math
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from warehouse.samples import chexpert_plus as chexpert_plus_samples
from warehouse.samples import mimic_cxr as mimic_cxr_samples
from warehouse.samples import mimic_qba as qba_samples
from warehouse.samples import rexgradient as rexgradient_samples
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

REPO = Path(__file__).parents[1]

# --- the documented harmonization, restated (not imported from warehouse.sources.values) ----------
VIEWS = {
    "PA": "PA",
    "POSTERO_ANTERIOR": "PA",
    "AP": "AP",
    "ANTERO_POSTERIOR": "AP",
    "AP_HORIZONTAL": "AP_SUPINE",
    "SUPINE": "AP_SUPINE",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "L": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
    "LARGE LATERAL": "LATERAL",
    "LL": "LL",
    "RL": "RL",
    "UNKNOWN": "UNKNOWN",
    "UNK": "UNKNOWN",
    "N/A": "UNKNOWN",
    "NONE": "UNKNOWN",
    "NAN": "UNKNOWN",
    "": "UNKNOWN",
}
FRONTAL = {"PA", "AP", "AP_SUPINE"}
SEXES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F", "UNKNOWN": "U", "O": "U", "NAN": "U", "": "U"}
AGE_UNITS = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}


# Race / ethnicity words -> the OMB vocabulary (docs/datasets.md "Race and ethnicity"), as prefixes in order.
RACE_PREFIXES = (
    ("UNKNOWN", "unknown"),
    ("UNABLE TO OBTAIN", "unknown"),
    ("PATIENT DECLINED", "unknown"),
    ("PATIENT REFUSED", "unknown"),
    ("DECLINED", "unknown"),
    ("REFUSED", "unknown"),
    ("UNK", "unknown"),
    ("MULTIPLE", "multiple"),
    ("MULTIRACIAL", "multiple"),
    ("AMERICAN INDIAN", "american_indian_alaska_native"),
    ("ALASKA", "american_indian_alaska_native"),
    ("NATIVE AMERICAN", "american_indian_alaska_native"),
    ("NATIVE HAWAIIAN", "native_hawaiian_pacific_islander"),
    ("PACIFIC ISLANDER", "native_hawaiian_pacific_islander"),
    ("WHITE", "white"),
    ("CAUCASIAN", "white"),
    ("PORTUGUESE", "white"),
    ("BLACK", "black"),
    ("AFRICAN AMERICAN", "black"),
    ("ASIAN", "asian"),
)
RACE_LETTERS = {"W": "white", "B": "black", "A": "asian", "U": "unknown", "O": "other", "OTHER": "other"}
HISPANIC = ("HISPANIC", "LATINO", "SOUTH AMERICAN")


def race(word: str | None, *, mixed: bool = False) -> str:
    """Harmonized race; `mixed` for a field that also carries Hispanic origin (MIMIC-IV race, EthnicGroup)."""
    key = (word or "").strip().upper()
    if not key:
        return "unknown"
    if mixed and key.startswith(HISPANIC):
        return "other"
    if key in RACE_LETTERS:
        return RACE_LETTERS[key]
    return next((r for prefix, r in RACE_PREFIXES if key.startswith(prefix)), "other")


def ethnicity(word: str | None) -> str:
    key = (word or "").strip().upper()
    return (
        "not_hispanic" if key.startswith("NON") else "hispanic" if key.startswith(("HISPANIC", "LATINO")) else "unknown"
    )


def ethnicity_of_mixed(word: str | None) -> str:
    key = (word or "").strip().upper()
    return "hispanic" if key.startswith(HISPANIC) or "HISPANIC" in key else "unknown"


def view(word: str | None) -> str:
    """Canonical view of a source word; a known-but-unusual word (oblique, decubitus) is OTHER."""
    return "UNKNOWN" if word is None else VIEWS.get(word.strip().upper(), "OTHER")


def sex(word: str | None) -> str:
    return SEXES.get((word or "").strip().upper(), word)


def blank(value: str | None) -> str | None:
    """csv gives '' where the adapters' readers give null."""
    return None if value is None or value == "" else value


def norm(value):
    """Floats compare as the float32 the schema stores; everything else as is."""
    return float(np.float32(value)) if isinstance(value, float) else value


def keyed(rows, key: int = 1) -> dict:
    """{first `key` fields: the normalized row} with a check that the key is unique."""
    out = {}
    for row in rows:
        row = tuple(norm(v) for v in row)
        k = row[:key] if key > 1 else row[0]
        assert k not in out, f"duplicate key {k}"
        out[k] = row
    return out


def assert_same(got: dict, expected: dict, what: str) -> None:
    """Whole-table equality with the first differences named, not a 100k-line diff."""
    expected = {k: tuple(map(norm, row)) for k, row in expected.items()}
    missing = [k for k in expected if k not in got][:5]
    extra = [k for k in got if k not in expected][:5]
    wrong = [(expected[k], got[k]) for k in expected if k in got and got[k] != expected[k]][:5]
    assert not (missing or extra or wrong), f"{what}: missing {missing}, extra {extra}, expected/got {wrong}"
    assert expected, f"{what}: nothing to compare"


# the columns each recount below compares, per table (the adapters' emitted columns; derived ones are tested apart)
COMPARED = {
    "images": (
        "image_id",
        "study_id",
        "patient_id",
        "split",
        "view_position",
        "view_source",
        "is_frontal",
        "width",
        "height",
        "path",
    ),
    "studies": ("study_id", "patient_id", "split", "study_date", "age_years", "age_source"),
    "patients": ("patient_id", "sex", "sex_source", "birth_year"),
}


def assert_columns(tables, table: str, expected: dict, dataset: str) -> None:
    """The adapter's `table`, keyed by its first compared column, equals the recount from the native files."""
    assert_same(keyed(frame_rows(tables[table], list(COMPARED[table]))), expected, f"{dataset} {table}")


def frame_rows(frame: pl.DataFrame, columns: list[str]) -> list[tuple]:
    """Rows of the named columns; a column the adapter leaves out is null, as the store writes it."""
    return list(zip(*(frame[c].to_list() if c in frame.columns else [None] * frame.height for c in columns)))


def published(wh, sql: str) -> list[tuple]:
    table = wh.sql(sql)
    return list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns))))


def read_all(adapter_id: str, folder: Path, related: dict | None = None) -> dict[str, pl.DataFrame]:
    """The adapter's tables, streamed batches included."""
    result = get_adapter(adapter_id).read(SourceFolder(str(folder)), related=related)
    tables = dict(result.tables)
    chunks = defaultdict(list)
    for name, frame in result.batches or ():
        chunks[name].append(frame)
    tables.update({name: pl.concat(frames, how="diagonal_relaxed") for name, frames in chunks.items()})
    return tables


def gz_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- NIH ChestX-ray14 (real, published) --------------------------------------------------------


@lru_cache(maxsize=1)
def nih_entry_expected(path: Path) -> dict:
    """NIH's expected tables, recounted once per session (test_derived_recount reuses them)."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)  # the header has commas inside brackets: rows are read by position
        next(reader)
        expected = nih_expected(list(reader))
    google = path.parent / "google2019_nih-chest-xray-labels.csv.gz"  # laid out beside it by cxr fetch
    if google.exists():
        expected["labels"] |= google_expected(google)
    return expected


def google_expected(path: Path) -> set[tuple]:
    """The Google 2019 expert labels per nih_cxr14.py: one radiologist label per image and YES/NO column."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        findings = next(reader)[11:15]
        return {
            (
                row[0].removesuffix(".png"),
                row[0].removesuffix(".png"),
                finding,
                {"YES": 1, "NO": 0}[row[11 + i]],
                "radiologist",
                None,
            )
            for row in reader
            for i, finding in enumerate(findings)
        }


def nih_expected(rows: list[list[str]]) -> dict:
    """NIH's canonical tables per nih_cxr14.py: one study per image, a patient's sex from the first visit."""
    images, studies, first_visit, labels = {}, {}, {}, set()
    for name, found, follow_up, patient, age, gender, pos, w, h, sx, sy in rows:
        stem = name.removesuffix(".png")
        images[stem] = (
            stem,
            stem,
            patient,
            "unassigned",
            view(pos),
            pos,
            view(pos) in FRONTAL,
            int(w),
            int(h),
            float(sx),
            float(sy),
            f"images/{name}",
        )
        years = float(age)
        studies[stem] = (stem, patient, "unassigned", years if 0 <= years <= 120 else None, age)
        if patient not in first_visit or int(follow_up) < first_visit[patient][0]:
            first_visit[patient] = (int(follow_up), gender)
        labels |= {(stem, stem, label, 1, "nih_nlp", None) for label in found.split("|") if label}
    patients = {p: (p, sex(g), g) for p, (_, g) in first_visit.items()}
    return {"images": images, "studies": studies, "patients": patients, "labels": labels}


def test_nih_images_studies_patients_labels_equal_raw(public_warehouse, raw_files):
    expected = nih_entry_expected(raw_files["nih_entry"])
    where = "WHERE dataset = 'nih_cxr14'"
    assert_same(
        keyed(
            published(
                public_warehouse,
                f"""SELECT image_id, study_id, patient_id, split, view_position,
        view_source, is_frontal, width, height, pixel_spacing_x, pixel_spacing_y, path FROM images {where}""",
            )
        ),
        expected["images"],
        "nih images",
    )
    assert_same(
        keyed(
            published(
                public_warehouse, f"SELECT study_id, patient_id, split, age_years, age_source FROM studies {where}"
            )
        ),
        expected["studies"],
        "nih studies",
    )
    assert_same(
        keyed(published(public_warehouse, f"SELECT patient_id, sex, sex_source FROM patients {where}")),
        expected["patients"],
        "nih patients",
    )
    got = set(
        published(public_warehouse, f"SELECT study_id, image_id, raw_label, value, labeler, method FROM labels {where}")
    )
    assert got == expected["labels"] and len(got) > len(expected["images"]) == 112_120


# --- CheXpert (real train.csv, published) ------------------------------------------------------

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


def chexpert_expected(rows: list[dict], split: str, labeler: str) -> dict[str, dict]:
    """images, studies, patients and labels of CheXpert rows, per the chexpert adapter's docstring."""
    out = {"images": {}, "studies": {}, "patients": {}, "labels": set()}
    for r in rows:
        path = r["Path"].split("/", 1)[1]  # the release folder dropped
        _, patient, study, file = path.split("/")
        study_id, image_id = f"{patient}/{study}", f"{patient}/{study}/{file.removesuffix('.jpg')}"
        lateral = r["Frontal/Lateral"] == "Lateral"
        pos = "LATERAL" if lateral else view(blank(r["AP/PA"]))
        source = "Lateral" if lateral else f"{r['Frontal/Lateral']}/{r['AP/PA']}"
        # a Frontal row whose AP/PA says LL or RL (left/right lateral) is not frontal (see chexpert.py)
        frontal = r["Frontal/Lateral"] == "Frontal" and r["AP/PA"] not in ("LL", "RL")
        out["images"][image_id] = (image_id, study_id, patient, split, pos, source, frontal, path)
        age = float(r["Age"]) if r["Age"] else None  # 0 means unknown, as blank does
        out["studies"].setdefault(study_id, (study_id, patient, split, age or None, blank(r["Age"])))
        out["patients"].setdefault(patient, (patient, sex(r["Sex"]), r["Sex"]))
        out["labels"] |= {
            (study_id, image_id, label, int(float(r[label])), labeler, None)
            for label in CHEXPERT_LABELS
            if r[label] != ""
        }
    return out


@lru_cache(maxsize=1)
def chexpert_train_rows(path: Path) -> list[dict]:
    return gz_rows(path)


@lru_cache(maxsize=1)
def chexpert_train_expected(path: Path) -> dict:
    """The real train.csv's expected tables, recounted once per session."""
    return chexpert_expected(chexpert_train_rows(path), "train", "chexpert")


@pytest.fixture(scope="module")
def chexpert_raw(raw_files):
    return chexpert_train_rows(raw_files["chexpert_train"])


def test_chexpert_every_column_equals_raw(public_warehouse, raw_files):
    expected = chexpert_train_expected(raw_files["chexpert_train"])
    where = "WHERE dataset = 'chexpert'"
    images = keyed(
        published(
            public_warehouse,
            f"SELECT image_id, study_id, patient_id, split, view_position, "
            f"view_source, is_frontal, path FROM images {where}",
        )
    )
    assert_same(images, expected["images"], "chexpert images")
    assert sum(v[4] == "LATERAL" for v in images.values()) == 32_387
    contradictory = [v for v in images.values() if v[4] in ("LL", "RL")]
    assert len(contradictory) == 17 and not any(v[6] for v in contradictory)  # documented in chexpert.py
    assert all(v[5].startswith("Frontal/") for v in contradictory)
    studies = keyed(
        published(public_warehouse, f"SELECT study_id, patient_id, split, age_years, age_source FROM studies {where}")
    )
    assert_same(studies, expected["studies"], "chexpert studies")
    assert [v[3:] for v in studies.values() if v[4] == "0"] == [(None, "0")] * 3  # age 0 means unknown
    assert_same(
        keyed(published(public_warehouse, f"SELECT patient_id, sex, sex_source FROM patients {where}")),
        expected["patients"],
        "chexpert patients",
    )
    got = set(
        published(public_warehouse, f"SELECT study_id, image_id, raw_label, value, labeler, method FROM labels {where}")
    )
    assert got == expected["labels"] and {v for *_, v, _, _ in got} == {1, 0, -1}


def test_chexpert_valid_csv_is_read_with_the_radiologist_labeler(tmp_path, chexpert_raw):
    """valid.csv has train.csv's columns; its rows are split valid and labeler radiologist."""
    train = chexpert_raw[:40]
    valid = []
    for i, r in enumerate(chexpert_raw[40:80]):
        row = dict(r, Path=r["Path"].replace("/train/", "/valid/").replace("/patient", "/patient9"))
        # radiologist consensus: every label stated, no uncertain (docs/datasets.md, [U])
        row.update({label: ("1.0" if (i + j) % 3 == 0 else "0.0") for j, label in enumerate(CHEXPERT_LABELS)})
        valid.append(row)
    second = next(r for r in valid if r["Path"].rsplit("/", 1)[0] != valid[0]["Path"].rsplit("/", 1)[0])
    valid[0]["Age"], second["Age"] = "0", ""  # unknown either way: age_years null
    header = list(chexpert_raw[0])
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    tables = read_all("chexpert", tmp_path)
    expected = chexpert_expected(train, "train", "chexpert")
    for table, part in chexpert_expected(valid, "valid", "radiologist").items():
        expected[table] = expected[table] | part
    assert any(v[4] == "LATERAL" for v in expected["images"].values())
    assert_same(
        keyed(
            frame_rows(
                tables["images"],
                ["image_id", "study_id", "patient_id", "split", "view_position", "view_source", "is_frontal", "path"],
            )
        ),
        expected["images"],
        "chexpert images",
    )
    assert_same(
        keyed(frame_rows(tables["studies"], ["study_id", "patient_id", "split", "age_years", "age_source"])),
        expected["studies"],
        "chexpert studies",
    )
    studies = tables["studies"].filter(pl.col("split") == "valid")
    assert studies.filter(pl.col("age_years").is_null())["age_source"].to_list() == ["0", None]
    got = set(frame_rows(tables["labels"], ["study_id", "image_id", "raw_label", "value", "labeler", "method"]))
    assert got == expected["labels"]
    by_split = {
        (s, lab) for s, lab in zip(tables["labels"]["study_id"].str.contains("patient9"), tables["labels"]["labeler"])
    }
    assert by_split == {(False, "chexpert"), (True, "radiologist")}
    assert len([x for x in got if x[4] == "radiologist"]) == len(valid) * len(CHEXPERT_LABELS)


def test_chexpert_valid_csv_alone_is_read_and_the_missing_train_csv_is_noted(tmp_path, chexpert_raw):
    """A folder holding only valid.csv (the small download) gives the valid split, not an error."""
    valid = [dict(r, Path=r["Path"].replace("/train/", "/valid/")) for r in chexpert_raw[:30]]
    with open(tmp_path / "valid.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(chexpert_raw[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(valid)
    result = get_adapter("chexpert").read(SourceFolder(str(tmp_path)))
    images = result.tables["images"]
    assert images.height == len(valid)
    assert set(images["split"]) == {"valid"} and set(result.tables["labels"]["labeler"]) == {"radiologist"}
    assert "train.csv was not in the source folder: no train split" in result.notes
    assert get_adapter("chexpert").source_files(SourceFolder(str(tmp_path))) == ["valid.csv"]
    (tmp_path / "valid.csv").unlink()
    with pytest.raises(SourceError, match=r"train\.csv"):
        get_adapter("chexpert").source_files(SourceFolder(str(tmp_path)))


# --- PadChest (a sample cut from the real file, with crafted odd rows) -------------------------

PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def padchest_sample(public_data, n: int = 600) -> tuple[list[str], list[dict]]:
    """The first n real rows, plus a two-image study with no birth year labelled only 'normal'."""
    with gzip.open(Path(public_data.root) / "padchest" / (PADCHEST_FILE + ".gz"), "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, row)) for row in itertools.islice(reader, n)]
    template = rows[0]
    for i, (projection, dicom) in enumerate((("PA", "POSTEROANTERIOR"), ("L", "nan"))):
        rows.append(
            dict(
                template,
                **{
                    "": str(n + i),
                    "ImageID": f"99901_{i}.png",
                    "StudyID": "99901",
                    "PatientID": "88801",
                    "PatientBirth": "",
                    "Projection": projection,
                    "ViewPosition_DICOM": dicom,
                    "Labels": "['normal']",
                    "LabelsLocalizationsBySentence": "[['normal']]",
                    "MethodLabel": "Physician",
                },
            )
        )
    rows.append(
        dict(
            template,
            **{
                "": str(n + 2),
                "ImageID": "99902_0.png",
                "StudyID": "99902",
                "PatientID": "88802",
                "PatientSex_DICOM": "nan",
                "Projection": "UNK",
                "Labels": "['normal', ' pleural effusion', '']",
            },
        )
    )
    return header, rows


def write_padchest(folder: Path, header: list[str], rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / (PADCHEST_FILE + ".gz"), "wt", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([r[c] for c in header] for r in rows)
    return folder


PADCHEST_VIEWS = {"PA": "PA", "L": "LATERAL", "AP": "AP", "AP_horizontal": "AP_SUPINE", "UNK": "UNKNOWN"}


def padchest_expected(rows: list[dict]) -> dict:
    """PadChest's canonical tables, per padchest.py's docstring (no study is under two patients here)."""
    assert len({(r["StudyID"], r["PatientID"]) for r in rows}) == len({r["StudyID"] for r in rows})
    images, studies, labels, first = {}, {}, set(), {}
    for r in rows:
        stem, study, patient = r["ImageID"].removesuffix(".png"), r["StudyID"], r["PatientID"]
        pos = PADCHEST_VIEWS.get(r["Projection"], "OTHER")
        dicom = r["ViewPosition_DICOM"]
        source = r["Projection"] + (f"/{dicom}" if dicom not in ("", "nan") else "")
        images[stem] = (
            stem,
            study,
            patient,
            "unassigned",
            pos,
            source,
            pos in FRONTAL,
            int(r["Columns_DICOM"]),
            int(r["Rows_DICOM"]),
            f"{r['ImageDir']}/{r['ImageID']}",
        )
        if study in studies:
            continue
        date = dt.datetime.strptime(r["StudyDate_DICOM"], "%Y%m%d").date()
        birth = float(r["PatientBirth"]) if r["PatientBirth"] else None
        studies[study] = (
            study,
            patient,
            "unassigned",
            date,
            None if birth is None else date.year - birth,
            blank(r["PatientBirth"]),
        )
        method = r["MethodLabel"]
        labels |= {
            (study, None, label.strip(), 1, "padchest", method)
            for label in ast.literal_eval(r["Labels"])
            if label.strip()
        }
        if patient not in first or (date, study) < first[patient][0]:
            first[patient] = ((date, study), r)
    patients = {
        p: (
            p,
            sex(r["PatientSex_DICOM"]),
            r["PatientSex_DICOM"],
            int(float(r["PatientBirth"])) if r["PatientBirth"] else None,
        )
        for p, (_, r) in first.items()
    }
    return {"images": images, "studies": studies, "patients": patients, "labels": labels}


def test_padchest_every_column_equals_raw(tmp_path, public_data):
    header, rows = padchest_sample(public_data)
    tables = read_all("padchest", write_padchest(tmp_path / "pc", header, rows))
    expected = padchest_expected(rows)
    for table in ("images", "studies", "patients"):
        assert_columns(tables, table, expected[table], "padchest")
    studies = keyed(frame_rows(tables["studies"], list(COMPARED["studies"])))
    assert studies["99901"][4:] == (None, None)
    got = set(frame_rows(tables["labels"], ["study_id", "image_id", "raw_label", "value", "labeler", "method"]))
    assert got == expected["labels"]
    normal = {(s, v) for s, _, label, v, *_ in got if label == "normal"}
    assert ("99901", 1) in normal and {v for _, v in normal} == {1}  # `normal` is a positive label


# --- IU X-ray (real NLMCXR files) --------------------------------------------------------------


def iu_reports(path: Path) -> list[dict]:
    """uId, image ids and MeSH terms of every report XML, walked with tarfile and ElementTree."""
    out = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            out.append(
                {
                    "uid": root.find("uId").get("id"),
                    "images": [e.get("id") for e in root.findall("parentImage")],
                    "mesh": [(e.tag, (e.text or "").strip()) for e in root.findall("MeSH/*")],
                }
            )
    return out


def completed_years(birth: dt.date, on: dt.date) -> float:
    return float(on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day)))


def test_iu_xray_every_column_equals_raw(public_data):
    folder = Path(public_data.root) / "iu_xray"
    reports = iu_reports(folder / "NLMCXR_reports.tgz")
    metadata = {r["imageid"]: r for r in gz_rows(folder / "nlmcxr_dicom_metadata.csv.gz")}
    tables = read_all("iu_xray", folder)
    images, studies, patients, labels = {}, {}, {}, {}
    for report in reports:
        uid, header = report["uid"], None
        for image in report["images"]:
            meta = metadata.get(image) or metadata.get(image.split("_", 1)[0] + "_" + image.split("_", 2)[-1])
            header = header or meta
            pos = view((meta or {}).get("View Position"))
            images[image] = (
                image,
                uid,
                uid,
                "unassigned",
                pos,
                blank((meta or {}).get("View Position")),
                pos in FRONTAL,
                int(meta["Columns"]) if meta else None,
                int(meta["Rows"]) if meta else None,
                f"{image}.png",
            )
        birth = dt.datetime.strptime(header["Patient's Birth Date"], "%Y%m%d").date() if header else None
        date = dt.datetime.strptime(header["Study Date"], "%Y%m%d").date() if header else None
        studies[uid] = (
            uid,
            uid,
            "unassigned",
            date,
            completed_years(birth, date) if header else None,
            header["Patient's Birth Date"] if header else None,
        )
        patients[uid] = (uid, "U", blank(header["Patient's Sex"]) if header else None, birth and birth.year)
        for method, term in sorted(report["mesh"], key=lambda m: m[0] != "major"):  # major wins the method
            if term:
                labels.setdefault((uid, term), (uid, term, 1, "mesh", method))
    assert_columns(tables, "images", images, "iu")
    assert_columns(tables, "studies", studies, "iu")
    assert_columns(tables, "patients", patients, "iu")
    got = frame_rows(tables["labels"], ["study_id", "raw_label", "value", "labeler", "method"])
    assert_same(keyed(got, key=2), labels, "iu labels")


# --- MIMIC-CXR (generated sample) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory):
    """MIMIC-CXR and QBA samples from one cohort plan (QBA takes its split from MIMIC-CXR)."""
    root = tmp_path_factory.mktemp("mimic")
    cohort = plan_mimic_cohort(8, 5)
    mimic_cxr_samples.write_samples(root / "mimic_cxr", cohort=cohort, seed=5)
    qba_samples.write_samples(root / "mimic_qba", cohort=cohort, seed=5, questions_per_study=20, exports=False)
    return root


def test_mimic_cxr_every_column_equals_raw(mimic_root):
    folder = mimic_root / "mimic_cxr"
    split_of = {
        r["dicom_id"]: {"validate": "valid"}.get(r["split"], r["split"])
        for r in gz_rows(folder / "mimic-cxr-2.0.0-split.csv.gz")
    }
    hosp = sorted(folder.glob("mimiciv/*/hosp/patients.csv.gz"))[-1]
    anchors = {r["subject_id"]: r for r in gz_rows(hosp)}
    images, dates = {}, defaultdict(list)
    for r in gz_rows(folder / "mimic-cxr-2.0.0-metadata.csv.gz"):
        pos, subject, study = view(blank(r["ViewPosition"])), r["subject_id"], r["study_id"]
        images[r["dicom_id"]] = (
            r["dicom_id"],
            study,
            subject,
            split_of.get(r["dicom_id"], "unassigned"),
            pos,
            blank(r["ViewPosition"]),
            pos in FRONTAL,
            int(r["Columns"]),
            int(r["Rows"]),
            f"files/p{subject[:2]}/p{subject}/s{study}/{r['dicom_id']}.jpg",
        )
        dates[(r["study_id"], r["subject_id"], images[r["dicom_id"]][3])].append(
            dt.datetime.strptime(r["StudyDate"], "%Y%m%d").date()
        )
    studies = {}
    for (study, subject, split), days in dates.items():
        a = anchors.get(subject)
        age = float(int(a["anchor_age"]) + min(days).year - int(a["anchor_year"])) if a else None
        studies[study] = (
            study,
            subject,
            split,
            min(days),
            age,
            f"anchor_age {a['anchor_age']}, anchor_year {a['anchor_year']}" if a else None,
        )
    patients = {
        s: (
            s,
            sex(anchors[s]["gender"]) if s in anchors else "U",
            anchors[s]["gender"] if s in anchors else None,
            int(anchors[s]["anchor_year"]) - int(anchors[s]["anchor_age"]) if s in anchors else None,
        )
        for _, s, _ in dates
    }
    labels = set()
    for labeler in ("chexpert", "negbio"):
        for r in gz_rows(folder / f"mimic-cxr-2.0.0-{labeler}.csv.gz"):
            labels |= {
                (r["study_id"], None, k, int(float(v)), labeler)
                for k, v in r.items()
                if k not in ("subject_id", "study_id") and v != ""
            }
    tables = read_all("mimic_cxr", folder)
    assert_columns(tables, "images", images, "mimic")
    assert {v[4] for v in images.values()} >= {"PA", "LATERAL", "UNKNOWN"}
    assert_columns(tables, "studies", studies, "mimic")
    assert_columns(tables, "patients", patients, "mimic")
    got = set(
        frame_rows(
            tables["labels"].filter(pl.col("labeler") != "radiologist"),
            ["study_id", "image_id", "raw_label", "value", "labeler"],
        )
    )
    assert got == labels and {v for *_, v, _ in got} == {1, 0, -1}


# --- MIMIC-Ext-CXR-QBA (generated sample) -------------------------------------------------------


def qba_grades(folder: Path) -> dict[int, str]:
    with open(folder / "quality_mappings.csv", newline="") as f:
        return {int(r["code"]): r["grade"] or "unrated" for r in csv.DictReader(f) if r["field"] == "rating"}


def qba_expected(folder: Path, split_of: dict[str, str]) -> dict:
    """qa_questions and qa_answers rows from qa.zip, grades decoded through quality_mappings.csv."""
    grades = qba_grades(folder)
    frontal = {
        r["study_id"].removeprefix("s")
        for r in gz_rows(folder / "metadata/image_metadata.csv.gz")
        if view(blank(r["image.view_position"])) in FRONTAL
    }
    questions, answers = {}, {}
    with zipfile.ZipFile(folder / "qa.zip") as archive:
        for name in archive.namelist():
            if not name.endswith(".qa.json"):
                continue
            doc = json.loads(archive.read(name))
            study, patient = doc["study_id"].removeprefix("s"), doc["patient_id"].removeprefix("p")
            split = split_of.get(study, "unassigned")
            for q in doc["questions"]:
                grade, n = grades[q["question_quality"]["rating"]], 0
                stack = [(a, None) for a in q["answers"]]
                while stack:
                    a, parent = stack.pop()
                    n += 1
                    answers[(study, q["question_id"], str(a["answer_id"]))] = (
                        study,
                        q["question_id"],
                        str(a["answer_id"]),
                        split,
                        parent,
                        a["answer_level"],
                        a["answer_type"],
                        a["text"],
                        a["positiveness"],
                        a["certainty"],
                        grades[a["answer_quality"]["rating"]],
                    )
                    stack += [(s, str(a["answer_id"])) for s in a["sub_answers"]]
                questions[(study, q["question_id"])] = (
                    study,
                    q["question_id"],
                    patient,
                    split,
                    q["question_id"].rsplit("_", 1)[0],
                    q["question_strategy"],
                    q["question"],
                    grade,
                    grade in ("A", "A+", "A++") and study in frontal,
                    grade in ("B", "A", "A+", "A++") and study in frontal,
                    q["contains_report_answers"],
                    q["contains_template_answers"],
                    n,
                )
    return {"questions": questions, "answers": answers}


QUESTION_COLUMNS = [
    "study_id",
    "question_id",
    "patient_id",
    "split",
    "question_type",
    "question_strategy",
    "question",
    "quality_grade",
    "fine_tuning",
    "pre_training",
    "contains_report_answers",
    "contains_template_answers",
    "num_answers",
]
ANSWER_COLUMNS = [
    "study_id",
    "question_id",
    "answer_id",
    "split",
    "parent_answer_id",
    "answer_level",
    "answer_type",
    "text",
    "positiveness",
    "certainty",
    "quality_grade",
]


def mimic_splits(folder: Path) -> dict[str, str]:
    return {
        r["study_id"]: {"validate": "valid"}.get(r["split"], r["split"])
        for r in gz_rows(folder / "mimic-cxr-2.0.0-split.csv.gz")
    }


def read_qba(root: Path, qba: Path) -> dict[str, pl.DataFrame]:
    return read_all("mimic_qba", qba, related={"mimic_cxr": SourceFolder(str(root / "mimic_cxr"))})


def test_qba_questions_answers_images_labels_equal_raw(mimic_root):
    qba = mimic_root / "mimic_qba"
    tables = read_qba(mimic_root, qba)
    expected = qba_expected(qba, mimic_splits(mimic_root / "mimic_cxr"))
    questions = keyed(frame_rows(tables["qa_questions"], QUESTION_COLUMNS), key=2)
    assert_same(questions, expected["questions"], "qba questions")
    assert {q[7] for q in questions.values()} >= {"A++", "A+", "A", "B"}
    assert_same(keyed(frame_rows(tables["qa_answers"], ANSWER_COLUMNS), key=3), expected["answers"], "qba answers")

    images = {}
    for r in gz_rows(qba / "metadata/image_metadata.csv.gz"):
        pos = view(blank(r["image.view_position"]))
        images[r["image_id"]] = (
            r["image_id"],
            r["study_id"][1:],
            r["patient_id"][1:],
            pos,
            pos in FRONTAL,
            int(r["image.size.width"]),
            int(r["image.size.height"]),
        )
    assert_same(
        keyed(
            frame_rows(
                tables["images"],
                ["image_id", "study_id", "patient_id", "view_position", "is_frontal", "width", "height"],
            )
        ),
        images,
        "qba images",
    )

    # scene-graph labels: neg 0, sure pos 1, hedged pos -1; positive beats uncertain beats negative
    rank = {1: 2, -1: 1, 0: 0}
    labels = {}
    with zipfile.ZipFile(qba / "scene_data.zip") as archive:
        for name in (n for n in archive.namelist() if n.endswith(".scene_graph.json")):
            doc = json.loads(archive.read(name))
            for o in doc["observations"].values():
                if o["positiveness"] not in ("pos", "neg"):
                    continue
                value = 0 if o["positiveness"] == "neg" else 1 if o["probability"] == "positive" else -1
                for entity in o["obs_entities"]:
                    key = (doc["study_id"][1:], entity)
                    if key not in labels or rank[value] > rank[labels[key]]:
                        labels[key] = value
    got = {(s, r): v for s, r, v in frame_rows(tables["labels"], ["study_id", "raw_label", "value"])}
    assert got == labels and set(labels.values()) == {1, 0, -1}


def test_qba_lateral_only_study_has_no_fine_tuning_or_pre_training_questions(mimic_root, tmp_path):
    """mimic_qba.py: both sets keep only studies with a frontal image, whatever the grade."""
    import shutil

    qba = tmp_path / "mimic_qba"
    shutil.copytree(mimic_root / "mimic_qba", qba)
    before = qba_expected(qba, {})["questions"]
    study = next(q[0] for q in before.values() if q[8])  # a study with fine-tuning questions today
    rows = gz_rows(qba / "metadata/image_metadata.csv.gz")
    for r in rows:
        if r["study_id"] == f"s{study}":
            r["image.view_position"] = "LATERAL"
    (qba / "metadata/image_metadata.parquet").unlink()  # the adapter prefers the Parquet copy
    with gzip.open(qba / "metadata/image_metadata.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tables = read_qba(mimic_root, qba)
    questions = tables["qa_questions"].filter(pl.col("study_id") == study)
    assert questions["quality_grade"].is_in(["A", "A+", "A++"]).any()
    assert not questions["fine_tuning"].any() and not questions["pre_training"].any()
    assert (tables["images"].filter(pl.col("study_id") == study)["view_position"] == "LATERAL").all()
    expected = qba_expected(qba, mimic_splits(mimic_root / "mimic_cxr"))["questions"]
    assert_same(keyed(frame_rows(tables["qa_questions"], QUESTION_COLUMNS), key=2), expected, "qba questions")
    others = tables["qa_questions"].filter(pl.col("study_id") != study)
    assert others["fine_tuning"].any()  # the other studies still have their fine-tuning questions


# --- ReXGradient-160K (generated sample) -------------------------------------------------------


def dicom_age(text: str) -> float | None:
    """'068Y' / '006M' / '010W' / '003D' in years; null when unreadable or out of 0-120."""
    text = text.strip().upper()
    unit = text[-1] if text[-1:] in AGE_UNITS else "Y"
    number = text[:-1] if text[-1:] in AGE_UNITS else text
    try:
        years = float(number) / AGE_UNITS[unit]
    except ValueError:
        return None
    return years if 0 <= years <= 120 else None


def rexgradient_expected(folder: Path) -> dict:
    """ReXGradient's studies, images and patients per rexgradient.py; `csv` keeps the raw study rows."""
    studies, images, first, raw = {}, {}, {}, {}
    for split in ("train", "valid", "test"):
        for r in gz_rows(folder / f"metadata/{split}_metadata.csv"):
            date = dt.datetime.strptime(r["StudyDate"], "%Y%m%d").date()
            weight = float(r["PatientWeight"]) if r["PatientWeight"].strip() else None
            studies[r["id"]] = (
                r["id"],
                r["PatientID"],
                split,
                date,
                dicom_age(r["PatientAge"]),
                blank(r["PatientAge"]),
                weight if weight and weight > 0 else None,
                blank(r["InstitutionName"].strip()),
                blank(r["Manufacturer"].strip()),
            )
            raw[r["id"]] = r
            if r["PatientID"] not in first or (date, r["id"]) < first[r["PatientID"]][0]:
                first[r["PatientID"]] = ((date, r["id"]), r)
        with open(folder / f"metadata/{split}_metadata_view_position.json") as f:
            for key, record in json.load(f).items():
                for path, pos, shape in zip(record["ImagePath"], record["ImageViewPosition"], record["ImageShape"]):
                    image = path.rsplit("/", 1)[1].removesuffix(".png")
                    images[image] = (
                        image,
                        key,
                        split,
                        view(pos),
                        pos,
                        view(pos) in FRONTAL,
                        shape[1],
                        shape[0],
                        path.removeprefix("../"),
                    )
    patients = {
        p: (
            p,
            sex(r["PatientSex"]),
            blank(r["PatientSex"]),
            race(r["EthnicGroup"], mixed=True),
            blank(r["EthnicGroup"].strip()),
            ethnicity_of_mixed(r["EthnicGroup"]),
        )
        for p, (_, r) in first.items()
    }
    return {"studies": studies, "images": images, "patients": patients, "csv": raw}


def test_rexgradient_every_column_equals_raw(tmp_path):
    rexgradient_samples.write_samples(tmp_path, patients=80, seed=2)
    expected = rexgradient_expected(tmp_path)
    tables = read_all("rexgradient", tmp_path)
    assert_same(
        keyed(
            frame_rows(
                tables["studies"],
                [
                    "study_id",
                    "patient_id",
                    "split",
                    "study_date",
                    "age_years",
                    "age_source",
                    "weight_kg",
                    "institution",
                    "manufacturer",
                ],
            )
        ),
        expected["studies"],
        "rexgradient studies",
    )
    assert any(v[5] and not v[5].endswith("Y") for v in expected["studies"].values())  # month/day ages covered
    assert_same(
        keyed(
            frame_rows(
                tables["images"],
                [
                    "image_id",
                    "study_id",
                    "split",
                    "view_position",
                    "view_source",
                    "is_frontal",
                    "width",
                    "height",
                    "path",
                ],
            )
        ),
        expected["images"],
        "rexgradient images",
    )
    assert {v[3] for v in expected["images"].values()} >= {"PA", "AP", "LATERAL", "LL", "UNKNOWN", "OTHER"}
    assert_same(
        keyed(frame_rows(tables["patients"], ["patient_id", "sex", "sex_source", "race", "race_source", "ethnicity"])),
        expected["patients"],
        "rexgradient patients",
    )


# --- CheXpert Plus (generated sample on real CheXpert patients) --------------------------------


def test_chexpert_plus_every_column_equals_raw(tmp_path, raw_files):
    chexpert_plus_samples.write_samples(tmp_path, patients=25, seed=4, chexpert_train_csv=raw_files["chexpert_train"])
    rows = gz_rows(tmp_path / "df_chexpert_plus_240401.csv")
    studies, patients = {}, {}
    for r in rows:
        _, patient, study, _ = r["path_to_image"].split("/")
        age = float(r["age"]) if r["age"].strip() else None
        studies.setdefault(
            f"{patient}/{study}", (f"{patient}/{study}", patient, r["split"], age if age else None, blank(r["age"]))
        )
        patients.setdefault(
            patient,
            (
                patient,
                sex(r["sex"]),
                blank(r["sex"]),
                race(r["race"]),
                blank(r["race"]),
                ethnicity(r["ethnicity"]),
                blank(r["ethnicity"]),
            ),
        )
    labels = set()
    for method in ("findings", "impression", "report"):
        with open(tmp_path / f"chexbert_labels/{method}_fixed.json") as f:
            for line in filter(str.strip, f):
                record = json.loads(line)
                image = record["path_to_image"].split("/", 1)[1].removesuffix(".jpg")
                labels |= {
                    (image.rsplit("/", 1)[0], image, k, int(v), "chexbert", method)
                    for k, v in record.items()
                    if k != "path_to_image" and v is not None
                }
    tables = read_all("chexpert_plus", tmp_path)
    got_studies = keyed(frame_rows(tables["studies"], ["study_id", "patient_id", "split", "age_years", "age_source"]))
    assert_same(got_studies, studies, "chexpert_plus studies")
    assert_same(
        keyed(
            frame_rows(
                tables["patients"],
                ["patient_id", "sex", "sex_source", "race", "race_source", "ethnicity", "ethnicity_source"],
            )
        ),
        patients,
        "chexpert_plus patients",
    )
    got = set(frame_rows(tables["labels"], ["study_id", "image_id", "raw_label", "value", "labeler", "method"]))
    assert got == labels and {v[3] for v in got} == {1, 0, -1}


# --- `cxr sql --format csv`: a missing value is an empty field ---------------------------------

NULLS_QUERY = (
    "SELECT study_id, age_years, age_source FROM studies WHERE dataset = 'chexpert' "
    "AND age_years IS NULL ORDER BY study_id"
)


def cxr(wh, *args) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "warehouse.cli", *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_csv_output_writes_nulls_as_empty_fields(public_warehouse, tmp_path):
    expected = [["study_id", "age_years", "age_source"]] + [
        [s, "", a] for s, _, a in published(public_warehouse, NULLS_QUERY)
    ]
    assert len(expected) == 4  # the three CheXpert age-0 studies
    stdout = cxr(public_warehouse, "sql", NULLS_QUERY, "--format", "csv").stdout
    target = tmp_path / "nulls.csv"
    cxr(public_warehouse, "sql", NULLS_QUERY, "--format", "csv", "--out", str(target))
    for text in (stdout, target.read_text()):
        assert list(csv.reader(io.StringIO(text))) == expected
        assert "NULL" not in text.upper() and "None" not in text
    data = json.loads(cxr(public_warehouse, "sql", NULLS_QUERY, "--format", "json").stdout)
    assert [r["age_years"] for r in data] == [None] * 3


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "file"])
def test_csv_and_json_spell_values_for_programs(tmp_path, capfd, to_file):
    """export.py: CSV says true/false, nested values as JSON, bytes as hex, as JSON output does; JSON has no NaN."""
    import pyarrow as pa

    from warehouse.export import export

    table = pa.table(
        {
            "flag": [True, False],
            "nested": [{"a": 1}, None],
            "items": [["loc left"], []],
            "raw": [b"\xaa", None],
            "missing": pa.array([None, None], pa.string()),
            "x": [float("nan"), 1.5],
            "xs": [[float("inf"), 2.0], None],
        }
    )

    def written(fmt: str) -> str:
        target = tmp_path / f"out.{fmt}" if to_file else None
        capfd.readouterr()
        assert export(table.to_reader(), fmt, target) == 2
        return target.read_text() if to_file else capfd.readouterr().out

    rows = list(csv.reader(io.StringIO(written("csv"))))
    assert rows[0] == table.column_names
    assert rows[1][:3] == ["true", rows[1][1], '["loc left"]'] and json.loads(rows[1][1]) == {"a": 1}
    assert rows[1][3:6] == ["aa", "", "nan"] and json.loads(rows[1][6].replace("inf", "Infinity")) == [math.inf, 2.0]
    assert rows[2] == ["false", "", "[]", "", "", "1.5", ""]
    assert json.loads(written("json"), parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) == [
        {
            "flag": True,
            "nested": {"a": 1},
            "items": ["loc left"],
            "raw": "aa",
            "missing": None,
            "x": None,
            "xs": [None, 2.0],
        },
        {"flag": False, "nested": None, "items": [], "raw": None, "missing": None, "x": 1.5, "xs": None},
    ]

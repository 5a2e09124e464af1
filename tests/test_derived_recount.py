"""split_stats, demographics and image_labels, every column recomputed from the raw files in plain Python.

The derived SQL (sql/stats/*.sql) is easy to get subtly wrong in ways counts of the source tables never
show: an age percentage over patients instead of studies, null ages falling into `80+`, study-level
labels (PadChest, IU X-ray) dropped from image_labels. So each dataset's derived tables are rebuilt
here from the native files (through the raw recounts of test_emitted_columns, which never touch an
adapter) and compared with the published tables row by row.

Datasets: a PadChest sample cut from the real file (study-level labels, a study without birth year,
a patient without sex), a ReXGradient sample (three splits, report sections, race, month and day
ages), and the real NIH and CheXpert files (age 0 = unknown) through the session `public_warehouse`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pytest

from warehouse import Warehouse
from warehouse.samples import rexgradient as rexgradient_samples

from .conftest import make_settings
from .test_emitted_columns import (
    chexpert_train_expected,
    nih_entry_expected,
    norm,
    padchest_expected,
    padchest_sample,
    published,
    rexgradient_expected,
    write_padchest,
)

VOCAB = Path(__file__).parents[1] / "warehouse" / "vocab" / "finding_map.csv"
SPLIT_ORDER = {"train": 1, "valid": 2, "test": 3}


class Study(NamedTuple):
    patient: str
    split: str
    age: float | None


class Image(NamedTuple):
    study: str
    patient: str
    split: str
    view: str
    frontal: bool


class Person(NamedTuple):
    sex: str
    race: str = "not_recorded"  # harmonized; not_recorded = the source has no race field
    ethnicity: str = "not_recorded"


class Raw(NamedTuple):
    """One dataset recounted from its files, in the few shapes the derived tables need."""

    studies: dict[str, Study]
    images: dict[str, Image]
    patients: dict[str, Person]
    reports: dict[str, tuple]  # study_id -> tokens of (indication, comparison, findings, impression)
    labels: list[tuple]  # (study_id, image_id or None, raw_label, value, labeler, method)


# --- the three derived tables, restated from their descriptions in sql/stats/*.sql ----------------


def mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def split_stats(dataset: str, raw: Raw) -> dict:
    """Per split: studies, images, distinct patients, reports, mean tokens over reports having the section."""
    by_split = defaultdict(lambda: {"studies": 0, "images": 0, "patients": set(), "reports": []})
    for study, s in raw.studies.items():
        by_split[s.split]["studies"] += 1
        by_split[s.split]["patients"].add(s.patient)
        if study in raw.reports:
            by_split[s.split]["reports"].append(raw.reports[study])
    for image in raw.images.values():
        by_split[image.split]["images"] += 1
    return {
        split: (
            dataset,
            split,
            v["studies"],
            v["images"],
            len(v["patients"]),
            len(v["reports"]),
            *(mean([tokens[i] for tokens in v["reports"]]) for i in range(4)),
        )
        for split, v in by_split.items()
    }


def age_bucket(age: float | None) -> str:
    if age is None:
        return "unknown"
    return "0-20" if age < 20 else "20-40" if age < 40 else "40-60" if age < 60 else "60-80" if age < 80 else "80+"


def demographics(dataset: str, raw: Raw) -> dict:
    """Age buckets count studies (percent of the split's studies); sex/race/ethnicity percent of its patients."""
    buckets = defaultdict(lambda: (set(), set()))  # (split, attribute, bucket) -> (patients, studies)
    totals = defaultdict(lambda: (set(), set()))
    for study, s in raw.studies.items():
        person = raw.patients.get(s.patient, Person(None))
        totals[s.split][0].add(s.patient)
        totals[s.split][1].add(study)
        for attribute, bucket in (
            ("age_bucket", age_bucket(s.age)),
            ("sex", person.sex),
            ("race", person.race),
            ("ethnicity", person.ethnicity),
        ):
            patients, studies = buckets[(s.split, attribute, bucket or "unknown")]
            patients.add(s.patient)
            studies.add(study)
    out = {}
    for (split, attribute, bucket), (patients, studies) in buckets.items():
        part, whole = (
            (len(studies), len(totals[split][1]))
            if attribute == "age_bucket"
            else (len(patients), len(totals[split][0]))
        )
        out[(split, attribute, bucket)] = (
            dataset,
            split,
            attribute,
            bucket,
            len(patients),
            len(studies),
            100.0 * part / whole,
        )
    return out


@lru_cache(maxsize=1)
def finding_map() -> tuple[dict, dict]:
    """(labeler, raw) -> finding and raw -> finding for `*`, both lower-cased, from the vocabulary CSV."""
    own, anywhere = {}, {}
    with open(VOCAB, newline="") as f:
        for r in csv.DictReader(f):
            key = r["raw_label"].strip().lower()
            if r["source"] == "*":
                anywhere[key] = r["finding"]
            else:
                own[(r["source"], key)] = r["finding"]
    return own, anywhere


def finding(raw_label: str, labeler: str) -> str | None:
    """The labeler's own row first, then `*`; no row, or a row left empty on purpose, gives None."""
    own, anywhere = finding_map()
    key = raw_label.strip().lower()
    found = own[(labeler, key)] if (labeler, key) in own else anywhere.get(key)
    return found or None


def image_labels(dataset: str, raw: Raw) -> dict:
    """One row per image and label; a study-level label (no image_id) applies to every image of its study."""
    images_of = defaultdict(list)
    for image_id, image in raw.images.items():
        images_of[image.study].append(image_id)
    out = {}
    for study, image_id, raw_label, value, labeler, method in raw.labels:
        for target in [image_id] if image_id is not None else images_of[study]:
            image = raw.images[target]
            person = raw.patients.get(image.patient)
            key = (target, labeler, raw_label, method)
            assert key not in out, key
            out[key] = (
                dataset,
                target,
                f"{dataset}:{target}",  # image_uid: these datasets' own image files
                image.study,
                image.patient,
                image.split,
                image.view,
                image.frontal,
                person.sex if person else "U",
                raw.studies[image.study].age,
                finding(raw_label, labeler),
                raw_label,
                value,
                labeler,
                method,
                None,
            )  # no readers here
    return out


# --- comparisons -------------------------------------------------------------------------------


def rows_of(wh: Warehouse, table: str, dataset: str, where: str = "") -> list[tuple]:
    return published(wh, f"SELECT * FROM {table} WHERE dataset = '{dataset}' {where}")


def assert_rows(got_rows: list[tuple], expected: dict, key, what: str, close: tuple[int, ...] = ()) -> None:
    """Row-by-row equality; columns in `close` are rounded percentages (within 0.005 of the exact value)."""
    got = {}
    for row in got_rows:
        k = key(row)
        assert k not in got, f"{what}: duplicate row {k}"
        got[k] = row
    assert set(got) == set(expected), (
        f"{what}: missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}"
    )
    wrong = []
    for k, want in expected.items():
        have = got[k]
        for i, (a, b) in enumerate(zip(have, want)):
            same = (
                abs(a - b) <= 0.005 + 1e-9
                if i in close and a is not None and b is not None
                else (a == b if not isinstance(b, float) else a is not None and abs(a - b) <= 1e-6 * max(1, abs(b)))
            )
            if not same:
                wrong.append((k, i, a, b))
    assert not wrong, f"{what}: (key, column, published, recounted) {wrong[:5]}"
    assert expected, f"{what}: nothing compared"


def check_split_stats(wh, dataset: str, raw: Raw) -> list[tuple]:
    got = rows_of(wh, "split_stats", dataset)
    assert_rows(got, split_stats(dataset, raw), lambda r: r[1], f"{dataset} split_stats")
    assert [r[1] for r in got] == sorted((r[1] for r in got), key=lambda s: SPLIT_ORDER.get(s, 4))
    return got


def check_demographics(wh, dataset: str, raw: Raw) -> dict:
    expected = demographics(dataset, raw)
    assert_rows(rows_of(wh, "demographics", dataset), expected, lambda r: r[1:4], f"{dataset} demographics", close=(6,))
    return expected


def check_image_labels(wh, dataset: str, raw: Raw, where: str = "") -> dict:
    expected = image_labels(dataset, raw)
    assert_rows(
        rows_of(wh, "image_labels", dataset, where),
        expected,
        lambda r: (r[1], r[13], r[11], r[14]),
        f"{dataset} image_labels",
    )
    return expected


# --- PadChest and ReXGradient samples, ingested once ----------------------------------------------


def tokens(text: str | None) -> int | None:
    """warehouse.text's tokenizer restated: runs of non-whitespace; null for absent or blank text."""
    return len(text.split()) if text and text.strip() else None


def padchest_raw(rows: list[dict]) -> Raw:
    e = padchest_expected(rows)
    studies = {k: Study(v[1], v[2], v[4]) for k, v in e["studies"].items()}
    images = {k: Image(v[1], v[2], v[3], v[4], v[6]) for k, v in e["images"].items()}
    patients = {k: Person(v[1]) for k, v in e["patients"].items()}
    firsts = {}
    for r in rows:
        firsts.setdefault(r["StudyID"], r)
    # Spanish full text only: a report row per study with a Report, no sections, so no tokens
    reports = {s: (None,) * 4 for s, r in firsts.items() if r["Report"] not in ("", "nan")}
    return Raw(studies, images, patients, reports, list(e["labels"]))


def rexgradient_raw(folder: Path) -> Raw:
    e = rexgradient_expected(folder)
    studies = {k: Study(v[1], v[2], norm(v[4])) for k, v in e["studies"].items()}
    images = {k: Image(v[1], studies[v[1]].patient, v[2], v[3], v[5]) for k, v in e["images"].items()}
    patients = {k: Person(v[1], v[3], v[5]) for k, v in e["patients"].items()}
    reports = {}
    for study, r in e["csv"].items():
        sections = [
            None if (r[s] or "").strip().lower() in ("", "none") else r[s]
            for s in ("Indication", "Comparison", "Findings", "Impression")
        ]
        if any(sections):
            reports[study] = tuple(tokens(s) for s in sections)
    return Raw(studies, images, patients, reports, [])


@pytest.fixture(scope="module")
def samples(tmp_path_factory, cache_dir, public_data):
    """A warehouse with the PadChest and ReXGradient samples ingested, and their raw recounts."""
    root = tmp_path_factory.mktemp("derived")
    header, rows = padchest_sample(public_data, n=800)
    write_padchest(root / "padchest", header, rows)
    rexgradient_samples.write_samples(root / "rexgradient", patients=60, seed=3)
    wh = Warehouse(make_settings(root / "wh", cache_dir, padchest=root / "padchest", rexgradient=root / "rexgradient"))
    wh.ingest(["padchest", "rexgradient"], say=lambda m: None)
    return wh, {"padchest": padchest_raw(rows), "rexgradient": rexgradient_raw(root / "rexgradient")}


def test_padchest_split_stats_equal_recount(samples):
    wh, raw = samples
    (row,) = check_split_stats(wh, "padchest", raw["padchest"])
    assert row[1] == "unassigned" and row[5] > 0 and row[6:] == (None,) * 4


def test_padchest_demographics_equal_recount(samples):
    wh, raw = samples
    expected = check_demographics(wh, "padchest", raw["padchest"])
    assert expected[("unassigned", "age_bucket", "unknown")][5] == 1  # the study without a birth year
    assert expected[("unassigned", "age_bucket", "80+")][5] > 0
    assert ("unassigned", "sex", "U") in expected and ("unassigned", "race", "not_recorded") in expected
    ages = [v[6] for k, v in expected.items() if k[1] == "age_bucket"]
    assert abs(sum(ages) - 100) < 1e-9


def test_padchest_image_labels_expand_study_labels_to_every_image(samples):
    wh, raw = samples
    expected = check_image_labels(wh, "padchest", raw["padchest"])
    normal = {k[0]: v for k, v in expected.items() if k[0].startswith("99901_")}
    assert sorted(normal) == ["99901_0", "99901_1"]  # one study label, two images
    assert {(v[6], v[7], v[9], v[10], v[12]) for v in normal.values()} == {
        ("PA", True, None, "no_finding", 1),
        ("LATERAL", False, None, "no_finding", 1),
    }
    assert len(expected) > len(raw["padchest"].labels)


def test_rexgradient_split_stats_equal_recount(samples):
    wh, raw = samples
    got = check_split_stats(wh, "rexgradient", raw["rexgradient"])
    assert [r[1] for r in got] == ["train", "valid", "test"]
    assert all(None not in r[6:] for r in got)  # every section has tokens somewhere


def test_rexgradient_demographics_equal_recount(samples):
    wh, raw = samples
    expected = check_demographics(wh, "rexgradient", raw["rexgradient"])
    assert {k[0] for k in expected} == {"train", "valid", "test"}
    assert any(k[1] == "race" and k[2] not in ("unknown", "not_recorded") for k in expected)
    assert any(k[1] == "race" and k[2] == "unknown" for k in expected)  # blank EthnicGroup: recorded, unknown


# --- the real NIH and CheXpert files, through the session warehouse ---------------------------


def as_raw(e: dict) -> Raw:
    """NIH's or CheXpert's expected tables (image rows: id, study, patient, split, view, source, frontal)."""
    return Raw(
        {k: Study(v[1], v[2], v[3]) for k, v in e["studies"].items()},
        {k: Image(v[1], v[2], v[3], v[4], v[6]) for k, v in e["images"].items()},
        {k: Person(v[1]) for k, v in e["patients"].items()},
        {},
        list(e["labels"]),
    )


@pytest.fixture(scope="module")
def nih_raw(raw_files):
    return as_raw(nih_entry_expected(raw_files["nih_entry"]))


@pytest.fixture(scope="module")
def chexpert_raw(raw_files):
    return as_raw(chexpert_train_expected(raw_files["chexpert_train"]))


def test_nih_derived_tables_equal_recount(public_warehouse, nih_raw):
    (row,) = check_split_stats(public_warehouse, "nih_cxr14", nih_raw)
    assert row[2:6] == (112_120, 112_120, 30_805, 0)
    check_demographics(public_warehouse, "nih_cxr14", nih_raw)
    check_image_labels(public_warehouse, "nih_cxr14", nih_raw)


def test_chexpert_derived_tables_equal_recount(public_warehouse, chexpert_raw):
    (row,) = check_split_stats(public_warehouse, "chexpert", chexpert_raw)
    assert row[2:6] == (187_641, 223_414, 64_540, 0)
    expected = check_demographics(public_warehouse, "chexpert", chexpert_raw)
    assert expected[("train", "age_bucket", "unknown")][5] == 3  # the three age-0 studies
    subset = {p for p in chexpert_raw.patients if p < "patient03000"}
    labels = [label for label in chexpert_raw.labels if label[0].split("/")[0] in subset]
    check_image_labels(
        public_warehouse, "chexpert", chexpert_raw._replace(labels=labels), where="AND patient_id < 'patient03000'"
    )

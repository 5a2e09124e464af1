"""PadChest against its real label CSV (160,861 rows) and small samples cut from it.

Expected numbers come from the raw file, recounted here with the csv module and ast (not the
adapter's regex parsing), and from the published row count.
"""

from __future__ import annotations

import ast
import csv
import gzip
import re
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings

FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PUBLISHED_ROWS = 160_861


def _raw_rows(path: Path) -> tuple[list[str], list[dict]]:
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


@cache
def _label_list(text: str) -> tuple | None:
    """The Python list literal, parsed the slow and sure way (cached: many rows repeat a list)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return tuple(value) if isinstance(value, list) else None


@pytest.fixture(scope="module")
def raw(public_data):
    header, rows = _raw_rows(Path(public_data.root) / "padchest" / (FILE + ".gz"))
    moved = _rows_filed_under_a_second_patient(rows)
    return {"header": header, "rows": rows, "kept": [r for r in rows if r["ImageID"] not in moved]}


@pytest.fixture(scope="module")
def result(public_data):
    return get_adapter("padchest").read(SourceFolder(str(Path(public_data.root) / "padchest")))


def test_images_studies_patients_equal_raw_recount(result, raw):
    rows = raw["rows"]
    images, studies, patients = (result.tables[t] for t in ("images", "studies", "patients"))
    moved = _rows_filed_under_a_second_patient(rows)
    kept = [r for r in rows if r["ImageID"] not in moved]
    assert len(rows) == PUBLISHED_ROWS == images.height + len(moved)
    assert set(images["image_id"]) == {r["ImageID"].removesuffix(".png") for r in kept}
    assert images["image_id"].n_unique() == images.height
    assert set(studies["study_id"]) == {r["StudyID"] for r in rows}
    assert studies["study_id"].n_unique() == studies.height
    assert set(zip(studies["study_id"], studies["patient_id"])) == {(r["StudyID"], r["PatientID"]) for r in kept}
    assert patients.height == patients["patient_id"].n_unique() == len({r["PatientID"] for r in kept})
    assert set(images["split"]) == set(studies["split"]) == {"unassigned"}


def _rows_filed_under_a_second_patient(rows: list[dict]) -> set[str]:
    """ImageIDs of rows whose study has more images under another patient (recounted from the raw rows)."""
    images_of = defaultdict(Counter)
    for r in rows:
        images_of[r["StudyID"]][r["PatientID"]] += 1
    moved = set()
    for r in rows:
        per_patient = images_of[r["StudyID"]]
        if len(per_patient) > 1 and r["PatientID"] != per_patient.most_common(1)[0][0]:
            moved.add(r["ImageID"])
    return moved


def test_a_study_filed_under_two_patients_keeps_its_majority_patient(result, raw):
    """The source has one StudyID under two PatientIDs: the minority row is quarantined, named and kept."""
    moved = _rows_filed_under_a_second_patient(raw["rows"])
    assert len(moved) == 1
    conflicts = result.rejected().filter(pl.col("reason").str.contains("is filed under patients"))
    assert conflicts.height == len(moved)
    assert conflicts["column_name"].to_list() == ["PatientID"]
    assert "216840111366964012558082906712010004190248051" in conflicts["reason"][0]
    assert result.tables["studies"]["study_id"].n_unique() == result.tables["studies"].height


class _RecordedRejects:
    """Stands in for csvread.Rejects: keeps what an adapter step quarantines, with its reason."""

    def __init__(self):
        self.added: list[tuple[list[str], str, str]] = []

    def add(self, bad: pl.DataFrame, *, table: str, column: str, reason: str = "") -> None:
        self.added.append((bad["ImageID"].to_list(), column, reason))


def test_a_study_split_evenly_between_two_patients_stays_with_the_one_seen_first():
    """A tie in image counts is broken by file order, so a re-ingest keeps the same patient."""
    from warehouse.sources.padchest import _one_patient_per_study

    rows = pl.DataFrame(
        {  # S1: one image under P-first (row 0), then one under P-late (row 2), a 1-1 tie
            "ImageID": ["a.png", "b.png", "c.png", "d.png", "e.png"],
            "StudyID": ["S1", "S2", "S1", "S2", "S3"],
            "PatientID": ["P-first", "P2", "P-late", "P2", "P3"],
        }
    )
    rejects = _RecordedRejects()
    kept = _one_patient_per_study(rows, rejects)
    assert kept["ImageID"].to_list() == ["a.png", "b.png", "d.png", "e.png"]
    assert rejects.added == [
        (["c.png"], "PatientID", "StudyID S1 is filed under patients P-first, P-late; the study is kept under P-first")
    ]


def test_images_path_view_and_size(result, raw):
    images = result.tables["images"]
    by_id = {r["ImageID"].removesuffix(".png"): r for r in raw["rows"][:2000]}
    sample = images.filter(pl.col("image_id").is_in(list(by_id))).to_dicts()
    assert len(sample) == len(by_id)
    for got in sample:
        r = by_id[got["image_id"]]
        assert got["path"] == f"{r['ImageDir']}/{r['ImageID']}"
        assert (got["width"], got["height"]) == (int(r["Columns_DICOM"]), int(r["Rows_DICOM"]))
        assert got["view_source"].split("/")[0] == r["Projection"]
    projections = Counter(r["Projection"] for r in raw["kept"])
    views = dict(images.group_by("view_position").len().iter_rows())
    assert views["PA"] == projections["PA"]
    assert views["LATERAL"] == projections["L"]
    assert views["AP_SUPINE"] == projections["AP_horizontal"]
    assert views["AP"] == projections["AP"]
    assert views["UNKNOWN"] == projections["UNK"]
    assert views["OTHER"] == projections["COSTAL"] + projections["EXCLUDE"]


def test_label_counts_equal_raw_recount(result, raw):
    studies_with = Counter()
    seen = set()
    for r in raw["rows"]:
        if r["StudyID"] in seen:
            continue
        seen.add(r["StudyID"])
        labels = _label_list(r["Labels"])
        for label in {x.strip() for x in labels or []} - {""}:
            studies_with[label] += 1
    got = dict(result.tables["labels"].group_by("raw_label").len().iter_rows())
    for label in (
        "normal",
        "cardiomegaly",
        "pleural effusion",
        "pneumonia",
        "exclude",
        "suboptimal study",
        "COPD signs",
        "unchanged",
        "NSG tube",
    ):
        assert got[label] == studies_with[label], label
    assert got == dict(studies_with)
    labels = result.tables["labels"]
    assert labels.select("study_id", "raw_label").is_unique().all()
    assert set(labels["method"]) == {"Physician", "RNN_model"}
    findings = dict(labels.group_by("finding").len().iter_rows())
    assert findings["no_finding"] == studies_with["normal"]
    assert findings["cardiomegaly"] == studies_with["cardiomegaly"]


def test_locations_of_physician_sentences_equal_raw(result, raw):
    """For Physician studies: a label's locations are the 'loc …' entries of its sentences."""
    expected = {}
    for r in raw["rows"]:
        if r["MethodLabel"] != "Physician" or r["StudyID"] in expected:
            continue
        # 13 rows hold a bare nan sentence (pandas' NaN): read it as None
        sentences = _label_list(re.sub(r"\bnan\b", "None", r["LabelsLocalizationsBySentence"])) or []
        locs = defaultdict(list)
        for sentence in sentences:
            if not isinstance(sentence, list):
                continue
            items = [x.strip() for x in sentence]
            where = [x for x in items if x.startswith("loc ")]
            for item in items:
                if not item.startswith("loc "):
                    locs[item] += [w for w in where if w not in locs[item]]
        expected[r["StudyID"]] = {
            label: locs.get(label) or None for label in {x.strip() for x in _label_list(r["Labels"]) or []} - {""}
        }
    labels = result.tables["labels"].filter(pl.col("method") == "Physician")
    got = defaultdict(dict)
    for study, label, locations in labels.select("study_id", "raw_label", "locations").iter_rows():
        got[study][label] = locations
    assert dict(got) == {s: v for s, v in expected.items() if v}
    fibrosis = got["135803415504923515076821959678074435083"]
    assert fibrosis["pulmonary fibrosis"] == ["loc basal bilateral"]
    assert fibrosis["ground glass pattern"] == ["loc basal"] and fibrosis["kyphosis"] is None


def test_unparseable_labels_are_quarantined_and_rows_kept(result, raw):
    bad = [(i, r) for i, r in enumerate(raw["rows"], 1) if _label_list(r["Labels"]) is None]
    quarantine = result.rejected().filter(pl.col("target_table") == "labels")
    assert len(bad) == quarantine.height == 103
    assert set(quarantine["column_name"]) == {"Labels"}
    assert set(quarantine["row_number"]) == {i for i, _ in bad}
    assert quarantine["source_file"].str.ends_with(FILE + ".gz").all()
    kept = set(result.tables["images"]["image_id"])
    assert all(r["ImageID"].removesuffix(".png") in kept for _, r in bad)


def test_age_and_sex(result, raw):
    studies = result.tables["studies"]
    ages = studies["age_years"].drop_nulls()
    assert ages.min() >= 0 and ages.max() <= 110
    assert 50 <= ages.median() <= 75
    assert studies["age_years"].null_count() == len({r["StudyID"] for r in raw["rows"] if r["PatientBirth"] == ""})
    row = raw["rows"][0]
    first = studies.filter(pl.col("study_id") == row["StudyID"]).row(0, named=True)
    assert first["age_years"] == int(row["StudyDate_DICOM"][:4]) - float(row["PatientBirth"])
    assert first["age_source"] == row["PatientBirth"]
    sexes = dict(
        result.tables["patients"]
        .group_by("sex_source", "sex")
        .len()
        .select(pl.concat_str("sex_source", "sex", separator="->"), "len")
        .iter_rows()
    )
    assert set(sexes) == {"M->M", "F->F", "O->U", "nan->U"}


def test_reports_are_spanish_full_text_only(result, raw):
    reports = result.tables["reports"]
    with_report = {r["StudyID"] for r in raw["rows"] if r["Report"] not in ("", "nan")}
    assert set(reports["study_id"]) == with_report
    assert set(reports["language"]) == {"es"}
    for section in ("indication", "comparison", "findings", "impression"):
        assert reports[section].is_null().all() and reports[f"tokens_{section}"].is_null().all()
    row = raw["rows"][1]
    assert reports.filter(pl.col("study_id") == row["StudyID"])["full_text"].item() == row["Report"]


# --- small samples cut from the real file ------------------------------------------------------


def _sample_rows(raw, n: int = 30) -> list[dict]:
    """The first n real rows plus crafted rows for the odd cases."""
    rows = [dict(r) for r in raw["rows"][:n]]
    template = dict(raw["rows"][0])

    def crafted(i: int, **changes) -> dict:
        row = dict(
            template,
            **{
                "": str(n + i),
                "StudyID": f"9990{i}",
                "PatientID": f"8880{i}",
                "ImageID": f"9990{i}_abc.png",
                "ReportID": f"777{i}",
            },
        )
        row.update(changes)
        return row

    rows.append(
        crafted(
            1,
            MethodLabel="RNN_model",
            Labels="['cardiomegaly', ' pleural effusion', '', 'heart insufficiency']",
            LabelsLocalizationsBySentence="['cardiomegaly', ' pleural effusion', 'loc cardiac', "
            "'loc left', '', 'loc bilateral', 'heart insufficiency', "
            "'loc cardiac', 'exclude']",
        )
    )
    rows.append(
        crafted(
            2,
            MethodLabel="Physician",
            Labels="['unchanged', 'vascular hilar enlargement', ' unchanged']",
            LabelsLocalizationsBySentence="[nan, ['unchanged'], [], ['vascular hilar enlargement', "
            "'loc hilar', 'loc right'], ['normal']]",
        )
    )
    rows.append(
        crafted(
            3,
            Labels="nan",
            Localizations="nan",
            LabelsLocalizationsBySentence="nan",
            Report="nan",
            PatientSex_DICOM="nan",
            Projection="UNK",
        )
    )
    rows.append(crafted(4, StudyDate_DICOM="2014131", Report=" informe con\nsalto de linea ."))
    return rows


def _write_csv(folder: Path, header: list[str], rows: list[dict], *, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (FILE + (".gz" if gz else ""))
    with gzip.open(path, "wt", newline="") if gz else open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([r[c] for c in header] for r in rows)
    return path


def test_sample_odd_rows(tmp_path, raw):
    _write_csv(tmp_path / "pc", raw["header"], _sample_rows(raw))
    result = get_adapter("padchest").read(SourceFolder(str(tmp_path / "pc")))
    labels = {
        (s, label): (m, loc)
        for s, label, m, loc in result.tables["labels"]
        .select("study_id", "raw_label", "method", "locations")
        .iter_rows()
    }
    assert labels[("99901", "cardiomegaly")] == ("RNN_model", ["loc cardiac", "loc left"])
    assert labels[("99901", "pleural effusion")] == ("RNN_model", ["loc cardiac", "loc left"])
    assert labels[("99901", "heart insufficiency")] == ("RNN_model", ["loc cardiac"])
    assert {label for s, label in labels if s == "99901"} == {"cardiomegaly", "pleural effusion", "heart insufficiency"}
    assert labels[("99902", "unchanged")] == ("Physician", None)
    assert labels[("99902", "vascular hilar enlargement")] == ("Physician", ["loc hilar", "loc right"])
    assert not any(s == "99903" for s, _ in labels)

    quarantine = {(r["column_name"], r["row_number"]): r for r in result.rejected().to_dicts()}
    assert set(quarantine) == {("Labels", 33), ("StudyDate_DICOM", 34)}
    assert quarantine[("StudyDate_DICOM", 34)]["value"] == "2014131"
    images = {r["image_id"]: r for r in result.tables["images"].to_dicts()}
    assert len(images) == 34 and images["99903_abc"]["view_position"] == "UNKNOWN"
    studies = {r["study_id"]: r for r in result.tables["studies"].to_dicts()}
    assert studies["99904"]["study_date"] is None and studies["99904"]["age_years"] is None
    patients = {r["patient_id"]: r for r in result.tables["patients"].to_dicts()}
    assert (patients["88803"]["sex"], patients["88803"]["sex_source"]) == ("U", "nan")
    reports = {r["study_id"]: r for r in result.tables["reports"].to_dicts()}
    assert "99903" not in reports and reports["99904"]["full_text"] == " informe con\nsalto de linea ."


def test_wrong_header_and_missing_file(tmp_path, raw):
    header = list(raw["header"])
    header[header.index("labelCUIS")] = "LabelCUIS"  # the README's spelling, not the file's
    rows = [{("LabelCUIS" if k == "labelCUIS" else k): v for k, v in r.items()} for r in raw["rows"][:3]]
    _write_csv(tmp_path / "pc", header, rows, gz=False)
    with pytest.raises(SourceError, match=r"PADCHEST.*\.csv, line 1.*unexpected header"):
        get_adapter("padchest").read(SourceFolder(str(tmp_path / "pc")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"PADCHEST_chest_x_ray_images_labels_160K_01\.02\.19\.csv\[\.gz\]"):
        get_adapter("padchest").read(SourceFolder(str(tmp_path / "empty")))


def test_ingest_end_to_end(tmp_path, cache_dir, raw):
    _write_csv(tmp_path / "pc", raw["header"], _sample_rows(raw, n=200))
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, padchest=tmp_path / "pc"))
    wh.ingest(["padchest"], say=lambda m: None)
    rows = wh.sql("""
        SELECT p.sex, count(DISTINCT i.image_id) AS images
        FROM labels l
        JOIN images i ON i.dataset = l.dataset AND i.study_id = l.study_id
        JOIN patients p ON p.dataset = i.dataset AND p.patient_id = i.patient_id
        WHERE l.dataset = 'padchest' AND l.finding = 'cardiomegaly' AND i.is_frontal
        GROUP BY ALL
    """).to_pylist()
    sample = _sample_rows(raw, n=200)
    expected = Counter()
    for r in sample:
        if r["Projection"] in ("PA", "AP", "AP_horizontal") and "cardiomegaly" in {
            x.strip() for x in _label_list(r["Labels"]) or []
        }:
            expected[r["PatientSex_DICOM"] if r["PatientSex_DICOM"] in ("M", "F") else "U"] += 1
    assert {r["sex"]: r["images"] for r in rows} == dict(expected) and expected
    bad_labels = sum(_label_list(r["Labels"]) is None for r in sample)
    quarantined = wh.sql("SELECT column_name, count(*) FROM quarantine WHERE dataset = 'padchest' GROUP BY 1")
    assert dict(zip(*(c.to_pylist() for c in quarantined.columns))) == {"Labels": bad_labels, "StudyDate_DICOM": 1}
    orphans = wh.sql("SELECT count(*) FROM reports r ANTI JOIN studies s USING (dataset, study_id)")
    assert orphans.column(0)[0].as_py() == 0

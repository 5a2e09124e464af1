"""IU X-ray against its real report archive and DICOM-header table, and small archives cut from them.

Expected numbers come from the published counts (3,955 reports, 7,470 images, 104 reports
without images) and from the raw files, recounted here with tarfile, ElementTree and csv.
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.sources import get_adapter
from warehouse.sources.base import SourceError, SourceFolder

from .conftest import make_settings

ARCHIVE = "NLMCXR_reports.tgz"
METADATA = "nlmcxr_dicom_metadata.csv.gz"


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.fixture(scope="module")
def folder(public_data) -> Path:
    return Path(public_data.root) / "iu_xray"


@pytest.fixture(scope="module")
def raw(folder):
    """Per report (uId): sections, image ids and MeSH terms, read straight from the XML."""
    members = _members(folder / ARCHIVE)
    reports = {}
    for name, data in members.items():
        root = ET.fromstring(data)
        reports[root.find("uId").get("id")] = {
            "member": name,
            "sections": {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")},
            "images": [p.get("id") for p in root.findall("parentImage")],
            "mesh": [(m.tag, m.text.strip()) for m in root.find("MeSH")],
        }
    with gzip.open(folder / METADATA, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        metadata = {row[0]: dict(zip(header, row)) for row in reader}
    return {"members": members, "reports": reports, "metadata": metadata, "header": header}


@pytest.fixture(scope="module")
def result(folder):
    return get_adapter("iu_xray").read(SourceFolder(str(folder)))


def test_published_counts_and_raw_recount(result, raw):
    reports, images = result.tables["reports"], result.tables["images"]
    assert reports.height == len(raw["reports"]) == 3_955
    assert images.height == sum(len(r["images"]) for r in raw["reports"].values()) == 7_470
    assert sum(not r["images"] for r in raw["reports"].values()) == 104
    assert images.join(reports, on="study_id", how="anti").height == 0
    assert reports.join(images, on="study_id", how="anti").height == 104
    assert set(images["image_id"]) == {i for r in raw["reports"].values() for i in r["images"]}
    for table in ("patients", "studies"):
        assert result.tables[table].height == 3_955
    assert result.rejected().is_empty()


def test_keys_and_joins(result):
    t = result.tables
    assert t["images"]["image_id"].is_unique().all()
    assert t["studies"]["study_id"].is_unique().all() and t["patients"]["patient_id"].is_unique().all()
    assert t["labels"].select("study_id", "raw_label").is_unique().all()
    # IU has no patient ids: each report is its own patient
    assert (t["studies"]["study_id"] == t["studies"]["patient_id"]).all()
    assert t["images"].join(t["studies"], on=["study_id", "patient_id"], how="anti").height == 0
    assert t["studies"].join(t["patients"], on="patient_id", how="anti").height == 0
    assert t["labels"].join(t["studies"], on="study_id", how="anti").height == 0
    assert set(t["studies"]["split"]) == set(t["images"]["split"]) == {"unassigned"}


def test_sections_equal_raw_xml(result, raw):
    reports = {r["study_id"]: r for r in result.tables["reports"].to_dicts()}
    for uid, r in list(raw["reports"].items())[:300]:
        got = reports[uid]
        for label, text in r["sections"].items():
            assert got[label.lower()] == (" ".join(text.split()) or None)
        assert got["full_text"] == "\n".join(f"{k}: {' '.join(v.split())}" for k, v in r["sections"].items() if v)
        assert got["source_file"] == f"{ARCHIVE}/{r['member']}"
    nulls = {
        s: result.tables["reports"][s].null_count() for s in ("comparison", "findings", "indication", "impression")
    }
    assert nulls == {"comparison": 622, "findings": 530, "indication": 90, "impression": 34}
    assert result.tables["reports"]["tokens_findings"].null_count() == 530
    assert reports["CXR1"]["tokens_impression"] == 3  # "Normal chest x-XXXX."


def test_images_take_view_and_size_from_the_dicom_headers(result, raw):
    metadata = raw["metadata"]
    images = result.tables["images"]
    for got in images.to_dicts():
        row = metadata.get(got["image_id"]) or metadata.get(got["image_id"].replace("CXR1_1_", "CXR1_"))
        if row is None:
            assert got["image_id"] == "CXR1000_IM-0003-1001"
            assert (got["view_position"], got["width"]) == ("UNKNOWN", None)
            continue
        assert got["view_source"] == (row["View Position"] or None)
        assert (got["width"], got["height"]) == (int(row["Columns"]), int(row["Rows"]))
        assert got["path"] == got["image_id"] + ".png"
    views = Counter(r["View Position"] for r in metadata.values())
    got = dict(images.group_by("view_position").len().iter_rows())
    assert got["PA"] == views["PA"] and got["AP"] == views["AP"] and got["LL"] == views["LL"]
    assert got["LATERAL"] == views["LATERAL"] + views["LARGE LATERAL"]
    assert got["UNKNOWN"] == views[""] + 1  # + the image without a header row


def _quoted(cell: str) -> list[str]:
    return [part.strip(" '") for part in cell.strip("[]").split(",") if part.strip(" '")]


def test_spacing_orientation_manufacturer_and_time_equal_the_header_rows(folder, raw, tmp_path):
    """DICOM's Pixel Spacing is row then column spacing, so y then x; one header row is made non-square to tell them apart."""
    header, rows = raw["header"], [dict(r) for r in raw["metadata"].values()]
    rows[0]["Pixel Spacing"] = "['0.111', '0.222']"
    rows[0]["Study Time"] = "101530.250"  # blank in every real row; HHMMSS[.f] in DICOM
    # no Pixel Spacing (blank, or only spaces): the detector's Imager Pixel Spacing stands in
    rows[1]["Pixel Spacing"], rows[1]["Imager Pixel Spacing"] = " ", "['0.333', '0.444']"
    with gzip.open(tmp_path / METADATA, "wt", newline="") as f:
        writer = csv.DictWriter(f, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / ARCHIVE).symlink_to(folder / ARCHIVE)
    tables = get_adapter("iu_xray").read(SourceFolder(str(tmp_path))).tables
    images = {r["image_id"]: r for r in tables["images"].to_dicts()}
    by_metadata_id = {i.replace("CXR1_1_", "CXR1_"): got for i, got in images.items()}
    manufacturers: dict[str, str | None] = {}
    for image_id, row in ((r["imageid"], r) for r in rows):
        got = by_metadata_id[image_id]
        spacing = _quoted(row["Pixel Spacing"]) or _quoted(row["Imager Pixel Spacing"])
        expected = tuple(map(float, spacing)) if spacing else (None, None)
        assert (got["pixel_spacing_y"], got["pixel_spacing_x"]) == pytest.approx(expected), image_id
        assert got["patient_orientation"] == ("\\".join(_quoted(row["Patient Orientation"])) or None), image_id
        if row["Manufacturer"].strip():
            manufacturers.setdefault(image_id.split("_")[0], row["Manufacturer"].strip())
    assert images[rows[0]["imageid"]]["pixel_spacing_x"] == pytest.approx(0.222)
    fallback = by_metadata_id[rows[1]["imageid"]]
    assert (fallback["pixel_spacing_y"], fallback["pixel_spacing_x"]) == pytest.approx((0.333, 0.444))
    studies = {r["study_id"]: r for r in tables["studies"].to_dicts()}
    assert {s: r["manufacturer"] for s, r in studies.items() if r["manufacturer"] is not None} == manufacturers
    timed = {s: r["study_time"] for s, r in studies.items() if r["study_time"] is not None}
    assert timed == {rows[0]["imageid"].split("_")[0]: "10:15:30"}


def test_without_the_header_table_every_image_is_kept_with_an_unknown_view(folder, raw, tmp_path):
    (tmp_path / ARCHIVE).symlink_to(folder / ARCHIVE)
    result = get_adapter("iu_xray").read(SourceFolder(str(tmp_path)))
    images, studies = result.tables["images"], result.tables["studies"]
    assert images.height == sum(len(r["images"]) for r in raw["reports"].values())
    assert set(images["view_position"]) == {"UNKNOWN"} and images["width"].null_count() == images.height
    assert images["pixel_spacing_x"].null_count() == images.height
    assert studies["age_years"].null_count() == studies.height == len(raw["reports"])
    assert any(note.startswith("no nlmcxr_dicom_metadata.csv") for note in result.notes)


def test_ages_from_birth_and_study_dates(result, raw):
    studies = {r["study_id"]: r for r in result.tables["studies"].to_dicts()}
    checked = 0
    for image_id, row in raw["metadata"].items():
        uid = image_id.split("_")[0]
        birth, seen = (
            date(int(d[:4]), int(d[4:6]), int(d[6:])) for d in (row["Patient's Birth Date"], row["Study Date"])
        )
        expected = seen.year - birth.year - ((seen.month, seen.day) < (birth.month, birth.day))
        assert studies[uid]["age_years"] == expected and studies[uid]["study_date"] == seen
        checked += 1
    assert checked == len(raw["metadata"])
    ages = result.tables["studies"]["age_years"]
    assert ages.null_count() == 104 and ages.min() >= 17 and ages.max() <= 100
    # no sex in the headers: every patient is U, the empty source value kept as null
    patients = result.tables["patients"]
    assert set(patients["sex"]) == {"U"} and patients["sex_source"].is_null().all()


def test_mesh_labels_equal_raw_terms(result, raw):
    expected, methods = Counter(), {}
    for uid, r in raw["reports"].items():
        terms = {}
        for method, term in r["mesh"]:
            if term and (term not in terms or method == "major"):
                terms[term] = method
        for term, method in terms.items():
            expected[(term, method)] += 1
            methods[(uid, term)] = method
    labels = result.tables["labels"]
    got = Counter(zip(labels["raw_label"], labels["method"]))
    assert got == expected
    assert got[("normal", "major")] == 1_391
    assert set(labels["value"]) == {1} and set(labels["labeler"]) == {"mesh"}
    by_raw = {r["raw_label"]: r for r in labels.to_dicts()}
    assert by_raw["Pulmonary Atelectasis/base/left"]["finding"] == "atelectasis"
    assert by_raw["Pulmonary Atelectasis/base/left"]["locations"] == ["base", "left"]
    assert by_raw["Cardiomegaly/borderline"]["finding"] == "cardiomegaly"
    assert by_raw["Cardiomegaly/borderline"]["locations"] is None
    assert by_raw["Lung/hypoinflation"]["finding"] == "hypoinflation"
    assert by_raw["Lung/hyperdistention"]["finding"] == "hyperinflation"
    assert by_raw["Opacity/lung/base/left"]["finding"] == "lung_opacity"
    assert by_raw["No Indexing"]["finding"] is None  # unmapped on purpose: NULL, never a slug
    assert by_raw["normal"]["finding"] == "no_finding"
    assert by_raw["atelectases"]["finding"] == "atelectasis"


# --- small archives cut from the real one -------------------------------------------------------

ODD_REPORT = b"""<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR99001"/><MedlineCitation><Article><Abstract>
<AbstractText Label="HISTORY">Cough.</AbstractText>
<AbstractText Label="IMPRESSION">No acute disease.</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>normal</major></MeSH></eCitation>"""
BROKEN_REPORT = b"""<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR99002"/><MeSH><major>normal"""


def _write_sample(
    folder: Path, raw, uids: list[str], extra: dict[str, bytes], header_edits: dict[str, dict] | None = None
) -> list[str]:
    """An archive with the reports `uids` plus `extra` members, and their header rows; returns image ids."""
    folder.mkdir(parents=True, exist_ok=True)
    members = {raw["reports"][u]["member"]: raw["members"][raw["reports"][u]["member"]] for u in uids}
    members.update(extra)
    with tarfile.open(folder / ARCHIVE, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    images = [i for u in uids for i in raw["reports"][u]["images"]]
    with gzip.open(folder / METADATA, "wt", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(raw["header"])
        writer.writerows(
            dict(raw["metadata"][i], **(header_edits or {}).get(i, {})).values() for i in images if i in raw["metadata"]
        )
    return images


def test_odd_and_malformed_members(tmp_path, raw):
    uids = ["CXR10", "CXR100", "CXR1000"]
    damaged = raw["reports"]["CXR100"]["images"][0]
    _write_sample(
        tmp_path / "iu",
        raw,
        uids,
        {"ecgen-radiology/99001.xml": ODD_REPORT, "ecgen-radiology/99002.xml": BROKEN_REPORT},
        header_edits={damaged: {"Rows": "tall"}},
    )
    result = get_adapter("iu_xray").read(SourceFolder(str(tmp_path / "iu")))
    reports = {r["study_id"]: r for r in result.tables["reports"].to_dicts()}
    assert set(reports) == {*uids, "CXR99001"}
    odd = reports["CXR99001"]
    assert odd["full_text"] == "HISTORY: Cough.\nIMPRESSION: No acute disease."
    assert odd["impression"] == "No acute disease." and odd["indication"] is None and odd["findings"] is None
    assert "CXR99001" in set(result.tables["studies"]["study_id"])
    bad = {r["column_name"]: r for r in result.rejected().to_dicts()}
    assert set(bad) == {"", "Rows"}
    assert bad[""]["source_file"].endswith(f"{ARCHIVE}/ecgen-radiology/99002.xml")
    assert "not well-formed" in bad[""]["reason"] and bad[""]["raw_record"] == BROKEN_REPORT.decode()
    # a header value that does not convert is quarantined; its image stays, without a height
    assert bad["Rows"]["value"] == "tall" and bad["Rows"]["source_file"].endswith(METADATA)
    image = result.tables["images"].filter(pl.col("image_id") == damaged).row(0, named=True)
    assert image["height"] is None and image["width"] is not None


def test_bad_files_are_named(tmp_path, raw):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"NLMCXR_reports\.tgz"):
        get_adapter("iu_xray").read(SourceFolder(str(tmp_path / "empty")))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / ARCHIVE).write_bytes(b"\x1f\x8b\x08 not a tar.gz")
    with pytest.raises(SourceError, match=r"corrupt/NLMCXR_reports\.tgz: is not a readable"):
        get_adapter("iu_xray").read(SourceFolder(str(corrupt)))
    _write_sample(tmp_path / "hdr", raw, ["CXR10"], {})
    lines = gzip.decompress((tmp_path / "hdr" / METADATA).read_bytes()).decode().split("\n")
    lines[0] = lines[0].replace("Patient's Sex", "PatientSex")
    (tmp_path / "hdr" / METADATA).write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(SourceError, match=r"nlmcxr_dicom_metadata\.csv\.gz, line 1.*unexpected header"):
        get_adapter("iu_xray").read(SourceFolder(str(tmp_path / "hdr")))


def test_ingest_end_to_end(tmp_path, cache_dir, raw):
    uids = sorted(raw["reports"])[:60]
    images = _write_sample(tmp_path / "iu", raw, uids, {"ecgen-radiology/99002.xml": BROKEN_REPORT})
    wh = Warehouse(make_settings(tmp_path / "wh", cache_dir, iu_xray=tmp_path / "iu"))
    wh.ingest(["iu_xray"], say=lambda m: None)
    frontal_normal = (
        wh.sql("""
        SELECT count(DISTINCT i.image_id)
        FROM images i JOIN labels l ON l.dataset = i.dataset AND l.study_id = i.study_id
        WHERE i.dataset = 'iu_xray' AND i.is_frontal AND l.finding = 'no_finding'
    """)
        .column(0)[0]
        .as_py()
    )
    expected = sum(
        1
        for u in uids
        if ("major", "normal") in raw["reports"][u]["mesh"]
        for i in raw["reports"][u]["images"]
        if raw["metadata"].get(i, {}).get("View Position") in ("PA", "AP")
    )
    assert frontal_normal == expected > 0
    assert wh.sql("SELECT count(*) FROM images WHERE dataset = 'iu_xray'").column(0)[0].as_py() == len(images)
    quarantine = wh.sql("SELECT source_file FROM quarantine WHERE dataset = 'iu_xray'").column(0).to_pylist()
    assert len(quarantine) == 1 and quarantine[0].endswith("ecgen-radiology/99002.xml")
    per_section = wh.sql("SELECT count(findings), count(impression) FROM reports WHERE dataset = 'iu_xray'").to_pylist()
    assert list(per_section[0].values()) == [
        sum(bool(raw["reports"][u]["sections"]["FINDINGS"]) for u in uids),
        sum(bool(raw["reports"][u]["sections"]["IMPRESSION"]) for u in uids),
    ]

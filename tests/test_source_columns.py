"""Nothing an adapter reads is dropped: every column of every native file lands in a canonical column or in
the table's `source_attributes` map.

Each adapter declares, once, where each native column goes (its module's SOURCE_FIELDS: column ->
"table.column", a tuple of them, or "table.source_attributes"). This test reads the native headers itself
(csv / json / gzip, not the adapters' readers) and fails when a column is in neither place; it also checks
that every declared destination is a real schema column, and that the keys the adapter actually emits in
source_attributes are the ones it declared.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from warehouse import schema
from warehouse.samples.defaults import write as write_sample
from warehouse.sources import (
    chexpert,
    chexpert_plus,
    get_adapter,
    iu_xray,
    mimic_cxr,
    mimic_qba,
    nih_cxr14,
    padchest,
    rexgradient,
    rsna_pneumonia,
    siim_pneumothorax,
    vindr_cxr,
)
from warehouse.sources.base import SourceFolder

MODULES = {
    "nih_cxr14": nih_cxr14,
    "chexpert": chexpert,
    "padchest": padchest,
    "iu_xray": iu_xray,
    "mimic_cxr": mimic_cxr,
    "mimic_qba": mimic_qba,
    "rexgradient": rexgradient,
    "chexpert_plus": chexpert_plus,
}
ATTRIBUTE_TABLES = ("patients", "studies", "images")


def _open(path: Path):
    return (
        gzip.open(path, "rt", newline="", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, newline="", encoding="utf-8")
    )


def csv_header(path: Path) -> list[str]:
    with _open(path) as f:
        return next(csv.reader(f))


def csv_rows(path: Path, limit: int | None = None) -> list[list[str]]:
    with _open(path) as f:
        reader = csv.reader(f)
        next(reader)
        return [row for i, row in zip(range(limit or 10**9), reader)]


def json_image_fields(path: Path) -> list[str]:
    """The per-image list fields of a ReXGradient {split}_metadata_view_position.json (lists aligned with ImagePath)."""
    doc = json.loads(path.read_text())
    fields = set()
    for entry in doc.values():
        n = len(entry["ImagePath"])
        fields |= {k for k, v in entry.items() if isinstance(v, list) and len(v) == n and k.startswith("Image")}
    return sorted(fields)


def destinations(where) -> list[str]:
    return list(where) if isinstance(where, tuple) else [where]


def assert_declared(module, file: str, header: list[str]) -> None:
    """Every native column has a declared destination, and every destination is a schema column."""
    fields = module.SOURCE_FIELDS[file]
    undeclared = [c for c in header if c not in fields]
    assert not undeclared, (
        f"{module.__name__}: {file} columns neither mapped nor kept in source_attributes: {undeclared}"
    )
    for column, where in fields.items():
        for dest in destinations(where):
            if dest in getattr(module, "MARKERS", (getattr(module, "EMPTY", None),)):
                continue
            dest = dest.removeprefix("linked:chexpert.")
            table, _, name = dest.partition(".")
            assert table in schema.TABLES and name in schema.TABLES[table].column_names, (
                f"{module.__name__}: {file} column {column!r} goes to {dest!r}, which is not a schema column"
            )


def assert_empty_columns(module, file: str, path: Path) -> None:
    """A column declared EMPTY (no name) really has no values."""
    header = csv_header(path)
    empty = [i for i, c in enumerate(header) if module.SOURCE_FIELDS[file].get(c) == getattr(module, "EMPTY", 0)]
    for row in csv_rows(path):
        assert all(i >= len(row) or row[i] == "" for i in empty), row


def emitted_keys(tables: dict[str, pl.DataFrame]) -> dict[str, set[str]]:
    keys = defaultdict(set)
    for name in ATTRIBUTE_TABLES:
        frame = tables.get(name)
        if frame is None or "source_attributes" not in frame.columns:
            continue
        for entries in frame["source_attributes"].drop_nulls().to_list():
            keys[name] |= {e["key"] for e in entries}
    return keys


def declared_keys(module, table: str) -> set[str]:
    rename = getattr(module, "ATTRIBUTE_KEYS", {})
    return {
        rename.get(c, c)
        for fields in module.SOURCE_FIELDS.values()
        for c, where in fields.items()
        if f"{table}.source_attributes" in destinations(where)
    }


def assert_emitted_declared(module, tables: dict[str, pl.DataFrame], extra_ok=lambda key: False) -> dict:
    keys = emitted_keys(tables)
    for table, found in keys.items():
        unknown = {k for k in found if not extra_ok(k)} - declared_keys(module, table)
        assert not unknown, f"{module.__name__}: {table}.source_attributes has undeclared keys {sorted(unknown)}"
    return keys


def read(dataset: str, folder: Path, related: dict | None = None) -> dict[str, pl.DataFrame]:
    result = get_adapter(dataset).read(SourceFolder(str(folder)), related=related)
    tables = dict(result.tables)
    chunks = defaultdict(list)
    for name, frame in result.batches or ():
        chunks[name].append(frame)
    tables.update({n: pl.concat(f, how="diagonal_relaxed") for n, f in chunks.items()})
    return tables


# --- public data ----------------------------------------------------------------------------------


def test_nih_every_column_is_kept(public_data, tmp_path):
    root = Path(public_data.root) / "nih_cxr14"
    for file, path in (
        ("Data_Entry_2017_v2020.csv", root / "Data_Entry_2017_v2020.csv.gz"),
        ("BBox_List_2017.csv", root / "BBox_List_2017.csv.gz"),
    ):
        assert_declared(nih_cxr14, file, csv_header(path))
    assert_empty_columns(nih_cxr14, "BBox_List_2017.csv", root / "BBox_List_2017.csv.gz")
    google = root / "google2019_nih-chest-xray-labels.csv.gz"
    assert google.is_file()
    assert_declared(nih_cxr14, nih_cxr14.GOOGLE_FILE, csv_header(google))
    # the 2017 file's header has one more, unnamed and empty, column
    lines = gzip.open(root / "Data_Entry_2017_v2020.csv.gz", "rt").read().splitlines()[:50]
    (tmp_path / "Data_Entry_2017.csv").write_text("".join(line + ",\n" for line in lines))
    assert_declared(nih_cxr14, "Data_Entry_2017.csv", csv_header(tmp_path / "Data_Entry_2017.csv"))
    assert_empty_columns(nih_cxr14, "Data_Entry_2017.csv", tmp_path / "Data_Entry_2017.csv")


def test_chexpert_every_column_is_kept(public_data):
    assert_declared(chexpert, "train.csv", csv_header(Path(public_data.root) / "chexpert" / "train.csv.gz"))


def test_padchest_every_column_is_kept_and_attributes_are_the_declared_ones(public_data, tmp_path):
    path = Path(public_data.root) / "padchest" / f"{padchest.FILE}.gz"
    header = csv_header(path)
    assert_declared(padchest, padchest.FILE, header)
    # the adapter on the first 400 records (re-written by csv, so records that span lines stay whole)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    rows = csv_rows(path, 400)
    writer.writerows(rows)
    (tmp_path / padchest.FILE).write_text(out.getvalue())
    tables = read("padchest", tmp_path)
    keys = assert_emitted_declared(padchest, tables)
    assert {"Modality_DICOM", "SpatialResolution_DICOM", "row_index"} <= keys["images"]
    assert {"labelCUIS", "ReportID"} <= keys["studies"]
    # the canonical homes of what the issue found dropped
    studies = tables["studies"]
    by_study = {}
    for row in rows:
        record = dict(zip(header, row))
        by_study.setdefault(record["StudyID"], record)
    got = dict(zip(studies["study_id"], studies["manufacturer"]))
    assert all(
        got[s] == (r["Manufacturer_DICOM"] if r["Manufacturer_DICOM"] != "nan" else None)
        for s, r in by_study.items()
        if s in got
    )
    assert studies["manufacturer"].null_count() < studies.height
    pediatric = dict(zip(studies["study_id"], studies["pediatric"]))
    assert all(
        pediatric[s] == {"PED": True, "No": False}.get(r["Pediatric"]) for s, r in by_study.items() if s in pediatric
    )
    images = tables["images"]
    methods = dict(zip(images["image_id"], images["projection_method"]))
    assert all(methods[r[1].removesuffix(".png")] == r[header.index("MethodProjection")] for r in rows)
    cuis = {
        s: dict((e["key"], e["value"]) for e in (a or [])).get("labelCUIS")
        for s, a in zip(studies["study_id"], studies["source_attributes"].to_list())
    }
    assert all(cuis[s] == (r["labelCUIS"] or None) for s, r in by_study.items() if s in cuis)


def test_iu_every_metadata_column_is_kept_and_pixel_spacing_is_filled(public_data):
    root = Path(public_data.root) / "iu_xray"
    path = root / "nlmcxr_dicom_metadata.csv.gz"
    header = csv_header(path)
    assert_declared(iu_xray, iu_xray.METADATA_FILE, header)
    tables = read("iu_xray", root)
    assert_emitted_declared(iu_xray, tables)
    # pixel spacing from the raw rows: Pixel Spacing, else Imager Pixel Spacing; [row (y), column (x)]
    spacing = {}
    for row in csv_rows(path):
        r = dict(zip(header, row))
        text = r["Pixel Spacing"] or r["Imager Pixel Spacing"]
        values = [float(v.strip(" '")) for v in text.strip("[]").split(",")] if text else [None, None]
        spacing[r["imageid"]] = values
    images = tables["images"].with_columns(
        pl.col("image_id").str.replace(iu_xray.SPLIT_IMAGE_ID, "${1}_${2}").alias("_meta")
    )
    compared = 0
    for meta, x, y in zip(images["_meta"], images["pixel_spacing_x"], images["pixel_spacing_y"]):
        if meta in spacing and spacing[meta][0] is not None:
            assert (y, x) == pytest.approx(tuple(spacing[meta]), rel=1e-6)
            compared += 1
    assert compared > 7000
    assert set(images["patient_orientation"].drop_nulls()) == {"L\\F", "A\\F", "P\\F", "R\\F"}


# --- generated samples of the credentialed datasets ------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("samples")
    for dataset, patients in (("mimic_cxr", 8), ("mimic_qba", 8), ("rexgradient", 20), ("chexpert_plus", 15)):
        write_sample(dataset, root / dataset, patients=patients, seed=3, cache=cache_dir)
    return root


def test_mimic_cxr_every_metadata_and_mimic_iv_patients_column_is_kept(samples):
    root = samples / "mimic_cxr"
    assert_declared(mimic_cxr, "mimic-cxr-2.0.0-metadata.csv", csv_header(root / "mimic-cxr-2.0.0-metadata.csv.gz"))
    patients_file = next(root.glob("mimiciv/*/hosp/patients.csv.gz"))
    assert_declared(mimic_cxr, "patients.csv", csv_header(patients_file))
    tables = read("mimic_cxr", root)
    keys = assert_emitted_declared(mimic_cxr, tables, extra_ok=lambda k: k in mimic_cxr.ADMISSION_ATTRIBUTES)
    assert "anchor_year_group" in keys["patients"] and "admissions.insurance" in keys["patients"]
    studies = tables["studies"]
    assert studies["study_time"].null_count() < studies.height and studies["procedure"].null_count() < studies.height
    images = tables["images"]
    assert images["view_code_meaning"].null_count() < images.height
    assert images["patient_orientation"].null_count() < images.height


def test_qba_every_metadata_column_is_kept(samples):
    root = samples / "mimic_qba"
    for level in ("patient", "study", "image"):
        file = f"metadata/{level}_metadata.csv"
        assert_declared(mimic_qba, file, csv_header(root / f"{file}.gz"))
    tables = read("mimic_qba", root, related={"mimic_cxr": SourceFolder(str(samples / "mimic_cxr"))})
    assert_emitted_declared(mimic_qba, tables)
    assert tables["studies"]["procedure"].null_count() < tables["studies"].height
    assert tables["images"]["patient_orientation"].null_count() < tables["images"].height


def test_rexgradient_every_column_is_kept(samples):
    root = samples / "rexgradient" / "metadata"
    for split in rexgradient.SPLITS:
        assert_declared(rexgradient, f"{split}_metadata.csv", csv_header(root / f"{split}_metadata.csv"))
        assert_declared(
            rexgradient,
            f"{split}_metadata_view_position.json",
            json_image_fields(root / f"{split}_metadata_view_position.json"),
        )
    tables = read("rexgradient", samples / "rexgradient")
    keys = assert_emitted_declared(rexgradient, tables)
    assert {"AccessionNumber", "StudyInstanceUid"} <= keys["studies"]


def test_chexpert_plus_every_column_is_kept(samples):
    root = samples / "chexpert_plus"
    assert_declared(chexpert_plus, chexpert_plus.CSV_FILE, csv_header(root / chexpert_plus.CSV_FILE))
    tables = read("chexpert_plus", root)
    keys = assert_emitted_declared(chexpert_plus, tables)
    assert {"insurance_type", "deceased", "interpreter_needed"} <= keys["patients"]
    assert "recent_bmi" in keys["studies"]
    assert tables["studies"]["visit_order"].null_count() == 0


def test_expert_label_sets_every_column_is_kept(public_data):
    root = Path(public_data.root)
    assert_declared(vindr_cxr, vindr_cxr.FILE, csv_header(root / "vindr_cxr" / f"{vindr_cxr.FILE}.gz"))
    assert_declared(
        siim_pneumothorax,
        siim_pneumothorax.FILE,
        csv_header(root / "siim_pneumothorax" / f"{siim_pneumothorax.FILE}.gz"),
    )
    headers = root / "rsna_pneumonia" / f"{rsna_pneumonia.HEADERS_FILE}.gz"
    assert_declared(rsna_pneumonia, rsna_pneumonia.HEADERS_FILE, csv_header(headers))
    with (
        zipfile.ZipFile(root / "rsna_pneumonia" / f"{rsna_pneumonia.LABELS_FILE}.zip") as z,
        z.open(rsna_pneumonia.LABELS_FILE) as f,
    ):
        assert_declared(rsna_pneumonia, rsna_pneumonia.LABELS_FILE, next(csv.reader(io.TextIOWrapper(f))))


def test_rsna_dicom_header_fields_land_in_the_images(public_data):
    """Every header field the schema has no column for is in images.source_attributes, value for value."""
    root = Path(public_data.root) / "rsna_pneumonia"
    tables = read("rsna_pneumonia", root)
    assert_emitted_declared(rsna_pneumonia, tables)
    kept = [
        c
        for c, where in rsna_pneumonia.SOURCE_FIELDS[rsna_pneumonia.HEADERS_FILE].items()
        if where == "images.source_attributes"
    ]
    with gzip.open(root / f"{rsna_pneumonia.HEADERS_FILE}.gz", "rt", newline="") as f:
        raw = {r["PatientID"]: r for r in csv.DictReader(f)}
    images = tables["images"].select("image_id", "patient_orientation", "source_attributes").to_dicts()
    assert len(images) == len(raw) > 20_000
    for image in images[::97]:
        row = raw[image["image_id"]]
        got = {e["key"]: e["value"] for e in image["source_attributes"] or []}
        assert got == {c: row[c] for c in kept if row[c] != ""}, image["image_id"]
        assert image["patient_orientation"] == (row["PatientOrientation"] or None)

"""The findings vocabulary: its tree, its map's coverage of the real data, and the unmapped labels' listing.

Coverage is measured on real data (NIH and CheXpert in the shared public warehouse; PadChest's and
IU X-ray's full public files) and on a generated MIMIC-Ext-CXR-QBA sample, all ingested. Expected
counts of unmapped labels are recounted here from the raw PadChest CSV with csv and ast, against the
map read with the csv module, not through the adapter or warehouse.findings.
"""

from __future__ import annotations

import ast
import csv
import gzip
from collections import Counter
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl
import pytest

from warehouse import Warehouse, findings
from warehouse.samples import mimic_cxr as mimic_cxr_samples
from warehouse.samples import mimic_qba as qba_samples
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.sources.iu_xray import mesh_term

from .conftest import make_settings

PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
SHARE = 0.001  # a raw label with at least this share of its dataset's label rows must be mapped or waived
LABELERS = {"padchest": "padchest", "iu_xray": "mesh", "mimic_qba": "qba_scene_graph"}
TUBES_AND_LINES = {
    "endotracheal_tube",
    "nasogastric_tube",
    "central_venous_catheter",
    "picc",
    "chest_tube",
    "tracheostomy_tube",
    "pacemaker",
}


def _csv_rows(name: str) -> list[dict]:
    text = resources.files("warehouse.vocab").joinpath(name).read_text()
    return list(csv.DictReader(text.splitlines()))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, cache_dir, public_data):
    """PadChest and IU X-ray from their real public files, MIMIC-Ext-CXR-QBA from a generated sample."""
    root = tmp_path_factory.mktemp("vocabulary")
    cohort = plan_mimic_cohort(6, 3)
    mimic_cxr_samples.write_samples(root / "mimic_cxr", cohort=cohort, seed=3)
    qba_samples.write_samples(root / "mimic_qba", cohort=cohort, seed=3, questions_per_study=5)
    public = Path(public_data.root)
    wh = Warehouse(
        make_settings(
            root,
            cache_dir,
            padchest=public / "padchest",
            iu_xray=public / "iu_xray",
            mimic_qba=root / "mimic_qba",
            mimic_cxr=root / "mimic_cxr",
        )
    )
    wh.ingest(["padchest", "iu_xray", "mimic_qba"], say=lambda m: None)
    return wh


def _rows(wh: Warehouse, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in wh.sql(sql).to_pylist()]


# --- (c) the vocabulary and the map are consistent ----------------------------------------------------
def test_map_findings_and_parents_exist_and_the_tree_has_no_cycle():
    vocab = _csv_rows("findings.csv")
    ids = [r["finding"] for r in vocab]
    assert len(ids) == len(set(ids))
    parent = {r["finding"]: r["parent"] or None for r in vocab}
    assert {p for p in parent.values() if p} <= set(ids)
    for finding in ids:
        seen, node = set(), finding
        while node:
            assert node not in seen, f"cycle through {finding}"
            seen.add(node)
            node = parent[node]
    rows = _csv_rows("finding_map.csv")
    assert {r["finding"] for r in rows if r["finding"]} <= set(ids)
    assert all(r["provenance"] for r in rows), "every mapping row says where it came from"
    assert all(r["note"] for r in rows if not r["finding"]), "an unmapped-on-purpose row says why"
    keys = [(r["source"], r["raw_label"].lower()) for r in rows]
    assert len(keys) == len(set(keys))
    assert findings.findings() == set(ids)
    assert findings.mapping().height == len(rows)


def test_closure_holds_every_ancestor_once_and_each_finding_itself():
    vocab = {r["finding"]: r["parent"] or None for r in _csv_rows("findings.csv")}
    closure = findings.hierarchy()
    expected = set()
    for finding in vocab:
        node, depth = finding, 0
        while node:
            expected.add((node, finding, depth))
            node, depth = vocab[node], depth + 1
    assert set(closure.iter_rows()) == expected and closure.height == len(expected)
    assert ("lung_opacity", "pneumonia", 2) in expected and ("lung_lesion", "nodule", 1) in expected
    assert findings.ancestors("pneumonia") == ["consolidation", "lung_opacity"]
    assert findings.ancestors("cardiomegaly") == ["enlarged_cardiomediastinum"]


# --- (e) a parent selects its children --------------------------------------------------------------
def test_descendants_follow_the_chexpert_hierarchy_and_the_device_types():
    assert TUBES_AND_LINES | {"support_devices"} <= findings.descendants("support_devices")
    assert findings.descendants("central_venous_catheter") == {"central_venous_catheter", "picc"}
    assert {
        "atelectasis",
        "consolidation",
        "pneumonia",
        "edema",
        "lung_lesion",
        "mass",
        "nodule",
    } <= findings.descendants("lung_opacity")
    assert findings.descendants("enlarged_cardiomediastinum") >= {"cardiomegaly"}
    assert findings.descendants("pneumothorax") == {"pneumothorax"}
    assert "emphysema" not in findings.descendants("hyperinflation")
    with pytest.raises(KeyError):
        findings.descendants("lung_hypoinflation")


def test_a_query_for_a_parent_returns_its_childrens_rows(warehouse):
    wh = warehouse
    assert _rows(wh, "SELECT count(*) FROM finding_hierarchy")[0][0] == findings.hierarchy().height
    by_finding = dict(_rows(wh, "SELECT finding, count(*) FROM labels WHERE dataset = 'padchest' GROUP BY ALL"))
    via_parent = dict(
        _rows(
            wh,
            """
        SELECT l.finding, count(*) FROM labels l JOIN finding_hierarchy h ON h.descendant = l.finding
        WHERE h.ancestor = 'support_devices' AND l.dataset = 'padchest' GROUP BY ALL""",
        )
    )
    assert via_parent == {f: n for f, n in by_finding.items() if f in findings.descendants("support_devices")}
    assert {
        "endotracheal_tube",
        "nasogastric_tube",
        "central_venous_catheter",
        "chest_tube",
        "pacemaker",
        "tracheostomy_tube",
    } <= set(via_parent)
    assert sum(via_parent.values()) > by_finding.get("support_devices", 0)
    # rows keep the most specific finding: one row per raw label, never one per ancestor
    assert _rows(wh, "SELECT count(*) FROM labels WHERE dataset = 'padchest'")[0][0] == sum(by_finding.values())
    iu = dict(
        _rows(
            wh,
            """
        SELECT l.raw_label, any_value(h.depth) FROM labels l JOIN finding_hierarchy h ON h.descendant = l.finding
        WHERE h.ancestor = 'central_venous_catheter' AND l.dataset = 'iu_xray' GROUP BY ALL""",
        )
    )
    assert iu["picc"] == 1 and iu["central venous catheters"] == 0


# --- (b) the over-maps and gaps the issue names -------------------------------------------------------
@pytest.mark.parametrize(
    "labeler, raw, term, expected",
    [
        ("padchest", "air trapping", None, "hyperinflation"),
        ("padchest", "hyperinflated lung", None, "hyperinflation"),
        ("padchest", "emphysema", None, "emphysema"),
        ("mesh", "Lung/hyperdistention", "Lung/bilateral/hyperdistention", "hyperinflation"),
        ("mesh", "hyperinflation", None, "hyperinflation"),
        ("mesh", "Opacity", "Opacity/ribs/left", None),
        ("mesh", "Opacity", "Opacity/heart", None),
        ("mesh", "Opacity", "Opacity/mediastinum/right", None),
        ("mesh", "Opacity", "Opacity/lung/base/left", "lung_opacity"),
        ("mesh", "Opacity", "Opacity/retrocardiac", "lung_opacity"),
        ("mesh", "opacity", None, "lung_opacity"),
        ("mesh", "Mass", "Mass/breast/large", None),
        ("mesh", "Mass", "Mass/lung/base/right", "mass"),
        ("qba_scene_graph", "enlarged cardiac silhouette", None, "cardiomegaly"),
        ("qba_scene_graph", "mediastinal widening", None, "enlarged_cardiomediastinum"),
        ("padchest", "mediastinal enlargement", None, "enlarged_cardiomediastinum"),
        ("qba_scene_graph", "endotracheal tube", None, "endotracheal_tube"),
        ("padchest", "endotracheal tube", None, "endotracheal_tube"),
        ("qba_scene_graph", "nasogastric tube", None, "nasogastric_tube"),
        ("padchest", "NSG tube", None, "nasogastric_tube"),
        ("qba_scene_graph", "central venous catheter", None, "central_venous_catheter"),
        ("padchest", "central venous catheter via jugular vein", None, "central_venous_catheter"),
        ("qba_scene_graph", "PICC line", None, "picc"),
        ("qba_scene_graph", "pacemaker", None, "pacemaker"),
        ("padchest", "pacemaker", None, "pacemaker"),
        ("qba_scene_graph", "chest tube", None, "chest_tube"),
        ("padchest", "chest drain tube", None, "chest_tube"),
        ("padchest", "unchanged", None, None),
        ("padchest", "no such label", None, None),
    ],
)
def test_named_labels_map_as_a_clinician_would(labeler, raw, term, expected):
    assert findings.match(raw, labeler, term)[1] == expected


def test_named_labels_in_the_ingested_rows(warehouse):
    got = dict(
        _rows(
            warehouse,
            """
        SELECT dataset || '|' || raw_label, any_value(finding) FROM labels
        WHERE raw_label IN ('air trapping', 'hyperinflated lung', 'Lung/hyperdistention', 'hyperinflation',
                            'enlarged cardiac silhouette', 'mediastinal widening', 'PICC line', 'NSG tube')
        GROUP BY ALL""",
        )
    )
    assert got["padchest|air trapping"] == got["padchest|hyperinflated lung"] == "hyperinflation"
    assert got["iu_xray|Lung/hyperdistention"] == got["iu_xray|hyperinflation"] == "hyperinflation"
    assert got["mimic_qba|enlarged cardiac silhouette"] == "cardiomegaly"
    assert got["mimic_qba|mediastinal widening"] == "enlarged_cardiomediastinum"
    assert got.get("mimic_qba|PICC line", "picc") == "picc" and got["padchest|NSG tube"] == "nasogastric_tube"
    lung = {"lung", "lingula", "base", "apex", "upper lobe", "middle lobe", "lower lobe", "retrocardiac", "hilum"}
    off_lung = [
        r
        for r, f in _rows(
            warehouse, "SELECT raw_label, finding FROM labels WHERE dataset = 'iu_xray' AND raw_label LIKE 'Opacity/%'"
        )
        if f == "lung_opacity"
        and not {q.lower() for q in r.split("/")[1:]} & lung
        and {q.lower() for q in r.split("/")[1:]} & {"ribs", "heart", "mediastinum", "breast", "spine"}
    ]
    assert off_lung == []
    assert _rows(
        warehouse, "SELECT count(*) FROM labels WHERE raw_label = 'Mass/breast/large' AND finding IS NOT NULL"
    ) == [(0,)]


# --- (a) no common raw label is left unmapped without saying so -----------------------------------------
def _uncovered(frame: pl.DataFrame, labeler: str, key) -> list[tuple[str, int, int]]:
    total = frame["n"].sum()
    return [
        (raw, n, total)
        for raw, n in frame.filter(pl.col("finding").is_null()).select("raw_label", "n").iter_rows()
        if n >= SHARE * total and not findings.match(key(raw), labeler, raw)[0]
    ]


def test_common_raw_labels_are_mapped_or_unmapped_on_purpose(warehouse, public_warehouse):
    assert _rows(public_warehouse, "SELECT count(*) FROM labels WHERE finding IS NULL") == [(0,)], (
        "every NIH and CheXpert label maps into the vocabulary"
    )
    gaps = {}
    for dataset, labeler in LABELERS.items():
        counts = warehouse.pl(
            f"SELECT raw_label, finding, count(*) AS n FROM labels WHERE dataset = '{dataset}' GROUP BY ALL"
        )
        assert counts.height, dataset
        key = (lambda raw: mesh_term(raw)[0]) if labeler == "mesh" else (lambda raw: raw)
        gaps[dataset] = _uncovered(counts, labeler, key)
    assert gaps == {d: [] for d in LABELERS}, "map these raw labels, or list them with an empty finding and a note"


def test_no_finding_outside_the_vocabulary(warehouse):
    got = {f for (f,) in _rows(warehouse, "SELECT DISTINCT finding FROM labels WHERE finding IS NOT NULL")}
    assert got <= findings.findings()
    assert _rows(
        warehouse, "SELECT count(*) FROM labels l ANTI JOIN findings f USING (finding) WHERE l.finding IS NOT NULL"
    ) == [(0,)]


# --- (d) the unmapped labels' listing equals a recount from the raw file ----------------------------------
def _padchest_raw_unmapped(path: Path) -> Counter:
    """Studies per PadChest raw label that the map (read with csv) leaves without a finding."""
    own, anywhere = {}, {}
    for r in _csv_rows("finding_map.csv"):
        (own if r["source"] == "padchest" else anywhere if r["source"] == "*" else {})[r["raw_label"].lower()] = r[
            "finding"
        ]
    studies_with, seen = Counter(), set()
    with gzip.open(path, "rt", newline="") as f:
        for r in csv.DictReader(f):
            if r["StudyID"] in seen:
                continue
            seen.add(r["StudyID"])
            try:
                labels = ast.literal_eval(r["Labels"])
            except (ValueError, SyntaxError):
                continue
            for label in {x.strip() for x in labels} - {""}:
                studies_with[label] += 1
    return Counter(
        {label: n for label, n in studies_with.items() if not own.get(label.lower(), anywhere.get(label.lower()))}
    )


def test_unmapped_labels_equal_the_raw_recount(warehouse, public_data):
    expected = _padchest_raw_unmapped(Path(public_data.root) / "padchest" / PADCHEST_FILE)
    listed = {
        r: (rows, studies, images)
        for r, rows, studies, images in _rows(
            warehouse,
            """
        SELECT raw_label, label_rows, studies, images FROM catalog_unmapped_labels WHERE dataset = 'padchest'""",
        )
    }
    assert {r: v[0] for r, v in listed.items()} == dict(expected)
    assert all(rows == studies and images == 0 for rows, studies, images in listed.values()), (
        "PadChest labels are study-level: one row per study"
    )
    assert {"unchanged", "exclude", "suboptimal study"} <= set(listed)
    null_rows = _rows(warehouse, "SELECT dataset, count(*) FROM labels WHERE finding IS NULL GROUP BY ALL")
    table = _rows(warehouse, "SELECT dataset, sum(label_rows)::BIGINT FROM catalog_unmapped_labels GROUP BY ALL")
    assert dict(table) == dict(null_rows)
    from warehouse.queries import named_query

    assert sorted(_rows(warehouse, named_query("vocab", "unmapped_labels").sql)) == sorted(
        _rows(warehouse, "SELECT * FROM catalog_unmapped_labels")
    )


def test_unmapped_labels_count_studies_and_images_once_each():
    """An image-level label found on two images of one study is two rows, one study and two images."""
    from warehouse.queries import named_query

    con = duckdb.connect()
    con.execute("""CREATE TABLE labels AS SELECT * FROM (VALUES
        ('d', 's1', 'i1', NULL, 'odd sign', 1::TINYINT, 'reader'),
        ('d', 's1', 'i2', NULL, 'odd sign', 0::TINYINT, 'reader'),
        ('d', 's2', 'i3', NULL, 'odd sign', 1::TINYINT, 'reader'),
        ('d', 's2', 'i3', 'pneumothorax', 'Pneumothorax', 1::TINYINT, 'reader'),
        ('d', 's3', NULL, NULL, 'odd sign', 1::TINYINT, 'radiologist'))
        t(dataset, study_id, image_id, finding, raw_label, value, labeler)""")
    got = con.execute(named_query("vocab", "unmapped_labels").sql).fetchall()
    assert got == [("d", "reader", "odd sign", 3, 2, 2, 3), ("d", "radiologist", "odd sign", 1, 1, 1, 0)]


# NIH ChestX-ray14's fourteen findings and "No Finding", as the dataset's paper names them, and the finding each
# means here: a table of intent, written by hand, so a slip in finding_map.csv cannot move both sides at once
NIH_INTENT = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Effusion": "pleural_effusion",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Hernia": "hernia",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "No Finding": "no_finding",
    "Nodule": "nodule",
    "Pleural_Thickening": "pleural_thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}


def test_nih_labels_are_published_under_the_findings_they_name(public_warehouse):
    rows = public_warehouse.sql(
        "SELECT DISTINCT raw_label, finding FROM labels WHERE dataset = 'nih_cxr14' AND labeler = 'nih_nlp'"
    ).to_pylist()
    assert {r["raw_label"]: r["finding"] for r in rows} == NIH_INTENT


# --- the quality gate checks the vocabulary's set, not a copy ------------------------------------------
def test_the_labels_suite_takes_its_finding_set_from_findings_csv():
    from warehouse import quality

    check = next(e for e in quality.suite("labels")["expectations"] if e["meta"]["name"] == "finding_in_vocabulary")
    assert set(check["kwargs"]["value_set"]) == {r["finding"] for r in _csv_rows("findings.csv")}
    con = duckdb.connect()
    con.execute("""CREATE TABLE labels AS SELECT * FROM (VALUES
        ('d', 's1', NULL, 'cardiomegaly', 'Cardiomegaly', 1::TINYINT, 'chexpert', NULL, NULL::VARCHAR[]),
        ('d', 's1', NULL, NULL, 'unchanged', 1::TINYINT, 'padchest', NULL, NULL::VARCHAR[]),
        ('d', 's2', NULL, 'lung_hypoinflation', 'Lung/hypoinflation', 1::TINYINT, 'mesh', NULL, NULL::VARCHAR[]))
        t(dataset, study_id, image_id, finding, raw_label, value, labeler, method, locations)""")
    outcome = {o.name: o for o in quality.validate_table(con, "labels")}["finding_in_vocabulary"]
    assert not outcome.passed and outcome.unexpected_count == 1


# --- codes: a CUI is matched before the text ----------------------------------------------------------
def test_a_cui_column_is_matched_first():
    frame = pl.DataFrame(
        {
            "raw_label": ["Cardiomegalia", "air trapping", "air trapping", "unheard of"],
            "cui": ["C0018800", None, "C0231819", None],
        }
    )
    got = findings.with_findings(frame, "padchest", cui="cui")["finding"].to_list()
    assert got == ["cardiomegaly", "hyperinflation", "hyperinflation", None]
    cuis = {r["raw_label"]: r["cui"] for r in _csv_rows("finding_map.csv") if r["source"] == "padchest"}
    assert cuis["air trapping"] == "C0231819" and cuis["COPD signs"] == "C0024117"

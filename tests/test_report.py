"""`cxr report` and `cxr stats --demographics / --labels`, opened the way a person opens them.

One small warehouse (the first rows of the real NIH and CheXpert files, plus MIMIC-CXR's generated sample for
reports, races and three splits) is built once; the report is written through the CLI and opened in headless
Chromium. Every number in its HTML tables is compared with the derived tables, and NIH's and CheXpert's with
counts taken here from the raw CSV rows with the csv module.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from warehouse import Warehouse

from .browser import open_page
from .conftest import make_settings, nih_subset
from .test_cli import cxr

NIH_ROWS, CHEXPERT_ROWS = 2000, 1500
SHOTS = Path("/tmp/shots")
# raw label -> harmonized finding, as the datasets' documentation names them (a few, checked by hand)
NIH_FINDINGS = {
    "Effusion": "pleural_effusion",
    "Cardiomegaly": "cardiomegaly",
    "Atelectasis": "atelectasis",
    "Infiltration": "infiltration",
    "Pneumothorax": "pneumothorax",
}
CHEXPERT_FINDINGS = {
    "Pleural Effusion": "pleural_effusion",
    "Cardiomegaly": "cardiomegaly",
    "Atelectasis": "atelectasis",
    "Edema": "edema",
    "Consolidation": "consolidation",
}
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


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache_dir, raw_files):
    """The warehouse, the raw rows it was built from, and the dataset report written by `cxr report`."""
    root = tmp_path_factory.mktemp("report")
    nih = nih_subset(raw_files, root / "nih", NIH_ROWS)
    chexpert = root / "chexpert"
    chexpert.mkdir()
    with gzip.open(raw_files["chexpert_train"], "rt", newline="") as f:
        lines = [next(f) for _ in range(CHEXPERT_ROWS + 1)]
    (chexpert / "train.csv").write_text("".join(lines))
    wh = Warehouse(make_settings(root, cache_dir, nih_cxr14=nih, chexpert=chexpert))
    wh.ingest(["nih_cxr14", "chexpert", "mimic_cxr"], say=lambda m: None)
    with (nih / "Data_Entry_2017_v2020.csv").open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        nih_rows = [{"image": r[0], "labels": r[1].split("|"), "patient": r[3], "sex": r[5]} for r in reader]
    out = root / "out"
    proc = cxr(wh, "report", "--out", str(out))
    return {"wh": wh, "out": out, "nih": nih_rows, "chexpert": list(csv.DictReader(lines)), "stderr": proc.stderr}


@pytest.fixture(scope="module")
def page(built):
    """The report as the browser shows it: its tables, charts, errors, requests and a full-page screenshot."""
    return open_page(built["out"] / "report.html", SHOTS / "report-datasets.png")


def _number(text: str):
    text = text.strip()
    if text in ("–", ""):
        return None
    return float(text.replace(",", "")) if "." in text else int(text.replace(",", ""))


def _table(page, key: str) -> list[dict]:
    """A table's rows as {column: (value, coverage note)}."""
    return [
        {col: (_number(v) if col != "split" else v, note) for col, (v, note) in row.items()} for row in page.tables[key]
    ]


# --- the page as a browser opens it ---------------------------------------------------------------------
def test_report_opens_offline_without_errors(page, built):
    assert page.errors == [], page.errors
    assert page.blocked == [], f"the report tried to load {page.blocked}"
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    html = (built["out"] / "report.html").read_text()
    assert "<script" not in html and "<link" not in html, "the page needs nothing but itself"


def test_screenshot_is_not_blank(page):
    assert page.screenshot_stddev > 5, f"pixel standard deviation {page.screenshot_stddev:.1f}: a blank page?"
    assert page.height > 3000


def test_charts_are_drawn(page):
    for dataset in ("nih_cxr14", "chexpert", "mimic_cxr"):
        marks = {k: n for k, n in page.chart_marks.items() if k.startswith(dataset + ".")}
        assert {f"{dataset}.{c}" for c in ("age", "sex", "views", "prevalence", "cooccurrence")} <= set(marks), marks
        assert all(n > 0 for n in marks.values()), marks
    assert page.chart_marks["mimic_cxr.sections"] > 0


def test_sticky_table_of_contents_links_every_part(page):
    for dataset in ("nih_cxr14", "chexpert", "mimic_cxr"):
        for part in ("about", "splits", "demographics", "charts", "labels", "agreement"):
            assert f"#ds-{dataset}-{part}" in page.toc_links
    assert page.toc_position == "sticky"


# --- the numbers ----------------------------------------------------------------------------------------
def test_split_statistics_equal_split_stats(page, built):
    wh = built["wh"]
    for r in wh.sql("SELECT * FROM split_stats").to_pylist():
        shown = {row["split"][0]: row for row in _table(page, f"{r['dataset']}.split_statistics")}[r["split"]]
        for k in ("studies", "images", "patients", "reports"):
            assert shown[k][0] == r[k], (r["dataset"], r["split"], k)
        for s in ("indication", "comparison", "findings", "impression"):
            mean = r[f"mean_tokens_{s}"]
            assert shown[f"mean_tokens_{s}"][0] == (None if mean is None else round(mean, 2))
    # coverage beside the means: reports that have the section, out of the split's reports (plain SQL here)
    mimic = {row["split"][0]: row for row in _table(page, "mimic_cxr.split_statistics")}
    sections = wh.sql(
        "SELECT s.split, count(r.tokens_findings) AS have, count(*) AS reports FROM reports r "
        "JOIN studies s USING (dataset, study_id) WHERE r.dataset = 'mimic_cxr' GROUP BY 1"
    ).to_pylist()
    assert sections
    for r in sections:
        assert mimic[r["split"]]["mean_tokens_findings"][1] == f"{r['have']:,} of {r['reports']:,}"


def test_demographics_equal_the_derived_table(page, built):
    rows = built["wh"].sql("SELECT * FROM demographics").to_pylist()
    assert rows
    for r in rows:
        if r["bucket"] == "not_recorded" and all(
            x["bucket"] == "not_recorded"
            for x in rows
            if x["dataset"] == r["dataset"] and x["attribute"] == r["attribute"]
        ):
            assert f"{r['dataset']}.demographics_{r['attribute']}" not in page.tables
            continue  # shown as one line: not recorded by the source
        shown = {row["split"][0]: row for row in _table(page, f"{r['dataset']}.demographics_{r['attribute']}")}
        value, note = shown[r["split"]][r["bucket"]]
        count = r["n_studies"] if r["attribute"] == "age_bucket" else r["n_patients"]
        assert (value, note) == (round(r["percent"], 1), f"{count:,}"), r


def test_race_not_recorded_is_said_not_tabled(page, built):
    assert "nih_cxr14.demographics_race" not in page.tables
    assert "Race is not recorded by the source." in page.text
    # MIMIC-CXR records race: 'unknown' and 'not recorded' would be separate columns
    assert "mimic_cxr.demographics_race" in page.tables


def test_nih_numbers_equal_the_raw_csv(page, built):
    raw = built["nih"]
    stats = _table(page, "nih_cxr14.split_statistics")
    assert sum(r["images"][0] for r in stats) == len(raw)
    assert sum(r["patients"][0] for r in stats) == len({r["patient"] for r in raw})
    sex_of = {r["patient"]: r["sex"] for r in raw}
    sexes = Counter(sex_of.values())
    shown = _table(page, "nih_cxr14.demographics_sex")
    assert len(shown) == 1, "the subset has no split files: one split"
    for sex in ("M", "F"):
        assert shown[0][sex] == (round(100 * sexes[sex] / len(sex_of), 1), f"{sexes[sex]:,}")
    prevalence = {
        row["finding"][0]: row for row in page.tables["nih_cxr14.label_prevalence"] if row["labeler"][0] == "nih_nlp"
    }
    for raw_name, finding in NIH_FINDINGS.items():
        positive = sum(raw_name in r["labels"] for r in raw)
        cells = prevalence[finding]
        percent_col = next(k for k in cells if k.endswith("_positive_percent"))
        count_col = next(k for k in cells if k.endswith("_positive"))
        assert _number(cells[percent_col][0]) == round(100 * positive / len(raw), 1), finding
        assert cells[percent_col][1] == f"of {len(raw):,}"
        assert _number(cells[count_col][0]) == positive


def test_chexpert_numbers_equal_the_raw_csv(page, built):
    raw = built["chexpert"]
    stats = _table(page, "chexpert.split_statistics")
    study = ["/".join(r["Path"].split("/")[2:4]) for r in raw]
    assert [r["split"][0] for r in stats] == ["train"]
    assert stats[0]["images"][0] == len(raw)
    assert stats[0]["studies"][0] == len(set(study))
    assert stats[0]["patients"][0] == len({r["Path"].split("/")[2] for r in raw})
    ages = {}
    for s, r in zip(study, raw):
        ages[s] = int(r["Age"])
    buckets = Counter(
        "0-20" if a < 20 else "20-40" if a < 40 else "40-60" if a < 60 else "60-80" if a < 80 else "80+"
        for a in ages.values()
    )
    shown = _table(page, "chexpert.demographics_age_bucket")[0]
    for bucket, count in buckets.items():
        assert shown[bucket] == (round(100 * count / len(ages), 1), f"{count:,}"), bucket
    labelled = [r for r in raw if any(r[c] != "" for c in CHEXPERT_LABELS)]
    prevalence = {
        row["finding"][0]: row for row in page.tables["chexpert.label_prevalence"] if row["labeler"][0] == "chexpert"
    }
    for raw_name, finding in CHEXPERT_FINDINGS.items():
        positive = sum(r[raw_name] == "1.0" for r in raw)
        uncertain = sum(r[raw_name] == "-1.0" for r in raw)
        value, note = prevalence[finding]["train_positive_percent"]
        assert _number(value) == round(100 * positive / len(labelled), 1), finding
        assert note == f"of {len(labelled):,}" + (f" · {uncertain:,} unc." if uncertain else "")


def test_every_table_has_its_csv_and_markdown(page, built):
    out = built["out"]
    md = (out / "report.md").read_text()
    for key, rows in page.tables.items():
        with (out / "tables" / f"{key}.csv").open(newline="") as f:
            assert len(list(csv.DictReader(f))) == len(rows), key
    assert md.count("\n#### ") >= len(page.tables) - 1
    with (out / "tables" / "chexpert.split_statistics.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    assert int(row["images"]) == len(built["chexpert"])


def test_about_and_agreement(page, built):
    cite = built["wh"].sql("SELECT citation FROM catalog_datasets WHERE dataset = 'chexpert'").column(0)[0].as_py()
    assert cite and cite in page.text
    has_view = (
        built["wh"].sql("SELECT count(*) FROM duckdb_views() WHERE view_name = 'label_agreement'").column(0)[0].as_py()
    )
    if has_view:
        assert any(k.endswith(".label_agreement") for k in page.tables)
    else:
        assert page.text.count("Labeler agreement: not computed") == 3


# --- cohorts --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "chexpert_competition"
    cxr(built["wh"], "cohort", "run", "chexpert_competition", "--out", str(folder))
    # a Table 1 as a cohort run writes it (the report renders whatever columns it has)
    (folder / "table1.csv").write_text("variable,level,train,smd\nn,,1234,\nage_years,mean (SD),61.5 (17.2),0.031\n")
    out = folder.parent / "report"
    cxr(built["wh"], "report", "--cohort", str(folder), "--out", str(out))
    return folder, open_page(out / "report.html", SHOTS / "report-cohort.png")


def test_cohort_report_shows_the_attrition_flow(cohort):
    folder, seen = cohort
    assert seen.errors == [] and seen.blocked == []
    with (folder / "attrition.csv").open(newline="") as f:
        attrition = list(csv.DictReader(f))
    boxes = seen.flow
    assert [b["step"] for b in boxes if b["kind"] == "main"] == [str(i) for i in range(len(attrition))]
    for b in boxes:
        a = attrition[int(b["step"])]
        assert _number(b["big"]) == int(a["images" if b["kind"] == "main" else "units_removed"]), b
    shown = seen.tables["cohort.chexpert_competition.attrition"]
    assert [(_number(r["images"][0]), _number(r["studies"][0]), _number(r["patients"][0])) for r in shown] == [
        (int(a["images"]), int(a["studies"]), int(a["patients"])) for a in attrition
    ]


def test_cohort_split_balance_and_table1(cohort):
    folder, seen = cohort
    manifest = pq.read_table(folder / "manifest.parquet").to_pylist()
    provenance = json.loads((folder / "cohort.json").read_text())
    per_split = defaultdict(list)
    for r in manifest:
        per_split[r["split"]].append(r)
    balance = {r["split"][0]: r for r in seen.tables["cohort.chexpert_competition.split_balance"]}
    for split, rows in per_split.items():
        assert _number(balance[split]["images"][0]) == len(rows)
        female = sum(r["sex"] == "F" for r in rows)
        assert balance[split]["female_percent"] == [f"{100 * female / len(rows):.1f}", f"{female:,}"]
        for finding in provenance["findings"]:
            labelled = [r[finding] for r in rows if r[finding] is not None]
            if labelled:
                assert _number(balance[split][f"{finding}_positive_percent"][0]) == round(
                    100 * sum(v == 1 for v in labelled) / len(labelled), 1
                )
    assert [r["level"][0] for r in seen.tables["cohort.chexpert_competition.table1"]] == ["", "mean (SD)"]
    assert seen.tables["cohort.chexpert_competition.table1"][1]["train"][0] == "61.5 (17.2)"
    assert all(n > 0 for n in seen.chart_marks.values()) and len(seen.chart_marks) >= 3
    for dataset, citation in provenance["citations"].items():
        assert f"{dataset}: {citation['text']}" in seen.text
    for dataset, licence in provenance["licences"].items():
        assert f"{dataset}: {licence['licence']}" in seen.text
    assert seen.screenshot_stddev > 5


# --- terminal tables ------------------------------------------------------------------------------------
def test_stats_demographics_prints_table_2(built):
    out = cxr(built["wh"], "stats", "--demographics", "-d", "mimic_cxr").stdout
    rows = built["wh"].sql("SELECT * FROM demographics WHERE dataset = 'mimic_cxr'").to_pylist()
    for r in rows:
        count = r["n_studies"] if r["attribute"] == "age_bucket" else r["n_patients"]
        assert f"{r['percent']:.1f} ({count:,})" in out, r
    assert "mimic_cxr: Race (% of patients)" in out


def test_stats_labels_prints_the_prevalence(built):
    out = cxr(built["wh"], "stats", "--labels", "-d", "chexpert").stdout
    # recounted with plain SQL over the labels of the images, not through the report's query
    rows = (
        built["wh"]
        .sql("""
        WITH img AS (SELECT DISTINCT image_id, finding, value FROM image_labels
                     WHERE dataset = 'chexpert' AND labeler = 'chexpert' AND finding IS NOT NULL)
        SELECT finding, count(DISTINCT image_id) FILTER (WHERE value = 1) AS pos,
               (SELECT count(DISTINCT image_id) FROM img) AS base
        FROM img GROUP BY finding""")
        .to_pylist()
    )
    assert rows
    for r in rows:
        assert f"{100 * r['pos'] / r['base']:.1f} (of {r['base']:,}" in out, r


def test_report_refuses_a_dataset_not_ingested(built, tmp_path):
    proc = cxr(built["wh"], "report", "--out", str(tmp_path), "-d", "padchest", check=False)
    assert proc.returncode == 1 and "not ingested: padchest" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_labeler_agreement_is_rendered_when_the_catalog_has_it(built, tmp_path):
    """A catalog copy with a label_agreement table (as the derived table will be): its rows appear as written."""
    import shutil

    import duckdb

    catalog = tmp_path / "catalog.duckdb"
    shutil.copy(built["wh"].settings.catalog, catalog)
    con = duckdb.connect(str(catalog))
    con.execute("DROP VIEW IF EXISTS label_agreement")  # the real derived table, replaced by one planted row
    con.execute("""CREATE TABLE label_agreement AS SELECT * FROM (VALUES
        ('nih_cxr14', 'image', 'nih_nlp', 'radiologist', 'pneumothorax', 'kappa', 810, 3, 0.052, 0.061,
         0.7312, 0.70, 0.76, 0.7401, 0.71, 0.77, 0.7523, 0.72, 0.78, 4))
        t(dataset, unit, labeler_a, labeler_b, finding, statistic, n, n_readers, prevalence_a, prevalence_b, kappa,
          kappa_low, kappa_high, mcc, mcc_low, mcc_high, f1, f1_low, f1_high, n_excluded_uncertain)""")
    con.close()
    wh = Warehouse(
        make_settings(
            tmp_path,
            built["wh"].settings.cache,
            env={"CXR_WAREHOUSE": str(built["wh"].settings.warehouse), "CXR_CATALOG": str(catalog)},
        )
    )
    cxr(wh, "report", "--out", str(tmp_path / "out"), "-d", "nih_cxr14")
    with (tmp_path / "out" / "tables" / "nih_cxr14.label_agreement.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    assert (row["finding"], row["n"], row["kappa"], row["kappa coverage"]) == (
        "pneumothorax",
        "810",
        "0.7312",
        "0.70–0.76",
    )
    html = (tmp_path / "out" / "report.html").read_text()
    assert "0.731" in html and "not computed (the catalog has no label_agreement" not in html

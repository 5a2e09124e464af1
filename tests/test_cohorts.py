"""Cohorts (warehouse.cohorts, sql/cohorts/): every count a run reports is recounted here with plain SQL over
the catalog's tables, or from the raw CheXpert file, never through the cohort engine's own SQL."""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from warehouse import Warehouse
from warehouse.cohorts import Cohort, CohortError, list_cohorts, patient_split

from .conftest import make_settings
from .test_cli import cxr

CHEXPERT_FIVE = {"atelectasis": "Atelectasis", "cardiomegaly": "Cardiomegaly", "consolidation": "Consolidation",
                 "edema": "Edema", "pleural_effusion": "Pleural Effusion"}
CHEXPERT_ROWS = 1500


def _one(wh, sql, params=None):
    return wh.sql(sql, params).to_pylist()[0]


def _counts(wh, where_sql: str, from_sql: str) -> tuple[int, int, int]:
    """(images, studies, patients) of the images `from_sql` yields that pass `where_sql`."""
    row = _one(wh, f"SELECT count(*) AS i, count(DISTINCT dataset || '/' || study_id) AS s, "
                   f"count(DISTINCT dataset || '/' || patient_id) AS p FROM ({from_sql}) WHERE {where_sql}")
    return row["i"], row["s"], row["p"]


def _attrition(run) -> list[tuple]:
    return [(a["rule"], a["images"], a["studies"], a["patients"], a["removed_by_this_rule_alone"])
            for a in run.attrition]


@pytest.fixture(scope="module")
def mimic_warehouse(tmp_path_factory, cache_dir):
    """MIMIC-CXR and MIMIC-Ext-CXR-QBA on their default (generated) samples."""
    wh = Warehouse(make_settings(tmp_path_factory.mktemp("cohort-mimic"), cache_dir))
    wh.ingest(["mimic_cxr", "mimic_qba"], say=lambda m: None)
    return wh


@pytest.fixture(scope="module")
def chexpert_small(tmp_path_factory, cache_dir, raw_files):
    """CheXpert from the first rows of the real train.csv, and those rows as csv.DictReader gives them."""
    source = tmp_path_factory.mktemp("chexpert-source")
    with gzip.open(raw_files["chexpert_train"], "rt", newline="") as f:
        lines = [next(f) for _ in range(CHEXPERT_ROWS + 1)]
    (source / "train.csv").write_text("".join(lines))
    rows = list(csv.DictReader(lines))
    wh = Warehouse(make_settings(tmp_path_factory.mktemp("cohort-chexpert"), cache_dir, chexpert=source))
    wh.ingest(["chexpert"], say=lambda m: None)
    return wh, rows


# --- the example cohorts, recounted ---------------------------------------------------------------
def test_every_example_cohort_loads_and_is_documented():
    cohorts = {c.name: c for c in list_cohorts()}
    assert {"frontal_pneumothorax", "chexpert_competition", "qba_fine_tuning", "balanced_evaluation"} <= set(cohorts)
    for c in cohorts.values():
        assert c.description and c.rules and c.path.read_text().startswith("-- name:")


def test_frontal_pneumothorax_attrition_is_the_plain_sql_count(public_warehouse, tmp_path):
    wh = public_warehouse
    run = Cohort.load("frontal_pneumothorax").run(wh, out_dir=tmp_path)
    # per image of NIH and CheXpert: is there a pneumothorax label, and is one of them positive
    images = """SELECT i.dataset, i.image_id, i.study_id, i.patient_id, i.is_frontal,
                       l.image_id IS NOT NULL AS labelled, coalesce(l.positive, false) AS positive
                FROM images i LEFT JOIN (
                    -- the documented precedence: the radiologist's label wins over the NLP labelers'; within one
                    -- labeler a positive beats an uncertain beats a negative
                    SELECT dataset, image_id,
                           arg_min(v, list_position(['radiologist', 'chexpert', 'chexbert', 'negbio', 'nih_nlp'],
                                                    labeler)) = 2 AS positive
                    FROM (SELECT dataset, image_id, labeler,
                                 max(CASE value WHEN 1 THEN 2 WHEN -1 THEN 1 ELSE 0 END) AS v
                          FROM image_labels WHERE finding = 'pneumothorax' GROUP BY ALL)
                    GROUP BY ALL) l
                  ON l.dataset = i.dataset AND l.image_id = i.image_id"""
    steps = ["true", "labelled", "labelled AND is_frontal", "labelled AND is_frontal AND positive"]
    alone = [None, "NOT labelled AND is_frontal AND positive", "labelled AND NOT is_frontal AND positive",
             "labelled AND is_frontal AND NOT positive"]
    expected = []
    for rule, step, only in zip(["all", "labelled", "frontal", "positive"], steps, alone):
        removed_alone = _counts(wh, only, images)[0] if only else 0
        expected.append((rule, *_counts(wh, step, images), removed_alone))
    assert _attrition(run) == expected
    assert expected[-1][1] > 1000                       # real data: thousands of positive frontal images
    with (tmp_path / "attrition.csv").open() as f:
        written = [(r["rule"], int(r["images"]), int(r["studies"]), int(r["patients"]),
                    int(r["removed_by_this_rule_alone"])) for r in csv.DictReader(f)]
    assert written == expected
    manifest = pq.read_table(tmp_path / "manifest.parquet")
    assert manifest.num_rows == expected[-1][1] and set(manifest["pneumothorax"].to_pylist()) == {1}
    # every manifest row is an image of the catalog, with its study and patient
    con_rows = {(r["dataset"], r["image_id"]): (r["study_id"], r["patient_id"]) for r in
                wh.sql("SELECT dataset, image_id, study_id, patient_id FROM images").to_pylist()}
    for r in manifest.select(["dataset", "image_id", "study_id", "patient_id"]).to_pylist():
        assert con_rows[(r["dataset"], r["image_id"])] == (r["study_id"], r["patient_id"])


def test_chexpert_competition_attrition_is_the_plain_sql_count(chexpert_small, tmp_path):
    wh, _ = chexpert_small
    run = Cohort.load("chexpert_competition").run(wh, {"min_age": "40"}, tmp_path)
    five = ", ".join(f"'{f}'" for f in CHEXPERT_FIVE)
    images = f"""SELECT i.dataset, i.image_id, i.study_id, i.patient_id, i.is_frontal, s.age_years,
                        EXISTS (SELECT 1 FROM image_labels l WHERE l.image_id = i.image_id AND l.finding IN ({five}))
                          AS labelled
                 FROM images i JOIN studies s ON s.dataset = i.dataset AND s.study_id = i.study_id"""
    age = "coalesce(age_years >= 40, false)"
    steps = [("all", "true", None), ("frontal", "is_frontal", f"NOT is_frontal AND labelled AND {age}"),
             ("competition_label", "is_frontal AND labelled", f"is_frontal AND NOT labelled AND {age}"),
             ("age", f"is_frontal AND labelled AND {age}", f"is_frontal AND labelled AND NOT {age}")]
    expected = [(rule, *_counts(wh, step, images), _counts(wh, only, images)[0] if only else 0)
                for rule, step, only in steps]
    assert _attrition(run) == expected
    assert all(expected[i][1] > expected[i + 1][1] for i in range(3))     # each rule removes some images


@pytest.mark.parametrize("policy, uncertain", [("ones", 1), ("zeros", 0), ("ignore", None)])
def test_uncertainty_policies_recode_the_raw_chexpert_values(chexpert_small, tmp_path, policy, uncertain):
    wh, rows = chexpert_small
    run = Cohort.load("chexpert_competition").run(wh, out_dir=tmp_path, uncertain=policy, fmt="csv")
    assert run.provenance["uncertain"] == policy
    raw = {r["Path"].split("/", 1)[1]: r for r in rows}       # the manifest's path drops the release folder

    def recode(text: str):
        if text == "":
            return None
        value = int(float(text))
        return uncertain if value == -1 else value

    with (tmp_path / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == run.manifest.num_rows > 500
    seen_uncertain = 0
    for row in manifest:
        source = raw[row["path"]]
        assert source["Frontal/Lateral"] == "Frontal"
        for finding, column in CHEXPERT_FIVE.items():
            expected = recode(source[column])
            assert (int(row[finding]) if row[finding] != "" else None) == expected, (row["path"], finding)
            seen_uncertain += source[column] == "-1.0"
    assert seen_uncertain > 50


def test_qba_cohort_is_the_plain_sql_count_and_each_study_once(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    run = Cohort.load("qba_fine_tuning").run(wh, out_dir=tmp_path)
    # studies of MIMIC-CXR (QBA shares the ids): split, frontal images, fine-tuning questions
    studies = """SELECT 'mimic_cxr' AS dataset, s.study_id, s.patient_id, s.split,
                        (SELECT count(*) FROM images i WHERE i.dataset = 'mimic_cxr' AND i.study_id = s.study_id)
                          AS n_images,
                        EXISTS (SELECT 1 FROM images i WHERE i.dataset = 'mimic_cxr' AND i.study_id = s.study_id
                                AND i.is_frontal) AS frontal,
                        EXISTS (SELECT 1 FROM qa_questions q WHERE q.study_id = s.study_id AND q.fine_tuning) AS ft
                 FROM studies s WHERE s.dataset = 'mimic_cxr'
                   AND s.study_id IN (SELECT study_id FROM images WHERE dataset = 'mimic_cxr')"""

    def count(where):
        r = _one(wh, f"SELECT coalesce(sum(n_images), 0) AS i, count(*) AS s, count(DISTINCT patient_id) AS p "
                     f"FROM ({studies}) WHERE {where}")
        return r["i"], r["s"], r["p"]

    steps = [("all", "true", None), ("in_split", "split = 'train'", "split <> 'train' AND frontal AND ft"),
             ("frontal", "split = 'train' AND frontal", "split = 'train' AND NOT frontal AND ft"),
             ("fine_tuning", "split = 'train' AND frontal AND ft", "split = 'train' AND frontal AND NOT ft")]
    expected = [(rule, *count(step), count(only)[1] if only else 0) for rule, step, only in steps]
    assert _attrition(run) == expected and expected[-1][2] > 10
    manifest = run.manifest.to_pylist()
    assert len({r["study_id"] for r in manifest}) == len(manifest)
    assert {r["dataset"] for r in manifest} == {"mimic_cxr"}
    assert all(r["also_in"] == ["mimic_qba"] and r["split"] == "train" for r in manifest)
    catalog_images = {r["image_id"] for r in wh.sql("SELECT image_id FROM images").to_pylist()}
    assert all(set(r["image_ids"]) <= catalog_images for r in manifest)


def test_a_pooled_mimic_cxr_and_qba_cohort_counts_each_image_once(mimic_warehouse, tmp_path):
    both = _one(mimic_warehouse, "SELECT count(*) AS rows, count(DISTINCT image_id) AS images FROM images "
                                 "WHERE dataset IN ('mimic_cxr', 'mimic_qba')")
    assert both["rows"] == 2 * both["images"]            # each image is in both datasets' images table
    path = tmp_path / "pooled.sql"
    path.write_text("-- name: pooled\n-- description: every image\n-- unit: image\n-- rule: any\ntrue\n")
    run = Cohort.load(path).run(mimic_warehouse)
    ids = run.manifest["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == both["images"]
    assert run.attrition[0]["images"] == both["images"]
    assert set(run.manifest["dataset"].to_pylist()) == {"mimic_cxr"}
    assert all(a == ["mimic_qba"] for a in run.manifest["also_in"].to_pylist())
    # ...and plain SQL can say the same through the images' cross-dataset identity
    uids = _one(mimic_warehouse, "SELECT count(DISTINCT image_uid) AS n, count(*) FILTER (image_uid <> "
                                 "'mimic_cxr:' || image_id) AS foreign FROM images "
                                 "WHERE dataset IN ('mimic_cxr', 'mimic_qba')")
    assert uids == {"n": both["images"], "foreign": 0}
    flat = _one(mimic_warehouse, "SELECT count(DISTINCT image_uid) AS n, count(*) FILTER (image_uid <> "
                                 "'mimic_cxr:' || image_id) AS foreign FROM image_labels "
                                 "WHERE dataset IN ('mimic_cxr', 'mimic_qba')")
    assert flat["foreign"] == 0 and 0 < flat["n"] <= both["images"]


def test_balanced_evaluation_keeps_at_most_n_per_stratum(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    run = Cohort.load("balanced_evaluation").run(wh, {"per_stratum": "4", "seed": "3"}, tmp_path)
    eligible = _one(wh, """SELECT count(*) AS n FROM patients p WHERE p.dataset = 'mimic_cxr' AND p.sex IN ('F', 'M')
                           AND EXISTS (SELECT 1 FROM images i WHERE i.dataset = 'mimic_cxr'
                                       AND i.patient_id = p.patient_id AND i.is_frontal)""")["n"]
    assert run.attrition[4]["patients"] <= eligible
    assert run.manifest.num_rows == run.attrition[-1]["patients"] and run.manifest.num_rows > 0
    buckets: dict = {}
    for r in run.manifest.to_pylist():
        a = r["age_years"]
        bucket = "0-20" if a < 20 else "20-40" if a < 40 else "40-60" if a < 60 else "60-80" if a < 80 else "80+"
        buckets[(r["sex"], bucket)] = buckets.get((r["sex"], bucket), 0) + 1
    assert max(buckets.values()) <= 4 and all(sex in ("F", "M") for sex, _ in buckets)


# --- splits and leakage ---------------------------------------------------------------------------
def _straddling_cohort(wh, folder: Path) -> tuple[Path, str]:
    """A cohort whose split expression sends one image of a multi-image patient to test, the rest to train."""
    row = _one(wh, "SELECT patient_id, min(image_id) AS image_id FROM images WHERE dataset = 'mimic_cxr' "
                   "GROUP BY patient_id HAVING count(*) > 1 ORDER BY patient_id LIMIT 1")
    path = folder / "straddle.sql"
    path.write_text(f"-- name: straddle\n-- description: a planted leak\n-- unit: image\n"
                    f"-- split: CASE WHEN image_id = '{row['image_id']}' THEN 'test' ELSE 'train' END\n"
                    f"-- rule: mimic\ndataset = 'mimic_cxr'\n")
    return path, row["patient_id"]


def test_a_patient_in_two_splits_is_refused_by_name(mimic_warehouse, tmp_path):
    path, patient = _straddling_cohort(mimic_warehouse, tmp_path)
    with pytest.raises(CohortError, match=f"mimic_cxr:{patient} in test, train") as caught:
        Cohort.load(path).run(mimic_warehouse, out_dir=tmp_path / "out")
    assert "--allow-leakage" in str(caught.value) and not (tmp_path / "out").exists()
    run = Cohort.load(path).run(mimic_warehouse, allow_leakage=True)
    assert run.manifest.num_rows > 0


def test_patient_splits_follow_the_seeded_hash_and_never_leak(mimic_warehouse, tmp_path):
    path, _ = _straddling_cohort(mimic_warehouse, tmp_path)
    run = Cohort.load(path).run(mimic_warehouse, split="patient:0.8,0.1,0.1", seed=7)
    for r in run.manifest.to_pylist():
        digest = hashlib.sha256(f"7:{r['dataset']}:{r['patient_id']}".encode()).digest()
        x = int.from_bytes(digest[:8], "big") / 2 ** 64
        assert r["split"] == ("train" if x < 0.8 else "valid" if x < 0.9 else "test")
        assert r["split"] == patient_split(r["dataset"], r["patient_id"], 7, (0.8, 0.1, 0.1))
    assert set(run.manifest["split"].to_pylist()) == {"train", "valid", "test"}
    with pytest.raises(CohortError, match="patient:TRAIN,VALID,TEST"):
        Cohort.load(path).run(mimic_warehouse, split="patient:0.8,0.3")


# --- vocabulary -----------------------------------------------------------------------------------
def test_a_misspelt_finding_parameter_names_the_closest_findings():
    with pytest.raises(CohortError, match="'pleural_efusion' is not a valid finding; closest valid values: "
                                          "pleural_effusion"):
        Cohort.load("frontal_pneumothorax").resolve({"finding": "pleural_efusion"})


def test_a_view_outside_the_vocabulary_names_the_frontal_views(tmp_path):
    path = tmp_path / "view.sql"
    path.write_text("-- name: view\n-- description: one view\n-- unit: image\n"
                    "-- param: view VIEW_POSITION = 'PA'\n-- rule: view\nview_position = $view\n")
    with pytest.raises(CohortError, match="'frontal' is not a valid view_position; closest valid values: "
                                          "PA, AP, AP_SUPINE"):
        Cohort.load(path).resolve({"view": "frontal"})
    # an untyped parameter compared with the column, and a literal in a rule, are caught too
    path.write_text("-- name: view\n-- description: one view\n-- unit: image\n"
                    "-- param: view VARCHAR = 'frontal'\n-- rule: view\nview_position = $view\n")
    with pytest.raises(CohortError, match="closest valid values: PA, AP, AP_SUPINE"):
        Cohort.load(path)
    path.write_text("-- name: f\n-- description: d\n-- unit: image\n-- rule: f\nlabels['pleural_efusion'] = 1\n")
    with pytest.raises(CohortError, match="rule f: 'pleural_efusion' is not a valid finding"):
        Cohort.load(path)


def test_cxr_sql_warns_about_a_misspelt_finding_and_still_runs(public_warehouse):
    proc = cxr(public_warehouse, "sql", "SELECT count(*) AS n FROM labels WHERE finding IN ('pleural_efusion')",
               "--format", "csv")
    assert proc.stdout.splitlines() == ["n", "0"]
    assert "warning: 'pleural_efusion' is not a valid finding; closest valid values: pleural_effusion" in proc.stderr
    clean = cxr(public_warehouse, "sql", "SELECT count(*) FROM labels WHERE finding = 'pneumothorax'",
                "--format", "csv")
    assert "warning" not in clean.stderr


# --- provenance and the command line --------------------------------------------------------------
def test_cohort_json_holds_the_catalogs_delta_versions(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    Cohort.load("qba_fine_tuning").run(wh, out_dir=tmp_path)
    record = json.loads((tmp_path / "cohort.json").read_text())
    expected: dict = {}
    for r in wh.sql("SELECT table_name, dataset, delta_version FROM catalog_partitions").to_pylist():
        expected.setdefault(r["table_name"], {})[r["dataset"]] = r["delta_version"]
    assert record["delta_versions"] == expected and expected["images"].keys() == {"mimic_cxr", "mimic_qba"}
    datasets = {r["dataset"]: r for r in wh.sql("SELECT * FROM catalog_datasets").to_pylist()}
    assert record["datasets"] == ["mimic_cxr", "mimic_qba"]
    for d in record["datasets"]:
        assert record["source_fingerprints"][d] == datasets[d]["source_fingerprint"]
        assert record["citations"][d] == datasets[d]["citation"]
    assert record["sql"] == Cohort.load("qba_fine_tuning").path.read_text()
    assert record["parameters"] == {"split": "train"} and record["schema_version"] == "1"
    assert record["project_version"] and record["run_at"]


def test_cxr_cohort_run_writes_the_three_outputs(mimic_warehouse, tmp_path):
    images = tmp_path / "images"
    proc = cxr(mimic_warehouse, "cohort", "run", "frontal_pneumothorax", "--param", "finding=pleural_effusion",
               "--finding", "edema", "--out", str(tmp_path / "out"), "--format", "jsonl")
    assert "positive" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(r["absolute_path"] is None and "edema" in r and "pleural_effusion" in r for r in rows)
    assert {"attrition.csv", "cohort.json", "manifest.jsonl"} <= {p.name for p in (tmp_path / "out").iterdir()}
    # an image root per dataset gives absolute paths
    env = dict(os.environ, CXR_WAREHOUSE=mimic_warehouse.settings.warehouse,
               CXR_CATALOG=str(mimic_warehouse.settings.catalog), CXR_CACHE=str(mimic_warehouse.settings.cache),
               CXR_IMAGES_MIMIC_CXR=str(images))
    subprocess.run([sys.executable, "-m", "warehouse.cli", "cohort", "run", "qba_fine_tuning", "--out",
                    str(tmp_path / "abs")], env=env, check=True, capture_output=True, cwd=Path(__file__).parents[1])
    table = pq.read_table(tmp_path / "abs" / "manifest.parquet").to_pylist()
    assert all(a == f"{images}/{p}" for r in table for a, p in zip(r["absolute_paths"], r["paths"]))
    bad = cxr(mimic_warehouse, "cohort", "run", "frontal_pneumothorax", "--param", "finding=pleural_efusion",
              "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 1 and "closest valid values: pleural_effusion" in bad.stderr
    listed = cxr(mimic_warehouse, "cohort", "list").stdout
    assert "qba_fine_tuning" in listed and "balanced_evaluation" in listed


def test_image_roots_come_from_the_environment_and_cxr_toml(tmp_path):
    from warehouse.config import ConfigError, Settings

    (tmp_path / "cxr.toml").write_text('[images]\nchexpert = "imgs/chexpert"\n')
    s = Settings.load(env={"CXR_IMAGES_NIH_CXR14": "/data/nih"}, cwd=tmp_path)
    assert s.images == {"chexpert": str((tmp_path / "imgs/chexpert").resolve()), "nih_cxr14": "/data/nih"}
    assert s.image_root("chexpert") == s.images["chexpert"] and s.image_root("padchest") is None
    with pytest.raises(ConfigError, match="did you mean CXR_IMAGES_CHEXPERT"):
        Settings.load(env={"CXR_IMAGES_CHEXPRT": "/x"}, cwd=tmp_path)
    (tmp_path / "cxr.toml").write_text('[images]\nchexpret = "x"\n')
    with pytest.raises(ConfigError, match=r"\[images\] names no known dataset 'chexpret' \(did you mean chexpert"):
        Settings.load(env={}, cwd=tmp_path)


def test_unknown_parameters_and_bad_headers_are_errors(tmp_path):
    with pytest.raises(CohortError, match="has no parameter minage; its parameters: min_age"):
        Cohort.load("chexpert_competition").resolve({"minage": "3"})
    with pytest.raises(CohortError, match="did you mean frontal_pneumothorax"):
        Cohort.load("frontal_pneumothorx")
    path = tmp_path / "bad.sql"
    path.write_text("-- name: bad\n-- unit: exam\n-- rule: r\ntrue\n")
    with pytest.raises(CohortError, match="unit:` must be one of image, study, patient"):
        Cohort.load(path)
    path.write_text("-- name: bad\n-- unit: image\n-- param: n INTEGR = 1\n-- rule: r\ntrue\n")
    with pytest.raises(CohortError, match="unknown parameter type INTEGR"):
        Cohort.load(path)

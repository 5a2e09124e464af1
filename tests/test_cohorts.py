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
from warehouse.stats import DERIVED

from .conftest import make_settings
from .test_cli import cxr

CHEXPERT_FIVE = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "pleural_effusion": "Pleural Effusion",
}
CHEXPERT_ROWS = 1500


def _one(wh, sql, params=None):
    return wh.sql(sql, params).to_pylist()[0]


def _counts(wh, where_sql: str, from_sql: str) -> tuple[int, int, int]:
    """(images, studies, patients) of the images `from_sql` yields that pass `where_sql`."""
    row = _one(
        wh,
        f"SELECT count(*) AS i, count(DISTINCT dataset || '/' || study_id) AS s, "
        f"count(DISTINCT dataset || '/' || patient_id) AS p FROM ({from_sql}) WHERE {where_sql}",
    )
    return row["i"], row["s"], row["p"]


def _attrition(run) -> list[tuple]:
    return [
        (a["rule"], a["images"], a["studies"], a["patients"], a["removed_by_this_rule_alone"]) for a in run.attrition
    ]


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
    assert {
        "frontal_pneumothorax",
        "chexpert_competition",
        "qba_fine_tuning",
        "balanced_evaluation",
        "report_generation",
        "longitudinal_followup",
    } <= set(cohorts)
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
    alone = [
        None,
        "NOT labelled AND is_frontal AND positive",
        "labelled AND NOT is_frontal AND positive",
        "labelled AND is_frontal AND NOT positive",
    ]
    expected = []
    for rule, step, only in zip(["all", "labelled", "frontal", "positive"], steps, alone):
        removed_alone = _counts(wh, only, images)[0] if only else 0
        expected.append((rule, *_counts(wh, step, images), removed_alone))
    assert _attrition(run) == expected
    assert expected[-1][1] > 1000  # real data: thousands of positive frontal images
    with (tmp_path / "attrition.csv").open() as f:
        written = [
            (r["rule"], int(r["images"]), int(r["studies"]), int(r["patients"]), int(r["removed_by_this_rule_alone"]))
            for r in csv.DictReader(f)
        ]
    assert written == expected
    manifest = pq.read_table(tmp_path / "manifest.parquet")
    assert manifest.num_rows == expected[-1][1] and set(manifest["pneumothorax"].to_pylist()) == {1}
    # every manifest row is an image of the catalog, with its study and patient
    con_rows = {
        (r["dataset"], r["image_id"]): (r["study_id"], r["patient_id"])
        for r in wh.sql("SELECT dataset, image_id, study_id, patient_id FROM images").to_pylist()
    }
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
    steps = [
        ("all", "true", None),
        ("frontal", "is_frontal", f"NOT is_frontal AND labelled AND {age}"),
        ("competition_label", "is_frontal AND labelled", f"is_frontal AND NOT labelled AND {age}"),
        ("age", f"is_frontal AND labelled AND {age}", f"is_frontal AND labelled AND NOT {age}"),
    ]
    expected = [
        (rule, *_counts(wh, step, images), _counts(wh, only, images)[0] if only else 0) for rule, step, only in steps
    ]
    assert _attrition(run) == expected
    assert all(expected[i][1] > expected[i + 1][1] for i in range(3))  # each rule removes some images


@pytest.mark.parametrize("policy, uncertain", [("ones", 1), ("zeros", 0), ("ignore", None)])
def test_uncertainty_policies_recode_the_raw_chexpert_values(chexpert_small, tmp_path, policy, uncertain):
    wh, rows = chexpert_small
    run = Cohort.load("chexpert_competition").run(wh, out_dir=tmp_path, uncertain=policy, fmt="csv")
    assert run.provenance["uncertain"] == policy
    raw = {r["Path"].split("/", 1)[1]: r for r in rows}  # the manifest's path drops the release folder

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
        r = _one(
            wh,
            f"SELECT coalesce(sum(n_images), 0) AS i, count(*) AS s, count(DISTINCT patient_id) AS p "
            f"FROM ({studies}) WHERE {where}",
        )
        return r["i"], r["s"], r["p"]

    steps = [
        ("all", "true", None),
        ("in_split", "split = 'train'", "split <> 'train' AND frontal AND ft"),
        ("frontal", "split = 'train' AND frontal", "split = 'train' AND NOT frontal AND ft"),
        ("fine_tuning", "split = 'train' AND frontal AND ft", "split = 'train' AND frontal AND NOT ft"),
    ]
    expected = [(rule, *count(step), count(only)[1] if only else 0) for rule, step, only in steps]
    assert _attrition(run) == expected and expected[-1][2] > 10
    manifest = run.manifest.to_pylist()
    assert len({r["study_id"] for r in manifest}) == len(manifest)
    assert {r["dataset"] for r in manifest} == {"mimic_cxr"}
    assert all(r["also_in"] == ["mimic_qba"] and r["split"] == "train" for r in manifest)
    catalog_images = {r["image_id"] for r in wh.sql("SELECT image_id FROM images").to_pylist()}
    assert all(set(r["image_ids"]) <= catalog_images for r in manifest)


def test_a_pooled_mimic_cxr_and_qba_cohort_counts_each_image_once(mimic_warehouse, tmp_path):
    both = _one(
        mimic_warehouse,
        "SELECT count(*) AS rows, count(DISTINCT image_id) AS images FROM images "
        "WHERE dataset IN ('mimic_cxr', 'mimic_qba')",
    )
    assert both["rows"] == 2 * both["images"]  # each image is in both datasets' images table
    path = tmp_path / "pooled.sql"
    path.write_text("-- name: pooled\n-- description: every image\n-- unit: image\n-- rule: any\ntrue\n")
    run = Cohort.load(path).run(mimic_warehouse)
    ids = run.manifest["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == both["images"]
    assert run.attrition[0]["images"] == both["images"]
    assert set(run.manifest["dataset"].to_pylist()) == {"mimic_cxr"}
    assert all(a == ["mimic_qba"] for a in run.manifest["also_in"].to_pylist())
    # ...and plain SQL can say the same through the images' cross-dataset identity
    uids = _one(
        mimic_warehouse,
        "SELECT count(DISTINCT image_uid) AS n, count(*) FILTER (image_uid <> "
        "'mimic_cxr:' || image_id) AS foreign FROM images "
        "WHERE dataset IN ('mimic_cxr', 'mimic_qba')",
    )
    assert uids == {"n": both["images"], "foreign": 0}
    flat = _one(
        mimic_warehouse,
        "SELECT count(DISTINCT image_uid) AS n, count(*) FILTER (image_uid <> "
        "'mimic_cxr:' || image_id) AS foreign FROM image_labels "
        "WHERE dataset IN ('mimic_cxr', 'mimic_qba')",
    )
    assert flat["foreign"] == 0 and 0 < flat["n"] <= both["images"]


def test_balanced_evaluation_keeps_at_most_n_per_stratum(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    run = Cohort.load("balanced_evaluation").run(wh, {"per_stratum": "4", "seed": "3"}, tmp_path)
    eligible = _one(
        wh,
        """SELECT count(*) AS n FROM patients p WHERE p.dataset = 'mimic_cxr' AND p.sex IN ('F', 'M')
                           AND EXISTS (SELECT 1 FROM images i WHERE i.dataset = 'mimic_cxr'
                                       AND i.patient_id = p.patient_id AND i.is_frontal)""",
    )["n"]
    assert run.attrition[4]["patients"] <= eligible
    assert run.manifest.num_rows == run.attrition[-1]["patients"] and run.manifest.num_rows > 0
    buckets: dict = {}
    for r in run.manifest.to_pylist():
        a = r["age_years"]
        bucket = "0-20" if a < 20 else "20-40" if a < 40 else "40-60" if a < 60 else "60-80" if a < 80 else "80+"
        buckets[(r["sex"], bucket)] = buckets.get((r["sex"], bucket), 0) + 1
    assert max(buckets.values()) <= 4 and all(sex in ("F", "M") for sex, _ in buckets)


def test_a_cohort_nobody_passes_still_counts_every_rule(mimic_warehouse, tmp_path):
    path = tmp_path / "nobody.sql"
    path.write_text(
        "-- name: nobody\n-- description: no image is lateral and frontal\n-- unit: image\n"
        "-- rule: mimic\ndataset = 'mimic_cxr'\n-- rule: lateral\nNOT is_frontal\n-- rule: frontal\nis_frontal\n"
    )
    run = Cohort.load(path).run(mimic_warehouse, out_dir=tmp_path / "out")
    images = _one(mimic_warehouse, "SELECT count(*) AS n FROM images WHERE dataset = 'mimic_cxr'")["n"]
    lateral = _one(mimic_warehouse, "SELECT count(*) AS n FROM images WHERE dataset = 'mimic_cxr' AND NOT is_frontal")
    assert run.manifest.num_rows == 0 and pq.read_table(tmp_path / "out" / "manifest.parquet").num_rows == 0
    assert [a["images"] for a in run.attrition][1:] == [images, lateral["n"], 0]
    assert not (tmp_path / "out" / "table1.csv").exists(), "an empty cohort has no Table 1"


def test_a_patients_age_is_its_first_visits_and_reruns_are_identical(public_warehouse, tmp_path):
    """NIH studies have no dates, only a visit order: a patient's age is the age at its first visit (not any
    visit's), so the same cohort run twice gives the same manifest, by hash."""
    path = tmp_path / "nih_patients.sql"
    path.write_text(
        "-- name: nih_patients\n-- description: NIH patients\n-- unit: patient\n-- rule: nih\ndataset = 'nih_cxr14'\n"
    )
    first = Cohort.load(path).run(public_warehouse)
    again = Cohort.load(path).run(public_warehouse)
    assert first.provenance["manifest_sha256"] == again.provenance["manifest_sha256"]
    expected = {
        r["patient_id"]: r["age"]
        for r in public_warehouse.sql(
            "SELECT patient_id, arg_min(age_years, visit_order) AS age FROM studies "
            "WHERE dataset = 'nih_cxr14' GROUP BY patient_id"
        ).to_pylist()
    }
    got = {r["patient_id"]: r["age_years"] for r in first.manifest.select(["patient_id", "age_years"]).to_pylist()}
    assert len(got) == len(expected) > 1000
    assert got == expected


# --- splits and leakage ---------------------------------------------------------------------------
def _straddling_cohort(wh, folder: Path) -> tuple[Path, str]:
    """A cohort whose split expression sends one image of a multi-image patient to test, the rest to train."""
    row = _one(
        wh,
        "SELECT patient_id, min(image_id) AS image_id FROM images WHERE dataset = 'mimic_cxr' "
        "GROUP BY patient_id HAVING count(*) > 1 ORDER BY patient_id LIMIT 1",
    )
    path = folder / "straddle.sql"
    path.write_text(
        f"-- name: straddle\n-- description: a planted leak\n-- unit: image\n"
        f"-- split: CASE WHEN image_id = '{row['image_id']}' THEN 'test' ELSE 'train' END\n"
        f"-- rule: mimic\ndataset = 'mimic_cxr'\n"
    )
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
        x = int.from_bytes(digest[:8], "big") / 2**64
        assert r["split"] == ("train" if x < 0.8 else "valid" if x < 0.9 else "test")
        assert r["split"] == patient_split(r["dataset"], r["patient_id"], 7, (0.8, 0.1, 0.1))
    assert set(run.manifest["split"].to_pylist()) == {"train", "valid", "test"}
    with pytest.raises(CohortError, match="patient:TRAIN,VALID,TEST"):
        Cohort.load(path).run(mimic_warehouse, split="patient:0.8,0.3")


# --- vocabulary -----------------------------------------------------------------------------------
def test_a_misspelt_finding_parameter_names_the_closest_findings():
    with pytest.raises(
        CohortError, match="'pleural_efusion' is not a valid finding; closest valid values: pleural_effusion"
    ):
        Cohort.load("frontal_pneumothorax").resolve({"finding": "pleural_efusion"})


def test_a_view_outside_the_vocabulary_names_the_frontal_views(tmp_path):
    path = tmp_path / "view.sql"
    path.write_text(
        "-- name: view\n-- description: one view\n-- unit: image\n"
        "-- param: view VIEW_POSITION = 'PA'\n-- rule: view\nview_position = $view\n"
    )
    with pytest.raises(
        CohortError, match="'frontal' is not a valid view_position; closest valid values: PA, AP, AP_SUPINE"
    ):
        Cohort.load(path).resolve({"view": "frontal"})
    # an untyped parameter compared with the column, and a literal in a rule, are caught too
    path.write_text(
        "-- name: view\n-- description: one view\n-- unit: image\n"
        "-- param: view VARCHAR = 'frontal'\n-- rule: view\nview_position = $view\n"
    )
    with pytest.raises(CohortError, match="closest valid values: PA, AP, AP_SUPINE"):
        Cohort.load(path)
    path.write_text("-- name: f\n-- description: d\n-- unit: image\n-- rule: f\nlabels['pleural_efusion'] = 1\n")
    with pytest.raises(CohortError, match="rule f: 'pleural_efusion' is not a valid finding"):
        Cohort.load(path)


def test_every_comparison_shape_with_a_vocabulary_column_is_checked():
    """Each shape DuckDB parses: both sides of = and <>, IN and NOT IN, list literals, `$param`s (scalar and
    list), qualified columns, subqueries, labels[...] lookups, and SQL in DuckDB's newer lambda syntax."""
    from warehouse.cohorts import literal_problems

    def bad(sql, params=None):
        return sorted(p.split(" is not")[0] for p in literal_problems(sql, params))

    assert bad("SELECT 1 WHERE 'Q' = sex AND u.view_position <> 'frontl'") == ["'Q'", "'frontl'"]
    assert bad("SELECT * FROM labels WHERE finding NOT IN ('edema', 'edemma') OR labeler IN ('chexbrt')") == [
        "'chexbrt'",
        "'edemma'",
    ]
    assert bad("SELECT 1 WHERE split = $s AND sex IN $x", {"s": ["train", "tran"], "x": ["F", "Q"]}) == [
        "'Q'",
        "'tran'",
    ]
    assert bad("SELECT 1 WHERE split IN ['trian', 'test'] AND NOT (LABELS['edma'] = 1)") == ["'edma'", "'trian'"]
    assert bad("SELECT 1 WHERE labels[$f] = 1 AND labels['pneumothoraks'] = 0", {"f": "edma"}) == [
        "'edma'",
        "'pneumothoraks'",
    ]
    assert bad(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM images i WHERE i.dataset = 'nih') "
        "AND len(list_filter([1, 2], lambda v: v > 1)) = 1"
    ) == ["'nih'"]
    assert bad("SELECT 1 WHERE sex = 'F' AND finding = 'edema' AND dataset = 'nih_cxr14'") == []
    assert bad("SELEC 1 WHERE sex = 'Q'") == [] and bad("EXPLAIN SELECT 1 WHERE sex = 'Q'") == []
    # a tree deeper than Python's JSON reader goes is no check, never an error that stops the query
    assert bad("SELECT " + " + ".join(["1"] * 500) + " WHERE sex = 'Q'") == []


def test_a_run_maps_only_the_label_keys_its_rules_look_up():
    from warehouse.cohorts import Cohort

    def cohort(rule: str) -> Cohort:
        return Cohort.parse(
            "-- name: c\n-- description: d\n-- unit: image\n-- param: f FINDING = 'edema'\n-- rule: r\n" + rule
        )

    assert cohort("labels['atelectasis'] = 1 AND labels[$f] = 0").label_findings({"f": "edema"}, ["mass"]) == (
        "atelectasis",
        "edema",
        "mass",
    )
    assert cohort("cardinality(labels) > 2").label_findings({"f": "edema"}, []) is None
    assert cohort("labels[lower('EDEMA')] = 1").label_findings({"f": "edema"}, []) is None
    assert cohort("map_extract(labels, 'edema') = [1]").label_findings({"f": "edema"}, []) is None
    assert cohort("LABELS['edema'] = 1").label_findings({"f": "edema"}, []) == ("edema",)
    assert cohort("labels.edema = 1").label_findings({"f": "edema"}, []) is None
    assert cohort("COLUMNS('lab.*') IS NOT NULL").label_findings({"f": "edema"}, []) is None


def test_cxr_sql_warns_about_a_misspelt_finding_and_still_runs(public_warehouse):
    proc = cxr(
        public_warehouse,
        "sql",
        "SELECT count(*) AS n FROM labels WHERE finding IN ('pleural_efusion')",
        "--format",
        "csv",
    )
    assert proc.stdout.splitlines() == ["n", "0"]
    assert "warning: 'pleural_efusion' is not a valid finding; closest valid values: pleural_effusion" in proc.stderr
    clean = cxr(
        public_warehouse, "sql", "SELECT count(*) FROM labels WHERE finding = 'pneumothorax'", "--format", "csv"
    )
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
        assert record["citations"][d] == {"text": datasets[d]["citation"], "bibtex": datasets[d]["bibtex"]}
        assert record["licences"][d] == {
            "licence": datasets[d]["licence"],
            "licence_url": datasets[d]["licence_url"],
            "access": datasets[d]["access"],
            "licence_note": datasets[d]["licence_note"],
        }
    assert record["sql"] == Cohort.load("qba_fine_tuning").path.read_text()
    assert record["parameters"] == {"split": "train"} and record["schema_version"] == "1"
    assert record["project_version"] and record["run_at"]


def test_cxr_cohort_run_writes_the_three_outputs(mimic_warehouse, tmp_path):
    images = tmp_path / "images"
    proc = cxr(
        mimic_warehouse,
        "cohort",
        "run",
        "frontal_pneumothorax",
        "--param",
        "finding=pleural_effusion",
        "--finding",
        "edema",
        "--out",
        str(tmp_path / "out"),
        "--format",
        "jsonl",
    )
    assert "positive" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(r["absolute_path"] is None and "edema" in r and "pleural_effusion" in r for r in rows)
    assert {"attrition.csv", "cohort.json", "manifest.jsonl", "table1.csv", "table1.md", "croissant.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    # an image root per dataset gives absolute paths
    env = dict(
        os.environ,
        CXR_WAREHOUSE=mimic_warehouse.settings.warehouse,
        CXR_CATALOG=str(mimic_warehouse.settings.catalog),
        CXR_CACHE=str(mimic_warehouse.settings.cache),
        CXR_IMAGES_MIMIC_CXR=str(images),
    )
    subprocess.run(
        [sys.executable, "-m", "warehouse.cli", "cohort", "run", "qba_fine_tuning", "--out", str(tmp_path / "abs")],
        env=env,
        check=True,
        capture_output=True,
        cwd=Path(__file__).parents[1],
    )
    table = pq.read_table(tmp_path / "abs" / "manifest.parquet").to_pylist()
    assert all(a == f"{images}/{p}" for r in table for a, p in zip(r["absolute_paths"], r["paths"]))
    bad = cxr(
        mimic_warehouse,
        "cohort",
        "run",
        "frontal_pneumothorax",
        "--param",
        "finding=pleural_efusion",
        "--out",
        str(tmp_path / "bad"),
        check=False,
    )
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


# --- the report generation and follow-up cohorts, recounted --------------------------------------------
def _study_counts(wh, studies_sql: str, where: str) -> tuple[int, int, int]:
    r = _one(
        wh,
        f"SELECT coalesce(sum(n_images), 0) AS i, count(*) AS s, count(DISTINCT patient_id) AS p "
        f"FROM ({studies_sql}) WHERE {where}",
    )
    return r["i"], r["s"], r["p"]


def _expected(wh, studies_sql: str, rules: list[tuple[str, str]]) -> list[tuple]:
    """(rule, images, studies, patients, studies this rule alone removes), step by step."""
    out = [("all", *_study_counts(wh, studies_sql, "true"), 0)]
    for i, (name, _) in enumerate(rules):
        kept = " AND ".join(sql for _, sql in rules[: i + 1])
        alone = " AND ".join(f"NOT ({sql})" if j == i else sql for j, (_, sql) in enumerate(rules))
        out.append((name, *_study_counts(wh, studies_sql, kept), _study_counts(wh, studies_sql, alone)[1]))
    return out


def test_report_generation_attrition_is_the_plain_sql_count(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    run = Cohort.load("report_generation").run(wh, out_dir=tmp_path)
    studies = """SELECT i.study_id, any_value(i.patient_id) AS patient_id, count(*) AS n_images,
                        bool_or(i.is_frontal) AS frontal,
                        bool_or(r.study_id IS NOT NULL) AS reported,
                        bool_or(length(trim(r.findings)) > 0) AS has_findings,
                        bool_or(length(trim(r.impression)) > 0) AS has_impression
                 FROM images i LEFT JOIN reports r ON r.dataset = i.dataset AND r.study_id = i.study_id
                 WHERE i.dataset = 'mimic_cxr' GROUP BY i.study_id"""
    rules = [
        ("reported", "reported"),
        ("findings", "coalesce(has_findings, false)"),
        ("impression", "coalesce(has_impression, false)"),
        ("frontal", "frontal"),
    ]
    expected = _expected(wh, studies, rules)
    assert _attrition(run) == expected
    assert expected[-1][2] > 10 and expected[2][2] < expected[1][2]  # some reports lack findings
    sections = {
        r["study_id"]: r
        for r in wh.sql("SELECT study_id, findings, impression FROM reports WHERE dataset = 'mimic_cxr'").to_pylist()
    }
    for row in run.manifest.to_pylist():
        assert sections[row["study_id"]]["findings"].strip() and sections[row["study_id"]]["impression"].strip()


def test_longitudinal_followup_attrition_is_the_plain_sql_count(mimic_warehouse, tmp_path):
    wh = mimic_warehouse
    run = Cohort.load("longitudinal_followup").run(wh, {"max_days": "30"}, tmp_path)
    # the gap recomputed from study dates: the patient's previous dated study in MIMIC-CXR
    studies = """WITH dated AS (
                     SELECT study_id, patient_id, study_date,
                            lag(study_date) OVER (PARTITION BY patient_id ORDER BY study_date, study_id) AS prior
                     FROM studies WHERE dataset = 'mimic_cxr' AND study_date IS NOT NULL)
                 SELECT s.study_id, s.patient_id, count(i.image_id) AS n_images, bool_or(i.is_frontal) AS frontal,
                        any_value(d.study_date - d.prior) AS gap
                 FROM studies s JOIN images i ON i.dataset = s.dataset AND i.study_id = s.study_id
                 LEFT JOIN dated d ON d.study_id = s.study_id
                 WHERE s.dataset = 'mimic_cxr' GROUP BY s.study_id, s.patient_id"""
    rules = [
        ("follow_up", "gap IS NOT NULL"),
        ("within_max_days", "coalesce(gap <= 30, false)"),
        ("frontal", "frontal"),
    ]
    expected = _expected(wh, studies, rules)
    assert _attrition(run) == expected
    assert 0 < expected[2][2] < expected[1][2]


# --- Table 1, Croissant and the catalog's macros ---------------------------------------------------------
def _frontal_cohort(folder: Path) -> Path:
    path = folder / "frontal.sql"
    path.write_text(
        "-- name: frontal\n-- description: every frontal image\n-- unit: image\n"
        "-- findings: edema, pleural_effusion\n-- rule: frontal\nis_frontal\n"
    )
    return path


@pytest.fixture(scope="module")
def frontal_run(mimic_warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("frontal-run")
    return Cohort.load(_frontal_cohort(out)).run(mimic_warehouse, out_dir=out / "out"), out / "out"


def test_table1_counts_means_and_an_smd_are_the_hand_computed_ones(frontal_run):
    import statistics

    run, out = frontal_run
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    table = run.table1
    splits = sorted({r["split"] for r in rows})
    assert len(splits) >= 2 and table.groups == splits
    for split in ["Overall", *splits]:
        mine = [r for r in rows if split == "Overall" or r["split"] == split]
        assert table.cell("n", "", split) == str(len(mine))
        assert table.cell("patients", "", split) == str(len({(r["dataset"], r["patient_id"]) for r in mine}))
        ages = [r["age_years"] for r in mine if r["age_years"] is not None]
        mean_sd = f"{statistics.mean(ages):.1f} ({statistics.stdev(ages):.1f})"
        assert table.cell("Age, years, mean (SD)", "", split) == mean_sd
        q = statistics.quantiles(ages, n=4, method="inclusive")
        assert (
            table.cell("Age, years, median [Q1,Q3]", "", split)
            == f"{statistics.median(ages):.1f} [{q[0]:.1f},{q[2]:.1f}]"
        )
        females = sum(r["sex"] == "F" for r in mine)
        assert table.cell("Sex, n (%)", "F", split) == f"{females} ({100 * females / len(mine):.1f})"
        positive = sum(r["edema"] == 1 for r in mine)
        assert table.cell("edema, n (%)", "positive", split) == f"{positive} ({100 * positive / len(mine):.1f})"
        unstated = sum(r["edema"] is None for r in mine)
        assert table.cell("edema, n (%)", "not stated", split) == f"{unstated} ({100 * unstated / len(mine):.1f})"
    missing = sum(r["age_years"] is None for r in rows)
    assert table.cell("Age, years, mean (SD)", "", "Missing") == str(missing)
    # Cohen's d of age between train and test with the pooled SD (sample variances), as the textbook has it
    a = [r["age_years"] for r in rows if r["split"] == "test" and r["age_years"] is not None]
    b = [r["age_years"] for r in rows if r["split"] == "train" and r["age_years"] is not None]
    d = (statistics.mean(b) - statistics.mean(a)) / ((statistics.variance(a) + statistics.variance(b)) / 2) ** 0.5
    assert float(table.cell("Age, years, mean (SD)", "", "SMD (test,train)")) == pytest.approx(d, abs=1e-3)
    with (out / "table1.csv").open(newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == table.header and written[1:] == table.rows, "one header row, then the rows"
    assert (out / "table1.md").read_text().startswith("# Table 1: frontal")


def _tableone_of(manifest_rows: list[dict], findings: list[str]):
    """tableone's Table 1 of the same units, from a pandas frame built here from the manifest rows."""
    import warnings

    import pandas as pd
    from tableone import TableOne

    words = {1: "positive", 0: "negative", -1: "uncertain"}
    frame = pd.DataFrame(
        {
            "split": [r["split"] for r in manifest_rows],
            "Age, years": pd.array([r["age_years"] for r in manifest_rows], dtype="Float64").astype(float),
            "Sex": [r["sex"] for r in manifest_rows],
            "View": [r["view_position"] for r in manifest_rows],
            **{f: [words.get(r[f], "not stated") for r in manifest_rows] for f in findings},
        }
    )
    categorical = ["Sex", "View", *findings]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = TableOne(
            frame,
            columns=["Age, years", *categorical],
            categorical=categorical,
            groupby="split",
            smd=True,
            overall=True,
            missing=False,
            pval=False,
            decimals=1,
            order={c: sorted(frame[c].unique(), key=lambda v: (v == "not stated", v)) for c in categorical},
        )
    return table.tableone


def test_table1_equals_tableone_on_the_same_units(frontal_run):
    """Every count, percentage, mean (SD) and SMD that tableone computes is the cohort's Table 1 value."""
    run, out = frontal_run
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    theirs = _tableone_of(rows, ["edema", "pleural_effusion"])
    ours = run.table1
    compared = 0
    for (variable, level), values in theirs.iterrows():
        for column, value in values.items():
            name = column[1] if isinstance(column, tuple) else column
            if variable == "n" or str(value) in ("", "nan"):
                continue
            if variable == "Age, years, mean (SD)":
                mine = ours.cell("Age, years, mean (SD)", "", name)
            else:
                mine = ours.cell(variable, level, name)
            if name.startswith("SMD"):
                if mine == "":
                    continue  # tableone prints an SMD where one split's covariance is singular; see warehouse.table1
                assert float(mine) == pytest.approx(float(value), abs=1e-3), (variable, level, name)
            else:
                assert mine == str(value), (variable, level, name)
            compared += 1
    assert compared > 40


def test_a_cohort_maps_only_the_labels_its_rules_read_and_gets_the_same_manifest(mimic_warehouse):
    """A run limits each unit's labels map to the findings its rules and pivots name; the manifest and the
    attrition are the ones the full map gives (rules that use `labels` otherwise keep the full map)."""
    from warehouse.cohorts import _split_units, _used

    cohort = Cohort.load("frontal_pneumothorax")
    values = cohort.resolve({"finding": "pleural_effusion"})
    assert cohort.label_findings(values, ["edema"]) == ("edema", "pleural_effusion")
    assert Cohort.load("chexpert_competition").label_findings({}, []) is None, "map_keys(labels) needs every label"
    results = []
    con = mimic_warehouse.connect()
    try:
        for restrict in (cohort.label_findings(values, ["edema"]), None):
            sql = cohort.run_sql(["edema"], "ignore", {}, ("chexpert_plus", "mimic_qba"), restrict)
            results.append(_split_units(mimic_warehouse.run(con, sql, _used(sql, values)).to_arrow_table()))
    finally:
        con.close()
    (counts_a, manifest_a), (counts_b, manifest_b) = results
    assert manifest_a.num_rows > 0 and manifest_a.equals(manifest_b) and counts_a == counts_b


@pytest.mark.parametrize("unit", ["image", "study", "patient"])
def test_the_catalogs_image_units_are_the_fold_over_the_tables(mimic_warehouse, unit):
    """An unscoped cohort reads the image units the catalog built at its last rebuild (cohort_images); the
    base relation over them is, row for row, the one folded afresh from images, studies, patients and
    labels. MIMIC-CXR and QBA share images, studies and patients, so the fold has work to do here."""
    from warehouse.cohorts import base_sql

    key = {"image": "image_id", "study": "study_id", "patient": "patient_id"}[unit]
    order = f" ORDER BY dataset, {key}"
    stored = mimic_warehouse.sql(base_sql(unit) + order)
    folded = mimic_warehouse.sql(base_sql(unit, folded=False) + order)
    assert stored.num_rows > 0 and stored.equals(folded)
    both = mimic_warehouse.sql(
        "SELECT count(*) AS n FROM (SELECT image_id FROM images WHERE dataset = 'mimic_cxr' "
        "UNION SELECT image_id FROM images WHERE dataset = 'mimic_qba')"
    ).to_pylist()[0]["n"]
    assert mimic_warehouse.sql("SELECT count(*) AS n FROM cohort_images").to_pylist()[0]["n"] == both


def test_croissant_validates_and_reads_back_as_the_manifest(frontal_run, mimic_warehouse):
    import mlcroissant as mlc

    run, out = frontal_run
    document = json.loads((out / "croissant.json").read_text())
    assert document["distribution"][0]["sha256"] == hashlib.sha256((out / "manifest.parquet").read_bytes()).hexdigest()
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    issues = dataset.metadata.ctx.issues
    assert not issues.errors and not issues.warnings, issues.report()

    def plain(v):
        return v.decode() if isinstance(v, bytes) else [plain(x) for x in v] if isinstance(v, list) else v

    records = [{k.split("/", 1)[1]: plain(v) for k, v in r.items()} for r in dataset.records("manifest")]
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(manifest) > 100 and records == manifest
    catalog = {r["dataset"]: r for r in mimic_warehouse.sql("SELECT * FROM catalog_datasets").to_pylist()}
    assert document["citeAs"] == "\n".join(catalog[d]["bibtex"] for d in run.provenance["datasets"])
    assert document["license"] == [catalog[d]["licence_url"] for d in run.provenance["datasets"]]


def test_every_dataset_declares_its_licence_access_and_bibtex(mimic_warehouse):
    from warehouse.sources import DATASETS, dataset_info

    rows = {r["dataset"]: r for r in mimic_warehouse.sql("SELECT * FROM catalog_datasets").to_pylist()}
    assert set(rows) == set(DATASETS)
    for d, r in rows.items():
        info = dataset_info(d)
        assert (r["licence"], r["licence_url"], r["access"]) == (info.licence, info.licence_url, info.access)
        assert r["access"] in ("open", "registration", "credentialed")
        assert r["bibtex"].startswith("@") and r["bibtex"].count("{") == r["bibtex"].count("}")
        assert r["licence_note"], d  # what is known, above all where the licence is unknown
        assert (r["licence"] == "unknown") == (r["licence_url"] is None), d
    assert rows["mimic_qba"]["licence"] == "PhysioNet Credentialed Health Data License 1.5.0"


def test_named_queries_are_table_macros_in_cxr_sql(chexpert_small):
    wh, _ = chexpert_small
    five = ", ".join(f"'{f}'" for f in CHEXPERT_FIVE)
    expected = _one(
        wh,
        f"""SELECT count(*) AS n FROM images i JOIN studies s ON s.dataset = i.dataset
                           AND s.study_id = i.study_id WHERE i.is_frontal AND s.age_years >= 40 AND EXISTS (
                           SELECT 1 FROM image_labels l WHERE l.image_id = i.image_id AND l.finding IN ({five}))""",
    )["n"]
    proc = cxr(wh, "sql", "SELECT count(*) AS n FROM chexpert_competition(min_age := 40)", "--format", "csv")
    assert proc.stdout.splitlines() == ["n", str(expected)] and expected > 100
    queries = {q["query"]: q for q in wh.sql("SELECT query, kind, parameters FROM catalog_queries").to_pylist()}
    assert {c.name for c in list_cohorts()} | set(DERIVED.values()) == set(queries)
    assert [p["name"] for p in queries["chexpert_competition"]["parameters"]] == ["min_age"]
    # a parameter named like a column it is compared with is called only_<name>
    stats = _one(
        wh, "SELECT count(*) AS n, count(DISTINCT dataset) AS datasets FROM demographics(only_dataset := 'chexpert')"
    )
    assert stats["n"] > 0 and stats["datasets"] == 1

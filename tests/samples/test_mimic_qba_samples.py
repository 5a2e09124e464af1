"""Tests for the MIMIC-Ext-CXR-QBA sample generator: format, consistency, truth and exports."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from warehouse.samples import mimic_qba
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.samples.mimic_qba import GRADES, LEVEL_COLUMNS, LEVEL_INDEX, LEVELS, write_samples

SMALL = dict(patients=5, seed=3, questions_per_study=20)

QUESTION_KEYS = [
    "question_id",
    "question_type",
    "question_strategy",
    "variables",
    "obs_ids",
    "contains_report_answers",
    "contains_template_answers",
    "extraction_quality",
    "question_img_localization_quality",
    "question",
    "answers",
    "question_quality",
]
ANSWER_KEYS = [
    "answer_id",
    "answer_type",
    "answer_level",
    "text",
    "name_tag",
    "laterality",
    "regions",
    "obs_entities",
    "obs_entities_parents",
    "obs_categories",
    "obs_subcategories",
    "certainty",
    "positiveness",
    "modifiers",
    "localization",
    "sub_answers",
    "from_report",
    "extraction_quality",
    "answer_quality",
]
LOCALIZATION_KEYS = [
    "image_id",
    "localization_reference_ids",
    "bboxes",
    "instance_mask_ids",
    "missing_localization",
    "is_fallback",
    "localization_quality",
]
SCENE_GRAPH_KEYS = [
    "patient_id",
    "study_id",
    "sentences",
    "top_level_obs_ids",
    "observations",
    "indication",
    "regions",
    "located_at_relations",
    "obs_relations",
    "obs_sent_relations",
    "region_region_relations",
    "study_quality",
    "study_img_localization_quality",
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("qba")
    return out, write_samples(out, **SMALL)


def _json_members(archive: Path, suffix: str) -> dict[str, dict]:
    with zipfile.ZipFile(archive) as zf:
        return {name: json.loads(zf.read(name)) for name in zf.namelist() if name.endswith(suffix)}


def _qa_docs(root: Path) -> list[dict]:
    return list(_json_members(root / "qa.zip", ".qa.json").values())


def _flatten(answers: list[dict], depth: int = 0):
    for answer in answers:
        yield answer, depth
        yield from _flatten(answer["sub_answers"], depth + 1)


def _level(root: Path, level: str, rel: str = "metadata") -> pd.DataFrame:
    return pd.read_parquet(root / rel / f"{level}_metadata.parquet").reset_index()


def _rating_codes(root: Path) -> dict[int, str]:
    with open(root / "quality_mappings.csv", newline="") as handle:
        return {int(r["code"]): r["label"] for r in csv.DictReader(handle) if r["field"] == "rating"}


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(sample, tmp_path):
    root, _ = sample
    write_samples(tmp_path, **SMALL)
    first, second = _all_files(root), _all_files(tmp_path)
    assert sorted(first) == sorted(second)
    assert any(name.endswith(".parquet") for name in first) and any(name.endswith(".zip") for name in first)
    for name in first:
        assert first[name] == second[name], name


def test_layout_and_member_names(sample):
    root, _ = sample
    for level in LEVELS:
        assert (root / "metadata" / f"{level}_metadata.parquet").is_file()
        assert (root / "metadata" / f"{level}_metadata.csv.gz").is_file()
    assert (root / "metadata" / "dataset_info.json").is_file()
    with zipfile.ZipFile(root / "qa.zip") as zf:
        infos = zf.infolist()
    assert infos and all(i.filename.startswith("qa/p1") and i.filename.endswith(".qa.json") for i in infos)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    name = infos[0].filename  # qa/p1x/p1xxxxxxx/sxxxxxxxx.qa.json
    _, p1x, patient, study = name.split("/")
    assert patient.startswith(p1x) and len(p1x) == 3 and len(patient) == 9 and study.startswith("s")
    with zipfile.ZipFile(root / "scene_data.zip") as zf:
        names = zf.namelist()
    assert {n.rsplit(".", 2)[-2] for n in names} == {"scene_graph", "metadata"}
    assert all(n.startswith("scene_data/p1") for n in names)


def test_member_prefix_can_be_dropped(tmp_path):
    write_samples(tmp_path, patients=2, seed=1, questions_per_study=5, exports=False, member_prefix=False)
    with zipfile.ZipFile(tmp_path / "qa.zip") as zf:
        assert all(n.startswith("p1") for n in zf.namelist())
    assert not (tmp_path / "exports").exists()


def test_qa_json_has_documented_shape(sample):
    root, _ = sample
    images = _level(root, "image").groupby("study_id")["image_id"].apply(set).to_dict()
    docs = _qa_docs(root)
    assert docs
    for doc in docs:
        assert list(doc) == ["patient_id", "study_id", "questions"]
        for question in doc["questions"]:
            assert list(question) == QUESTION_KEYS
            assert question["question_id"].rsplit("_", 1)[0].endswith(question["question_type"])
            assert set(question["question_img_localization_quality"]) == images[doc["study_id"]]
            assert any(a["answer_type"] == "main_answer" for a in question["answers"])
            flat = list(_flatten(question["answers"]))
            assert sorted(a["answer_id"] for a, _ in flat) == list(range(len(flat)))
            for answer, depth in flat:
                assert list(answer) == ANSWER_KEYS
                assert answer["answer_level"] == depth
                assert answer["answer_type"] in ("main_answer", "details", "related_information")
                assert all(isinstance(m, list) and len(m) == 2 for m in answer["modifiers"])
                assert set(answer["localization"]) == images[doc["study_id"]]
                for image_id, loc in answer["localization"].items():
                    assert list(loc) == LOCALIZATION_KEYS and loc["image_id"] == image_id
                    assert all(len(box) == 4 and box[0] < box[2] and box[1] < box[3] for box in loc["bboxes"])


def test_scene_graphs_have_documented_shape(sample):
    root, _ = sample
    graphs = _json_members(root / "scene_data.zip", ".scene_graph.json")
    assert graphs
    for graph in graphs.values():
        assert list(graph) == SCENE_GRAPH_KEYS
        for obs_id in graph["top_level_obs_ids"]:
            assert graph["observations"][obs_id]["positiveness"] in ("pos", "neg")
        for relation in graph["obs_relations"]:
            assert relation["child_observation_id"].startswith(relation["parent_observation_id"] + ".")
        if graph["indication"] is not None:
            assert graph["indication"]["answer_for_indication"]["obs_id"] == "OIND"


def test_positive_observation_answers_its_finding_question(sample):
    root, _ = sample
    graphs = {g["study_id"]: g for g in _json_members(root / "scene_data.zip", ".scene_graph.json").values()}
    checked = 0
    for doc in _qa_docs(root):
        graph = graphs[doc["study_id"]]
        positive = {
            e
            for o in graph["observations"].values()
            if o["child_level"] == 0 and o["positiveness"] == "pos"
            for e in o["obs_entities"]
        }
        for question in doc["questions"]:
            if question["question_type"] == "has_finding":
                finding = question["variables"]["finding"]
                main = question["answers"][0]
                assert main["text"].startswith("Yes" if finding in positive else "No"), (finding, main["text"])
                checked += 1
    assert checked


def test_question_metadata_matches_qa_zip(sample):
    root, _ = sample
    from_json = {(d["patient_id"], d["study_id"], q["question_id"]): q for d in _qa_docs(root) for q in d["questions"]}
    rows = _level(root, "question")
    keys = list(zip(rows.patient_id, rows.study_id, rows.question_id))
    assert len(keys) == len(set(keys)) and set(keys) == set(from_json)
    for row in rows.to_dict("records"):
        q = from_json[(row["patient_id"], row["study_id"], row["question_id"])]
        assert row["question.question_type"] == q["question_type"]
        assert row["question.question_strategy"] == q["question_strategy"]
        assert row["question.contains_report_answers"] == q["contains_report_answers"]
        assert row["question.num_answers"] == len(list(_flatten(q["answers"])))
        assert row["question.quality.rating"] == q["question_quality"]["rating"]


def test_answer_metadata_equals_flattened_sub_answers(sample):
    root, _ = sample
    expected = {}
    expected_images = {}
    for doc in _qa_docs(root):
        for q in doc["questions"]:
            for a, _ in _flatten(q["answers"]):
                key = (doc["patient_id"], doc["study_id"], q["question_id"], a["answer_id"])
                expected[key] = (a["answer_type"], a["answer_level"], a["from_report"], a["answer_quality"]["rating"])
                for image_id, loc in a["localization"].items():
                    expected_images[key + (image_id,)] = (bool(loc["bboxes"]), loc["localization_quality"])
    answers = _level(root, "answer")
    got = {
        (r[0], r[1], r[2], r[3]): (r[4], r[5], r[6], r[7])
        for r in answers[
            [
                "patient_id",
                "study_id",
                "question_id",
                "answer_id",
                "answer.answer_type",
                "answer.answer_level",
                "answer.from_report",
                "answer.quality.rating",
            ]
        ].itertuples(index=False)
    }
    assert got == expected
    images = _level(root, "answer_image")
    got_images = {
        tuple(r[:5]): (r[5], r[6])
        for r in images[
            [
                "patient_id",
                "study_id",
                "question_id",
                "answer_id",
                "image_id",
                "answer_img.has_bboxes",
                "answer_img.quality.localization_quality",
            ]
        ].itertuples(index=False)
    }
    assert got_images == expected_images


@pytest.mark.parametrize("level", LEVELS)
def test_parquet_keeps_index_and_csv_has_same_content(sample, level):
    root, _ = sample
    frame = pd.read_parquet(root / "metadata" / f"{level}_metadata.parquet")
    assert list(frame.index.names) == list(LEVEL_INDEX[level])
    assert list(frame.columns) == [name for name, _ in LEVEL_COLUMNS[level]]
    with gzip.open(root / "metadata" / f"{level}_metadata.csv.gz", "rt") as handle:
        text = handle.read()
    header = text.split("\n", 1)[0].split(",")
    assert header == list(LEVEL_INDEX[level]) + list(frame.columns)
    from_csv = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    flat = frame.reset_index()
    assert len(from_csv) == len(flat) > 0
    for column in flat.columns:
        if str(flat[column].dtype).startswith("timedelta"):
            parsed = [pd.NaT if v == "" else pd.Timedelta(v) for v in from_csv[column]]
            assert [str(v) for v in parsed] == [str(v) for v in flat[column]], column
        else:
            assert from_csv[column].tolist() == flat[column].astype(str).tolist(), column


def test_question_grade_is_min_of_scene_graph_and_answers(sample):
    root, _ = sample
    labels = _rating_codes(root)
    assert [labels[c] for c in sorted(labels)] == ["UNRATED", *GRADES]  # larger code = better grade
    study_rating = _level(root, "study").set_index("study_id")["study.quality.rating"].to_dict()
    seen = Counter()
    for doc in _qa_docs(root):
        for q in doc["questions"]:
            answer_ratings = [a["answer_quality"]["rating"] for a, _ in _flatten(q["answers"])]
            expected = min([study_rating[doc["study_id"]], *answer_ratings])
            assert q["question_quality"]["rating"] == expected
            assert q["extraction_quality"]["rating"] == study_rating[doc["study_id"]]
            seen[labels[expected]] += 1
    assert seen["UNRATED"] and seen["B"]


def test_truth_matches_recount(sample):
    root, truth = sample
    cohort = plan_mimic_cohort(SMALL["patients"], SMALL["seed"])
    split_of = {f"s{s.study_id}": s.split for s in cohort}
    frontal_studies = {f"s{s.study_id}" for s in cohort if any(i.view_position in ("PA", "AP") for i in s.images)}
    labels = _rating_codes(root)
    docs = _qa_docs(root)
    questions = [(d, q) for d in docs for q in d["questions"]]
    answers = [(a, depth) for _, q in questions for a, depth in _flatten(q["answers"])]
    graphs = _json_members(root / "scene_data.zip", ".scene_graph.json").values()
    observations = [o for g in graphs for o in g["observations"].values()]

    assert truth["studies"] == len(cohort) == len(docs)
    assert truth["patients"] == SMALL["patients"]
    assert truth["images"] == sum(len(s.images) for s in cohort)
    assert truth["questions"]["total"] == len(questions)
    assert truth["questions"]["by_split"] == {
        s: sum(split_of[d["study_id"]] == s for d, _ in questions) for s in ("train", "validate", "test")
    }
    assert truth["questions"]["by_type"] == dict(Counter(q["question_id"][:-4] for _, q in questions))
    by_grade = Counter(labels[q["question_quality"]["rating"]] for _, q in questions)
    assert truth["questions"]["by_grade"] == {g: by_grade.get(g, 0) for g in ("A++", "A+", "A", "B", "C", "D")} | {
        "unrated": by_grade.get("UNRATED", 0)
    }
    assert truth["sub_answers"]["total"] == len(answers)
    assert truth["sub_answers"]["by_level"] == {str(k): v for k, v in sorted(Counter(d for _, d in answers).items())}
    assert truth["sub_answers"]["by_type"] == {
        t: sum(a["answer_type"] == t for a, _ in answers) for t in ("main_answer", "details", "related_information")
    }
    assert truth["answer_boxes"] == sum(len(loc["bboxes"]) for a, _ in answers for loc in a["localization"].values())
    for key, minimum in (("fine_tuning_questions", 3), ("pre_training_questions", 2)):
        assert truth[key] == sum(
            q["question_quality"]["rating"] >= minimum and d["study_id"] in frontal_studies for d, q in questions
        )
    assert truth["observations"]["total"] == len(observations)
    assert truth["observations"]["by_positiveness"] == dict(Counter(o["positiveness"] for o in observations))
    assert truth["metadata_rows"] == {level: len(_level(root, level)) for level in LEVELS}
    json.dumps(truth)


def test_exports_hold_only_their_grades_and_frontal_images(sample):
    root, truth = sample
    grade = {
        (r.study_id, r.question_id): r.rating
        for r in _level(root, "question").rename(columns={"question.quality.rating": "rating"}).itertuples()
    }
    views = _level(root, "image").set_index("image_id")["image.view_position"].to_dict()
    for name, minimum in (("A_frontal", 3), ("B_frontal", 2)):
        export = root / "exports" / name
        docs = _qa_docs(export)
        assert docs and len(docs) == truth["exports"][name]["studies"]
        for doc in docs:
            for q in doc["questions"]:
                assert grade[(doc["study_id"], q["question_id"])] >= minimum
                for a, _ in _flatten(q["answers"]):
                    assert a["localization"] and all(views[i] in ("PA", "AP") for i in a["localization"])
        graphs = _json_members(export / "scene_graph.zip", ".scene_graph.json")
        assert len(graphs) == len(docs)
        questions = _level(export, "question")
        assert (questions["question.quality.rating"] >= minimum).all()
        assert len(questions) == sum(len(d["questions"]) for d in docs) == truth["exports"][name]["rows"]["question"]
        assert _level(export, "image")["image.view_position"].isin(["PA", "AP"]).all()
        assert _level(export, "answer_image")["image_id"].map(views).isin(["PA", "AP"]).all()
    for subset, minimum in (("Ap", 4), ("App", 5)):
        ratings = _level(root, "question", f"exports/A_frontal/metadata/{subset}")["question.quality.rating"]
        assert (ratings >= minimum).all()
        assert len(ratings) == truth["exports"][f"A_frontal/metadata/{subset}"]["questions"]


def test_q1m_subsets_sample_min_of_cap_and_available(tmp_path, monkeypatch):
    monkeypatch.setattr(mimic_qba, "Q1M_SIZE", 10)
    truth = write_samples(tmp_path, **SMALL)
    for subset, source in (
        ("A_frontal/metadata/q1M", "A_frontal/metadata"),
        ("B_frontal/metadata/q1M", "B_frontal/metadata"),
        ("A_frontal/metadata/App_q1M", "A_frontal/metadata/App"),
    ):
        sampled = _level(tmp_path, "question", f"exports/{subset}")
        available = _level(tmp_path, "question", f"exports/{source}")
        assert len(sampled) == min(10, len(available)) == truth["exports"][subset]["questions"]
        keys = set(zip(available.study_id, available.question_id))
        assert set(zip(sampled.study_id, sampled.question_id)) <= keys
        answers = _level(tmp_path, "answer", f"exports/{subset}")
        assert set(zip(answers.study_id, answers.question_id)) == set(zip(sampled.study_id, sampled.question_id))


def test_corrupt_and_evil_members(tmp_path):
    cohort = plan_mimic_cohort(2, 5)
    target = f"s{cohort[0].study_id}"
    write_samples(
        tmp_path, cohort=cohort, questions_per_study=5, exports=False, corrupt_member=target, evil_member=True
    )
    with zipfile.ZipFile(tmp_path / "qa.zip") as zf:
        names = zf.namelist()
        assert "qa/../../evil.qa.json" in names
        for name in names:
            data = zf.read(name)
            if name.endswith(f"/{target}.qa.json"):
                with pytest.raises(json.JSONDecodeError):
                    json.loads(data)
            else:
                json.loads(data)


def test_questions_per_study_sets_the_mean(tmp_path):
    truth = write_samples(tmp_path, patients=6, seed=2, questions_per_study=40, exports=False)
    assert 30 <= truth["questions"]["total"] / truth["studies"] <= 50

"""MIMIC-Ext-CXR-QBA on generated samples: every question, sub-answer and box exactly once.

Expected rows come from the native files read here with the json module (not through the adapter)
and from the generator's truth counts (grades, splits, fine-tuning and pre-training sets).
"""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from warehouse import Warehouse
from warehouse.samples import mimic_cxr as mimic_cxr_samples
from warehouse.samples import mimic_qba as qba_samples
from warehouse.samples.cohort import plan_mimic_cohort
from warehouse.sources import qba_stream
from warehouse.sources.base import SourceError

from .conftest import make_settings

PATIENTS, SEED = 10, 5
SPLIT_WORDS = {"train": "train", "validate": "valid", "test": "test"}


def _write(root: Path, **options) -> dict:
    cohort = plan_mimic_cohort(PATIENTS, SEED)
    mimic_cxr_samples.write_samples(root / "mimic_cxr", cohort=cohort, seed=SEED)
    return qba_samples.write_samples(root / "mimic_qba", cohort=cohort, seed=SEED, **options)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("qba")
    return root, _write(root)


@pytest.fixture(scope="module")
def warehouse(sample, tmp_path_factory):
    """Ingested with tiny chunks, so rows arrive in many unsorted pieces as they do at full size."""
    root, _ = sample
    patch = pytest.MonkeyPatch()
    patch.setattr(qba_stream, "CHUNK_BYTES", 64 << 10)
    cache = tmp_path_factory.mktemp("cache")
    wh = Warehouse(
        make_settings(tmp_path_factory.mktemp("wh"), cache, mimic_qba=root / "mimic_qba", mimic_cxr=root / "mimic_cxr")
    )
    try:
        wh.ingest(["mimic_qba"], say=lambda m: None)
    finally:
        patch.undo()
    return wh


def _native(qa_zip: Path) -> dict[str, set]:
    """Questions, answers and boxes as the JSON members hold them, walked with the json module."""
    questions, answers, boxes = [], [], []
    with zipfile.ZipFile(qa_zip) as archive:
        for name in archive.namelist():
            doc = json.loads(archive.read(name))
            study = doc["study_id"].removeprefix("s")
            for q in doc["questions"]:
                questions.append((study, q["question_id"]))
                stack = [(a, None) for a in q["answers"]]
                while stack:
                    a, parent = stack.pop()
                    aid = str(a["answer_id"])
                    answers.append((study, q["question_id"], aid, parent, a["answer_level"], a["text"]))
                    for image, loc in a["localization"].items():
                        for i, b in enumerate(loc["bboxes"]):
                            boxes.append((study, q["question_id"], aid, image, i, *map(float, b)))
                    stack += [(s, aid) for s in a["sub_answers"]]
    return {"questions": questions, "answers": answers, "boxes": boxes}


def _rows(wh: Warehouse, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in wh.sql(sql).to_pylist()]


def test_every_question_answer_and_box_exactly_once(sample, warehouse):
    root, truth = sample
    native = _native(root / "mimic_qba" / "qa.zip")
    assert len(native["questions"]) == truth["questions"]["total"]
    assert len(native["answers"]) == truth["sub_answers"]["total"]
    assert len(native["boxes"]) == truth["answer_boxes"]

    questions = _rows(warehouse, "SELECT study_id, question_id FROM qa_questions WHERE dataset = 'mimic_qba'")
    assert sorted(questions) == sorted(native["questions"])
    answers = _rows(
        warehouse, "SELECT study_id, question_id, answer_id, parent_answer_id, answer_level, text FROM qa_answers"
    )
    assert sorted(answers, key=str) == sorted(native["answers"], key=str)
    boxes = _rows(
        warehouse, "SELECT study_id, question_id, answer_id, image_id, box_index, x1, y1, x2, y2 FROM qa_answer_boxes"
    )
    assert sorted(boxes) == sorted(native["boxes"])


def test_levels_types_and_num_answers(sample, warehouse):
    _, truth = sample
    by_level = dict(_rows(warehouse, "SELECT answer_level::VARCHAR, count(*) FROM qa_answers GROUP BY 1"))
    assert by_level == truth["sub_answers"]["by_level"]
    by_type = dict(_rows(warehouse, "SELECT answer_type, count(*) FROM qa_answers GROUP BY 1"))
    assert by_type == {k: v for k, v in truth["sub_answers"]["by_type"].items() if v}
    by_question_type = dict(_rows(warehouse, "SELECT question_type, count(*) FROM qa_questions GROUP BY 1"))
    assert by_question_type == {k: v for k, v in truth["questions"]["by_type"].items() if v}
    mismatched = _rows(
        warehouse,
        """
        SELECT q.study_id, q.question_id FROM qa_questions q
        LEFT JOIN (SELECT study_id, question_id, count(*) AS n FROM qa_answers GROUP BY ALL) a USING (study_id, question_id)
        WHERE q.num_answers IS DISTINCT FROM a.n""",
    )
    assert mismatched == []
    # ... and equals what the dataset's own question metadata says
    root, _ = sample
    metadata = pq.read_table(root / "mimic_qba" / "metadata" / "question_metadata.parquet").to_pylist()
    published = {(r["study_id"].removeprefix("s"), r["question_id"]): r["question.num_answers"] for r in metadata}
    got = {(s, q): n for s, q, n in _rows(warehouse, "SELECT study_id, question_id, num_answers FROM qa_questions")}
    assert got == published


def test_quality_filters_return_the_generated_counts(sample, warehouse):
    _, truth = sample
    by_grade = dict(_rows(warehouse, "SELECT quality_grade, count(*) FROM qa_questions GROUP BY 1"))
    assert by_grade == {k: v for k, v in truth["questions"]["by_grade"].items() if v}
    fine, pre = _rows(
        warehouse, "SELECT count(*) FILTER (fine_tuning), count(*) FILTER (pre_training) FROM qa_questions"
    )[0]
    assert (fine, pre) == (truth["fine_tuning_questions"], truth["pre_training_questions"])


def test_splits_follow_mimic_cxr(sample, warehouse):
    _, truth = sample
    by_split = dict(_rows(warehouse, "SELECT split, count(*) FROM qa_questions GROUP BY 1"))
    assert by_split == {SPLIT_WORDS[k]: v for k, v in truth["questions"]["by_split"].items() if v}
    leaks = _rows(
        warehouse,
        "SELECT patient_id FROM studies WHERE dataset = 'mimic_qba' GROUP BY 1 HAVING count(DISTINCT split) > 1",
    )
    assert leaks == []


def test_ids_join_the_mimic_cxr_partition(sample, warehouse):
    root, truth = sample
    assert _rows(warehouse, "SELECT count(*) FROM studies WHERE dataset = 'mimic_qba'")[0][0] == truth["studies"]
    assert _rows(warehouse, "SELECT count(*) FROM images WHERE dataset = 'mimic_qba'")[0][0] == truth["images"]
    cxr_studies = {
        r["study_id"] for r in pq.read_table(root / "mimic_qba" / "metadata" / "study_metadata.parquet").to_pylist()
    }
    assert {s for (s,) in _rows(warehouse, "SELECT DISTINCT study_id FROM qa_questions")} == {
        s.removeprefix("s") for s in cxr_studies
    }
    orphans = _rows(warehouse, "SELECT b.image_id FROM qa_answer_boxes b ANTI JOIN images i USING (image_id)")
    assert orphans == []


def test_scene_graph_labels(sample, warehouse):
    root, _ = sample
    expected: dict[tuple, int] = {}
    rank = {1: 2, -1: 1, 0: 0}
    with zipfile.ZipFile(root / "mimic_qba" / "scene_data.zip") as archive:
        for name in archive.namelist():
            if not name.endswith(".scene_graph.json"):
                continue
            doc = json.loads(archive.read(name))
            for obs in doc["observations"].values():
                value = 0 if obs["positiveness"] == "neg" else 1 if obs["probability"] == "positive" else -1
                for entity in obs["obs_entities"]:
                    key = (doc["study_id"][1:], entity)
                    if key not in expected or rank[value] > rank[expected[key]]:
                        expected[key] = value
    got = {
        (s, e): v
        for s, e, v in _rows(
            warehouse, "SELECT study_id, raw_label, value FROM labels WHERE labeler = 'qba_scene_graph'"
        )
    }
    assert got == expected
    unmapped = {
        r
        for (r,) in _rows(
            warehouse, "SELECT DISTINCT raw_label FROM labels WHERE labeler = 'qba_scene_graph' AND finding IS NULL"
        )
    }
    assert unmapped <= {"ECG leads", "overlying external object", "patient rotation", "motion artifact"}, (
        "only the entities finding_map leaves unmapped on purpose have no finding"
    )
    mapped = dict(
        _rows(
            warehouse, "SELECT raw_label, any_value(finding) FROM labels WHERE labeler = 'qba_scene_graph' GROUP BY ALL"
        )
    )
    expected = {"enlarged cardiac silhouette": "cardiomegaly", "PICC line": "picc", "pulmonary edema": "edema"}
    assert {k: v for k, v in mapped.items() if k in expected} == {k: v for k, v in expected.items() if k in mapped}


def test_qa_tables_are_laid_out_by_split_and_sorted_for_pruning(warehouse):
    root = Path(warehouse.settings.warehouse)
    folders = sorted(p.name for p in (root / "qa_questions" / "dataset=mimic_qba").iterdir() if p.is_dir())
    assert folders and all(f.startswith("split=") for f in folders)
    for part in (root / "qa_questions" / "dataset=mimic_qba").glob("split=*/*.parquet"):
        keys = pq.read_table(part, columns=["question_type", "quality_grade", "study_id", "question_id"]).to_pylist()
        assert keys == sorted(keys, key=lambda r: tuple(r.values()))


def test_members_without_the_archive_prefix_are_read(tmp_path, cache_dir):
    truth = _write(tmp_path, member_prefix=False, exports=False)
    wh = Warehouse(
        make_settings(tmp_path, cache_dir, mimic_qba=tmp_path / "mimic_qba", mimic_cxr=tmp_path / "mimic_cxr")
    )
    wh.ingest(["mimic_qba"], say=lambda m: None)
    assert wh.sql("SELECT count(*) FROM qa_questions").column(0)[0].as_py() == truth["questions"]["total"]


def test_corrupt_member_is_named_and_nothing_is_published(sample, tmp_path, cache_dir):
    root, truth = sample
    settings = make_settings(tmp_path, cache_dir, mimic_qba=root / "mimic_qba", mimic_cxr=root / "mimic_cxr")
    Warehouse(settings).ingest(["mimic_qba"], say=lambda m: None)
    bad = tmp_path / "bad"
    cohort = plan_mimic_cohort(PATIENTS, SEED)
    victim = f"s{cohort[len(cohort) // 2].study_id}"
    qba_samples.write_samples(bad, cohort=cohort, seed=SEED, exports=False, corrupt_member=victim)
    wh = Warehouse(make_settings(tmp_path, cache_dir, mimic_qba=bad, mimic_cxr=root / "mimic_cxr"))
    with pytest.raises(SourceError) as error:
        wh.ingest(["mimic_qba"], say=lambda m: None)
    assert f"{victim}.qa.json" in str(error.value) and "not valid JSON" in str(error.value)
    # the previous partition is still the published one, whole
    assert wh.sql("SELECT count(*) FROM qa_questions").column(0)[0].as_py() == truth["questions"]["total"]
    assert wh.sql("SELECT count(*) FROM qa_answers").column(0)[0].as_py() == truth["sub_answers"]["total"]


def test_member_leaving_the_dataset_is_refused_by_name(tmp_path, cache_dir):
    _write(tmp_path, exports=False, evil_member=True)
    wh = Warehouse(
        make_settings(tmp_path, cache_dir, mimic_qba=tmp_path / "mimic_qba", mimic_cxr=tmp_path / "mimic_cxr")
    )
    with pytest.raises(SourceError, match=r"\.\./\.\./evil\.qa\.json.*leaves the dataset"):
        wh.ingest(["mimic_qba"], say=lambda m: None)
    assert not (tmp_path / "warehouse" / "qa_questions" / "dataset=mimic_qba" / "_manifest.json").exists()


def test_fingerprint_follows_the_mimic_split_file_it_reads(tmp_path, cache_dir):
    from warehouse.ingest import current_fingerprint

    _write(tmp_path, exports=False)
    settings = make_settings(tmp_path, cache_dir, mimic_qba=tmp_path / "mimic_qba", mimic_cxr=tmp_path / "mimic_cxr")
    before = current_fingerprint(settings, "mimic_qba")
    assert current_fingerprint(settings, "mimic_qba") == before
    split = next((tmp_path / "mimic_cxr").glob("mimic-cxr-2.0.0-split.csv*"))
    text = gzip.decompress(split.read_bytes()).decode()
    split.write_bytes(gzip.compress(text.replace(",train", ",test", 1).encode()))
    assert current_fingerprint(settings, "mimic_qba") != before


def test_parquet_timespans_are_kept_as_the_csv_writes_them():
    """A duration[ns] column becomes the text pandas writes for it, so CSV and Parquet sources give one value."""
    import pandas as pd

    from warehouse.sources.mimic_qba import _duration_text

    spans = [
        timedelta(0),
        timedelta(hours=10),
        timedelta(days=1, hours=2, minutes=3, seconds=4),
        timedelta(days=412, hours=23, minutes=59, seconds=59),
    ]
    got = pl.DataFrame({"d": pl.Series(spans, dtype=pl.Duration("ns"))}).select(_duration_text(pl.col("d")))
    assert got.to_series().to_list() == [str(pd.Timedelta(s)) for s in spans]


def test_csv_timespans_are_read_as_fractional_days():
    """The CSV metadata writes timedeltas as pandas text; days_since_* take every part of it."""
    import pandas as pd

    from warehouse.sources.mimic_qba import _days

    spans = [
        timedelta(0),
        timedelta(days=3, hours=7, minutes=45, seconds=30),
        timedelta(minutes=1),
        timedelta(days=-1, hours=23),
    ]
    frame = pl.DataFrame({"t": [str(pd.Timedelta(s)) for s in spans]})
    got = frame.select(_days(frame, "t")).to_series().to_list()
    assert got == pytest.approx([s.total_seconds() / 86_400 for s in spans])


@pytest.mark.parametrize("members,listed", [(20, ""), (21, "\n  … and 1 more")])
def test_an_unreadable_archive_names_its_first_twenty_members(members, listed):
    from warehouse.sources.mimic_qba import _refuse_unreadable

    bad = pl.DataFrame(
        {"source_file": [f"qa.zip:s{i}.json" for i in range(members)], "reason": ["cut short"] * members}
    )
    with pytest.raises(SourceError) as err:
        _refuse_unreadable([bad])
    text = str(err.value)
    assert text.count(": cut short") == 20 and "qa.zip:s19.json" in text and "qa.zip:s20.json" not in text
    assert text.endswith("qa.zip:s19.json: cut short" + listed)

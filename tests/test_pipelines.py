"""The Dagster assets and quality gates, run by Dagster itself (materialize / execute_in_process).

Real data: NIH ChestX-ray14 and CheXpert metadata pass every gate and publish. Planted defects
(a duplicate image id, an age of 400, an image whose study is missing) fail the named check,
are not published, and the catalog keeps answering with the previous good data.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC
from pathlib import Path

import dagster as dg
import pytest

from pipelines import runner
from pipelines.definitions import defs
from warehouse import Warehouse, quality
from warehouse.sources import DATASETS

from .conftest import make_settings


def _check_keys() -> set[str]:
    return {key.name for key in defs.resolve_asset_graph().asset_check_keys}


def test_definitions_are_complete():
    graph = defs.resolve_asset_graph()
    external = [k for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable]
    assert external == [], "a mistyped dependency creates an external asset silently"
    checks = _check_keys()
    for table in quality.suite_tables():
        for name, _, _ in quality.expectation_checks(table):
            assert f"{table}__{name}" in checks
    for check in quality.integrity_checks():
        assert f"integrity__{check.name}" in checks
    specs = {s.key.name: s for c in defs.asset_checks for s in c.check_specs}
    assert {s.asset_key.path[0] for s in specs.values()} == {"staged"}, "a gate checks rows before they publish"
    assert all(s.partitions_def is not None for s in specs.values())
    assert specs["studies__age_years_in_range"].blocking
    assert not specs["integrity__quarantine_share"].blocking  # a warning never blocks


@pytest.fixture(scope="module")
def gated_warehouse(tmp_path_factory, cache_dir, public_data):
    """NIH and CheXpert ingested through the Dagster job with every gate."""
    root = tmp_path_factory.mktemp("gated")
    settings = make_settings(root, cache_dir)
    runs = runner.ingest(settings, ["nih_cxr14", "chexpert"], dagster_instance=dg.DagsterInstance.ephemeral())
    return Warehouse(settings), runs


def _nih_female_patient_percent(raw_entry: Path) -> float:
    """Share of NIH patients whose first visit records F, straight from the raw file."""
    first: dict[str, tuple[int, str]] = {}
    with gzip.open(raw_entry, "rt") as f:
        next(f)
        for line in f:
            fields = line.split(",")
            follow_up, patient, sex = int(fields[2]), fields[3], fields[5]
            if patient not in first or follow_up < first[patient][0]:
                first[patient] = (follow_up, sex)
    return round(100 * sum(sex == "F" for _, sex in first.values()) / len(first), 2)


def test_real_metadata_passes_every_gate_and_publishes(gated_warehouse, raw_files):
    wh, runs = gated_warehouse
    for run in runs:
        assert run.status == "published", (run.dataset, run.checks_failed, run.error)
        assert run.checks_failed == [] and run.checks_passed == len(_check_keys())
    counts = {r["dataset"]: r["n"] for r in wh.sql("SELECT dataset, count(*) AS n FROM images GROUP BY 1").to_pylist()}
    assert counts == {"nih_cxr14": 112_120, "chexpert": 223_414}
    recorded = wh.sql(
        "SELECT dataset, status, engine, checks_passed, checks_failed FROM ingest_runs ORDER BY dataset"
    ).to_pylist()
    assert [(r["dataset"], r["status"], r["engine"], r["checks_failed"]) for r in recorded] == [
        ("chexpert", "published", "dagster", 0),
        ("nih_cxr14", "published", "dagster", 0),
    ]
    stats = wh.sql("SELECT dataset, split, studies, images, patients FROM split_stats ORDER BY 1").to_pylist()
    assert stats == [
        {"dataset": "chexpert", "split": "train", "studies": 187_641, "images": 223_414, "patients": 64_540},
        {"dataset": "nih_cxr14", "split": "unassigned", "studies": 112_120, "images": 112_120, "patients": 30_805},
    ]
    female_share = (
        wh.sql("SELECT percent FROM demographics WHERE dataset='nih_cxr14' AND attribute='sex' AND bucket='F'")
        .column(0)[0]
        .as_py()
    )
    assert female_share == _nih_female_patient_percent(raw_files["nih_entry"])


def test_materializations_carry_metadata_people_read(gated_warehouse, tmp_path, cache_dir):
    from pipelines.assets import INGEST_ASSETS
    from pipelines.checks import QUALITY_CHECKS
    from pipelines.resources import WarehouseResource

    wh, _ = gated_warehouse
    result = dg.materialize(
        [*INGEST_ASSETS, *QUALITY_CHECKS],
        partition_key="nih_cxr14",
        resources={"warehouse": WarehouseResource.from_settings(wh.settings)},
        run_config=runner.QUIET,
    )
    by_asset = {
        e.materialization.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    staged = by_asset["staged/images"]
    # 397,566 rows of the NIH files themselves plus 17,504 Google 2019 radiologist labels
    assert staged["rows staged"].value == 397_566 + 17_504 and staged["rows rejected"].value == 0
    assert staged["dagster/row_count"].value == 112_120 and by_asset["staged/labels"]["dagster/row_count"].value > 0
    assert by_asset["staged/reports"]["dagster/row_count"].value == 0
    assert len(staged["source fingerprint"].value) == 64
    assert "Data_Entry_2017_v2020.csv.gz" in staged["source files"].value
    images = by_asset["images"]
    assert images["dagster/row_count"].value == 112_120
    assert "00000001_000" in images["preview"].value
    assert by_asset["boxes"]["dagster/row_count"].value == 984
    assert by_asset["reports"]["note"].value == "nih_cxr14 does not feed reports"
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and {e.partition for e in evaluations} == {"nih_cxr14"}, "each evaluation shows its partition"
    on = {e.check_name: e.asset_key.to_user_string() for e in evaluations}
    assert (
        on["studies__age_years_in_range"] == "staged/studies" and on["labels__finding_in_vocabulary"] == "staged/labels"
    )
    assert on["integrity__label_image_exists"] == "staged/labels" and on["volume__no_shrink"] == "staged/images"


# --- planted defects ---------------------------------------------------------------------------
def _nih_fixture(folder: Path, raw_entry: Path, mutate) -> None:
    with gzip.open(raw_entry, "rt", newline="") as f:
        lines = [next(f) for _ in range(41)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Data_Entry_2017_v2020.csv").write_text("".join(mutate(lines, folder)))


def _duplicate_image(lines, folder):
    return [*lines, lines[5]]


SPLIT_IMAGES = "00000001"  # patient 1: three images in the first rows of the real file


def _patient_in_two_splits(lines, folder):
    """Official split lists that put one of a patient's images in test and the others in train."""
    images = [line.split(",", 1)[0] for line in lines[1:]]
    leaked = f"{SPLIT_IMAGES}_001.png"
    (folder / "train_val_list.txt").write_text("".join(f"{i}\n" for i in images if i != leaked))
    (folder / "test_list.txt").write_text(f"{leaked}\n")
    return lines


DEFECTS = {
    "duplicate image id": (_duplicate_image, "images__key_unique"),
    "patient in two splits": (_patient_in_two_splits, "integrity__patient_in_one_split"),
}


@pytest.fixture
def good_then_defect(tmp_path, cache_dir, raw_files):
    """A small NIH warehouse published from good rows; returns a function that re-ingests defective rows."""
    folder = tmp_path / "nih"
    _nih_fixture(folder, raw_files["nih_entry"], lambda lines, folder: lines)
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=folder)
    first = runner.ingest(settings, ["nih_cxr14"], dagster_instance=dg.DagsterInstance.ephemeral())
    assert first[0].status == "published"
    wh = Warehouse(settings)
    before = wh.sql("SELECT * FROM studies ORDER BY study_id").to_pylist()
    manifest = _snapshot(wh, "studies")

    def ingest_defect(mutate):
        _nih_fixture(folder, raw_files["nih_entry"], mutate)
        return runner.ingest(settings, ["nih_cxr14"], dagster_instance=dg.DagsterInstance.ephemeral())[0]

    return wh, before, manifest, ingest_defect


def test_planted_defects_block_publishing_through_dagster(good_then_defect, monkeypatch):
    """One published NIH warehouse, then each defect in turn through the Dagster job: each run is blocked by
    its check and the published data stays as it was (one fixture for all three: each good publish costs a run)."""
    from warehouse.sources.nih_cxr14 import NihCxr14

    wh, before, manifest, ingest_defect = good_then_defect
    for defect in sorted(DEFECTS):
        mutate, check = DEFECTS[defect]
        run = ingest_defect(mutate)
        assert run.status == "blocked", defect
        assert check in run.checks_failed, defect
        _assert_previous_data_kept(wh, before, manifest, run, check)

    # an adapter that emits an image without its study (simulated) fails the integrity gate
    real_read = NihCxr14.read

    def read_losing_a_study(self, src, progress=None, related=None):
        result = real_read(self, src, progress, related)
        result.tables["studies"] = result.tables["studies"].filter(
            result.tables["studies"]["study_id"] != "00000003_001"
        )
        return result

    monkeypatch.setattr(NihCxr14, "read", read_losing_a_study)
    run = ingest_defect(lambda lines, folder: lines)
    assert run.status == "blocked"
    assert "integrity__image_study_exists" in run.checks_failed
    _assert_previous_data_kept(wh, before, manifest, run, "integrity__image_study_exists")


def _snapshot(wh, table: str) -> tuple[int, list[str]]:
    """The table's Delta version and its files on disk."""
    dt = wh.store.delta(table)
    return dt.version(), sorted(str(p) for p in Path(wh.store.table_uri(table)).rglob("*.parquet"))


def _assert_previous_data_kept(wh, before, manifest, run, check):
    assert _snapshot(wh, "studies") == manifest, "nothing was committed"
    assert wh.sql("SELECT * FROM studies ORDER BY study_id").to_pylist() == before
    assert not list(Path(wh.settings.warehouse, "_staging", "nih_cxr14").glob("*")), "blocked files are discarded"
    record = wh.sql("SELECT status, checks_failed, message FROM ingest_runs WHERE run_id = ?", [run.run_id]).to_pylist()
    assert record and record[0]["status"] == "blocked" and check in record[0]["message"]


def test_check_results_name_the_offending_rows(tmp_path, cache_dir, raw_files):
    folder = tmp_path / "nih"
    _nih_fixture(folder, raw_files["nih_entry"], _patient_in_two_splits)
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=folder)
    from pipelines.assets import INGEST_ASSETS
    from pipelines.checks import QUALITY_CHECKS
    from pipelines.resources import WarehouseResource

    result = dg.materialize(
        [*INGEST_ASSETS, *QUALITY_CHECKS],
        partition_key="nih_cxr14",
        raise_on_error=False,
        resources={"warehouse": WarehouseResource.from_settings(settings)},
        run_config=runner.QUIET,
    )
    assert not result.success and result.is_node_untouched("tables")
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"integrity__patient_in_one_split"}
    evaluation = failed["integrity__patient_in_one_split"]
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["unexpected rows"].value == 1
    example = evaluation.metadata["examples (json)"].value[0]
    assert example == {"patient_id": "1", "splits": ["test", "train"]}  # the file's Patient ID column


# --- schedule and sensor -----------------------------------------------------------------------
def test_daily_schedule_requests_every_dataset():
    from datetime import datetime

    from pipelines.automation import daily_ingest

    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 23, 3, tzinfo=UTC))
    requests = list(daily_ingest(context))
    assert [r.partition_key for r in requests] == list(DATASETS)
    assert {r.run_key for r in requests} == {f"{d}:2026-11-23" for d in DATASETS}


def test_sensor_requests_only_changed_datasets(tmp_path, cache_dir, public_data, raw_files):
    from pipelines.automation import source_change_sensor
    from pipelines.resources import WarehouseResource

    nih, chexpert = tmp_path / "nih", tmp_path / "chexpert"
    _nih_fixture(nih, raw_files["nih_entry"], lambda lines, folder: lines)
    chexpert.mkdir()
    (chexpert / "train.csv.gz").write_bytes(raw_files["chexpert_train"].read_bytes())
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=nih, chexpert=chexpert)
    resources = {"warehouse": WarehouseResource.from_settings(settings)}

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            result = source_change_sensor(context)
        return [r.partition_key for r in result.run_requests or []], result.cursor

    configured = {"nih_cxr14", "chexpert"}
    requested, cursor = tick(None)
    assert configured <= set(requested)  # nothing published yet: every prepared dataset is due
    requested, cursor = tick(cursor)
    assert requested == []  # nothing changed
    lines = (nih / "Data_Entry_2017_v2020.csv").read_text().splitlines(keepends=True)
    (nih / "Data_Entry_2017_v2020.csv").write_text("".join(lines[:-1]))
    requested, cursor = tick(cursor)
    assert requested == ["nih_cxr14"]  # exactly the dataset whose file changed
    assert json.loads(cursor)["chexpert"] == json.loads(tick(None)[1])["chexpert"]


def test_sensor_skips_datasets_already_published_from_these_sources(gated_warehouse):
    from pipelines.automation import source_change_sensor
    from pipelines.resources import WarehouseResource

    wh, _ = gated_warehouse
    resources = {"warehouse": WarehouseResource.from_settings(wh.settings)}
    with dg.build_sensor_context(cursor=None, resources=resources) as context:
        result = source_change_sensor(context)
    requested = {r.partition_key for r in result.run_requests or []}
    assert not requested & {"nih_cxr14", "chexpert"}, "published fingerprints match: no run needed"


def test_an_adapter_error_reaches_the_user_and_the_run_log(tmp_path, cache_dir):
    """Not Dagster's wrapper ("Error occurred while executing op"): the adapter's own words, file named."""
    folder = tmp_path / "nih"
    folder.mkdir()
    (folder / "Data_Entry_2017_v2020.csv.gz").write_bytes(b"not gzip at all")
    settings = make_settings(tmp_path, cache_dir, nih_cxr14=folder)
    run = runner.ingest(settings, ["nih_cxr14"], dagster_instance=dg.DagsterInstance.ephemeral())[0]
    assert run.status == "failed"
    assert run.error.startswith(str(folder / "Data_Entry_2017_v2020.csv.gz")) and "cannot be read" in run.error
    assert "executing op" not in run.error
    Warehouse(settings).refresh_catalog()
    record = Warehouse(settings).sql("SELECT status, message FROM ingest_runs").to_pylist()
    assert record == [{"status": "failed", "message": run.error}]

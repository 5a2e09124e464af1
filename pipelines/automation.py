"""When ingestion runs: a daily schedule, a sensor on source changes, and clean-up after a blocked run.

The ingest job ends with the catalog and what is written from it (the data dictionary, the report), so
any run of a partition (UI, schedule, sensor or CLI) leaves the catalog current, and it runs its steps in one process: the steps share the imports of
GX and DuckDB and the staged files, and two partitions still run side by side as two runs.
"""

import json

import dagster as dg

from warehouse.gated import GatedIngest
from warehouse.ingest import current_fingerprint, published_fingerprint
from warehouse.sources import DATASETS

from .assets import CATALOG_POOL, DATASET_PARTITIONS, INGEST_ASSETS, catalog
from .publications import PUBLICATION_ASSETS
from .resources import WarehouseResource

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.assets(*INGEST_ASSETS, catalog, *PUBLICATION_ASSETS),
    description="Stage one dataset, run its quality gates, publish it if they pass (with its statistics), "
    "rebuild the catalog, and rewrite the data dictionary and the report from it.",
    tags={"cxr/job": "ingest"},
    executor_def=dg.in_process_executor,
)
catalog_job = dg.define_asset_job(
    "refresh_catalog",
    selection=dg.AssetSelection.assets(catalog),
    description="Rebuild the DuckDB catalog from the published partitions.",
    tags={"cxr/catalog": CATALOG_POOL},
)


@dg.schedule(
    job=ingest_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-ingest every dataset daily at 03:00 UTC (one run per dataset partition).",
)
def daily_ingest(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for dataset in DATASET_PARTITIONS.get_partition_keys():
        yield dg.RunRequest(partition_key=dataset, run_key=f"{dataset}:{day}", tags={"cxr/trigger": "schedule"})


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Fingerprints every dataset's source files (size, mtime or ETag, sha256 of small files) "
    "and requests a run only for datasets whose sources changed.",
)
def source_change_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    settings, store = warehouse.settings(), warehouse.store()
    seen = json.loads(context.cursor) if context.cursor else {}
    requests, unchanged, unprepared = [], [], []
    for dataset in DATASETS:
        fingerprint = current_fingerprint(settings, dataset)
        if fingerprint is None:
            unprepared.append(dataset)
            continue
        # with no cursor yet, compare with what is published: an up-to-date warehouse needs no run
        previous = seen.get(dataset) or published_fingerprint(store, dataset)
        if fingerprint == previous:
            unchanged.append(dataset)
        else:
            requests.append(
                dg.RunRequest(
                    partition_key=dataset,
                    run_key=f"{dataset}:{fingerprint}",
                    tags={"cxr/trigger": "source-change", "cxr/fingerprint": fingerprint},
                )
            )
        seen[dataset] = fingerprint
    cursor = json.dumps(seen, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    reason = "no source changed" + (f"; default data not prepared for {', '.join(unprepared)}" if unprepared else "")
    return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)


@dg.run_failure_sensor(
    monitored_jobs=[ingest_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a blocked or failed ingest run, discard its staged files and record why.",
)
def blocked_run_cleanup(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    run = context.dagster_run
    dataset = run.tags.get("dagster/partition")
    if not dataset:
        return
    records = context.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    evaluations = [_check_evaluation(r.event_log_entry) for r in records]
    failed = [e.asset_check_key.name for e in evaluations if not e.passed]
    error = None if failed else (context.failure_event.message or "run failed")
    GatedIngest(warehouse.settings(), warehouse.store(), dataset, run_id=run.run_id, engine="dagster").block(
        checks_passed=sum(e.passed for e in evaluations), failed=failed, error=error
    )


def _check_evaluation(entry: dg.EventLogEntry) -> dg.AssetCheckEvaluation:
    """The check result an ASSET_CHECK_EVALUATION record holds (Dagster types the event as optional)."""
    event = entry.dagster_event
    assert event is not None, "an ASSET_CHECK_EVALUATION record always holds a Dagster event"
    return event.asset_check_evaluation_data

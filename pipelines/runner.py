"""Run the ingest assets in process, the way `cxr ingest` does: one run per dataset, then the catalog.

This is the same Dagster job the UI, the schedule and the sensor launch, executed in this
process (`execute_in_process`) so there is one ingestion path. Progress is reported from
Dagster's own event stream (steps, materializations, check evaluations) through `on_event`.
"""

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from warehouse.config import Settings
from warehouse.gated import GatedIngest

from .assets import PUBLISH_KEYS
from .definitions import defs
from .resources import WarehouseResource
from .run_history import relax_sqlite_sync

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class DatasetRun:
    dataset: str
    run_id: str
    status: str = "running"  # published | blocked | failed
    rows: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


Event = Callable[[str, str, str], None]  # (dataset, kind, detail)


def instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs then show in `dagster dev`), else an ephemeral one.

    Dagster reads relative `base_dir`s in dagster.yaml (ours say `.dagster/storage`) against the current directory;
    here they are anchored at DAGSTER_HOME, so `cxr ingest` run from any folder writes to <home>/.dagster, the storage
    `dagster dev` started in that folder reads. The file's sections are passed back as overrides (they replace whole
    top-level keys), through `local_temp`, Dagster's public constructor for a persistent instance in a given folder.
    """
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    import yaml

    relax_sqlite_sync()
    # Dagster's own opt-in: the planned-materialization and planned-check events of a run (one per asset check,
    # over eighty) go to the SQLite history in one write instead of one each, about 2 s of a small run.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

    home_dir = Path(home).expanduser().resolve()
    config_file = home_dir / "dagster.yaml"
    config = (yaml.safe_load(config_file.read_text()) or {}) if config_file.is_file() else {}

    def anchored(value):
        if isinstance(value, dict):
            return {
                k: (
                    str(home_dir / v)
                    if k == "base_dir" and isinstance(v, str) and not Path(v).is_absolute()
                    else anchored(v)
                )
                for k, v in value.items()
            }
        return [anchored(v) for v in value] if isinstance(value, list) else value

    return dg.DagsterInstance.local_temp(str(home_dir), overrides=anchored(config))


def ingest(
    settings: Settings,
    datasets: list[str],
    *,
    on_event: Event = lambda *a: None,
    dagster_instance: dg.DagsterInstance | None = None,
    allow_shrink: bool = False,
) -> list[DatasetRun]:
    """Ingest each dataset through its gated Dagster run, then rebuild the catalog once."""
    inst = dagster_instance or instance()
    resource = WarehouseResource.from_settings(settings, allow_shrink=allow_shrink)
    # the resource's fields go in as run config (not as a resource object), so the run is launched exactly as the
    # code location defines it, and a subset of its assets can be selected
    run_config = {**QUIET, "resources": {"warehouse": {"config": resource.model_dump(exclude_none=True)}}}
    job = defs.resolve_job_def("ingest")
    runs = []
    for dataset in datasets:
        run = DatasetRun(dataset, str(uuid.uuid4()))
        inst.add_event_listener(run.run_id, lambda entry, run=run: _on_entry(entry, run, on_event))
        started = time.perf_counter()
        on_event(dataset, "start", "reading native files")
        try:
            result = job.execute_in_process(
                partition_key=dataset,
                instance=inst,
                run_id=run.run_id,
                run_config=run_config,
                raise_on_error=False,
                asset_selection=PUBLISH_KEYS,  # the catalog once, after all
                tags={"cxr/trigger": "cli"},
            )
            _finish(run, result)
        except Exception as e:
            run.status, run.error = "failed", f"{type(e).__name__}: {e}"
        run.seconds = time.perf_counter() - started
        if run.status != "published":
            GatedIngest(settings, resource.store(), dataset, run_id=run.run_id, engine="dagster").block(
                checks_passed=run.checks_passed,
                failed=run.checks_failed,
                error=run.error if run.status == "failed" else None,
            )
        on_event(dataset, run.status, run.error or ", ".join(run.checks_failed))
        runs.append(run)
    on_event("catalog", "start", "rebuilding the catalog")
    defs.resolve_job_def("refresh_catalog").execute_in_process(
        instance=inst, run_config=run_config, tags={"cxr/trigger": "cli"}
    )
    on_event("catalog", "published", str(Path(settings.catalog)))
    return runs


def _on_entry(entry, run: DatasetRun, on_event: Event) -> None:
    event = entry.dagster_event
    if event is None:
        return
    kind = event.event_type_value
    if kind == "STEP_START":
        on_event(
            run.dataset,
            "step",
            {
                "staged": "reading and staging",
                "tables": "deriving and publishing",
                "catalog": "rebuilding the catalog",
            }.get(event.step_key, f"checking ({event.step_key})"),
        )
    elif kind == "ASSET_MATERIALIZATION":
        materialization = event.event_specific_data.materialization
        path = materialization.asset_key.path
        table = path[-1]
        count = materialization.metadata.get("dagster/row_count")
        if path[0] == "staged":
            if "rows staged" in materialization.metadata:
                run.rejected = int(materialization.metadata["rows rejected"].value)
                staged = materialization.metadata["rows staged"].value
                on_event(run.dataset, "staged", f"{staged:,} rows staged, {run.rejected:,} rejected")
        elif count is not None and table not in ("split_stats", "demographics"):
            run.rows[table] = int(count.value)
    elif kind == "ASSET_CHECK_EVALUATION":
        evaluation = event.event_specific_data
        if evaluation.passed:
            run.checks_passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.ERROR:
            run.checks_failed.append(evaluation.asset_check_key.name)
            on_event(run.dataset, "check_failed", _describe_failure(evaluation))
        else:
            run.warnings.append(evaluation.asset_check_key.name)
            on_event(run.dataset, "check_warning", _describe_failure(evaluation))


def _describe_failure(evaluation) -> str:
    metadata = evaluation.metadata
    count = metadata.get("unexpected rows")
    examples = metadata.get("examples (json)")
    sample = examples.value[:3] if examples is not None and isinstance(examples.value, list) else []
    return f"{evaluation.asset_check_key.name}: {count.value if count else '?'} offending rows" + (
        f", e.g. {sample}" if sample else ""
    )


def _finish(run: DatasetRun, result) -> None:
    if result.success:
        run.status = "published"
        return
    run.status = "blocked" if run.checks_failed else "failed"
    if run.status == "failed":
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        if failures:
            run.error = root_cause(failures[0].event_specific_data.error)


def root_cause(error) -> str:
    """The innermost error's own message: the adapter's or the check's words, not Dagster's wrapper."""
    if error is None:
        return "step failed"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip().splitlines()[-1] if error.message.strip() else "step failed"
    head, _, rest = message.partition(": ")
    return rest if rest and error.cls_name and head.endswith(error.cls_name) else message

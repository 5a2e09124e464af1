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

from . import worker
from .assets import PUBLISH_KEYS
from .definitions import defs
from .resources import WarehouseResource
from .run_history import relax_sqlite_sync

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
NO_COMPUTE_LOGS = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}


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
    interrupted: bool = False  # the run failed because of Ctrl-C


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

    # No capture of the steps' raw stdout and stderr for these runs: Dagster tails each step's output through a
    # `tail` and a Python watcher process per step (fourteen of each per dataset), and the watchers printed a
    # traceback each on Ctrl-C. The runs' events, logs, materializations and check results are all recorded.
    overrides = {**anchored(config), "compute_logs": NO_COMPUTE_LOGS}
    return dg.DagsterInstance.local_temp(str(home_dir), overrides=overrides)


def ingest(
    settings: Settings,
    datasets: list[str],
    *,
    on_event: Event = lambda *a: None,
    dagster_instance: dg.DagsterInstance | None = None,
    allow_shrink: bool = False,
    workers: int | None = None,
) -> list[DatasetRun]:
    """Ingest each dataset through its gated Dagster run, then rebuild the catalog once.

    With `workers` (what `cxr ingest` does) the dataset runs go to that many spawned processes, side by side
    when more than one; each run is still the one job, executed in its process against the same instance. A
    dataset that links to another one in the batch waits for it, because its derived tables read the linked
    dataset's publish. This process only supervises, so Ctrl-C ends the command: in a process running a job,
    Dagster takes the interrupt over and turns it into a failed step (or, raised in a garbage-collection
    callback, loses it), and the loop went on. Without `workers`, or with a given `dagster_instance` (which
    lives in this process), the runs happen here, one after another.
    """
    inst = dagster_instance or instance()
    resource = WarehouseResource.from_settings(settings, allow_shrink=allow_shrink)
    if workers is not None and dagster_instance is None:
        runs = _ingest_in_workers(settings, datasets, on_event, allow_shrink=allow_shrink, workers=workers)
    else:
        runs = []
        for dataset in datasets:
            runs.append(_ingest_one(inst, settings, dataset, str(uuid.uuid4()), on_event, allow_shrink))
            if runs[-1].interrupted:  # Dagster turns Ctrl-C into a failed step, and the loop would go on
                raise KeyboardInterrupt
    on_event("catalog", "start", "rebuilding the catalog")
    defs.resolve_job_def("refresh_catalog").execute_in_process(
        instance=inst, run_config=_run_config(resource), tags={"cxr/trigger": "cli"}
    )
    on_event("catalog", "published", str(Path(settings.catalog)))
    return runs


def _run_config(resource: WarehouseResource) -> dict:
    # the resource's fields go in as run config (not as a resource object), so the run is launched exactly as the
    # code location defines it, and a subset of its assets can be selected
    return {**QUIET, "resources": {"warehouse": {"config": resource.model_dump(exclude_none=True)}}}


def _ingest_one(
    inst: dg.DagsterInstance, settings: Settings, dataset: str, run_id: str, on_event: Event, allow_shrink: bool
) -> DatasetRun:
    """One dataset's run of the ingest job, in this process; a run that did not publish is closed as blocked."""
    resource = WarehouseResource.from_settings(settings, allow_shrink=allow_shrink)
    run = DatasetRun(dataset, run_id)
    inst.add_event_listener(run.run_id, lambda entry, run=run: _on_entry(entry, run, on_event))
    started = time.perf_counter()
    on_event(dataset, "start", "reading native files")
    try:
        result = defs.resolve_job_def("ingest").execute_in_process(
            partition_key=dataset,
            instance=inst,
            run_id=run.run_id,
            run_config=_run_config(resource),
            raise_on_error=False,
            asset_selection=PUBLISH_KEYS,  # the catalog once, after all
            tags={"cxr/trigger": "cli"},
        )
        _finish(run, result)
    except Exception as e:
        run.status, run.error = "failed", f"{type(e).__name__}: {e}"
    run.seconds = time.perf_counter() - started
    if run.status != "published":
        _close_unpublished(settings, resource, run)
    on_event(dataset, run.status, run.error or ", ".join(run.checks_failed))
    return run


def _close_unpublished(settings: Settings, resource: WarehouseResource, run: DatasetRun) -> None:
    GatedIngest(settings, resource.store(), run.dataset, run_id=run.run_id, engine="dagster").block(
        checks_passed=run.checks_passed,
        failed=run.checks_failed,
        error=run.error if run.status == "failed" else None,
    )


# --- side by side ---------------------------------------------------------------------------
def _worker_ingest(settings: Settings, dataset: str, run_id: str, allow_shrink: bool) -> DatasetRun:
    queue = worker.events
    assert queue is not None, "started without worker.start"
    return _ingest_one(instance(), settings, dataset, run_id, lambda *event: queue.put(event), allow_shrink)


def _ingest_in_workers(
    settings: Settings, datasets: list[str], on_event: Event, *, allow_shrink: bool, workers: int
) -> list[DatasetRun]:
    """Run the datasets in `workers` spawned processes, relaying their progress events to `on_event` here."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from warehouse.sources import dataset_info

    waits_for = {d: link for d in datasets if (link := dataset_info(d).links_to) in datasets}
    run_ids = {d: str(uuid.uuid4()) for d in datasets}
    runs: dict[str, DatasetRun] = {}
    context = multiprocessing.get_context("spawn")  # no fork of a process holding DuckDB's and polars' threads
    events = context.Queue()

    def relay() -> None:
        while True:
            try:
                on_event(*events.get_nowait())
            except queues.Empty:
                return

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=min(workers, len(datasets)), mp_context=context, initializer=worker.start, initargs=(events,)
        )

    def settle(future: Future) -> bool:
        """Record a finished run's outcome; whether its worker pool broke (a worker was killed: out of memory,
        a signal), in which case the run never reported an end, and the kill is as safe as a killed ingest."""
        dataset = running.pop(future)
        try:
            runs[dataset] = future.result()
            return False
        except BrokenProcessPool as e:
            error = f"its worker process died ({e})"
        except Exception as e:  # the worker could not run the job at all
            error = f"{type(e).__name__}: {e}"
        run = runs[dataset] = DatasetRun(dataset, run_ids[dataset], "failed", error=error)
        _close_unpublished(settings, WarehouseResource.from_settings(settings), run)
        on_event(dataset, run.status, error)
        return error.startswith("its worker process died")

    pool = new_pool()
    running: dict[Future, str] = {}
    waiting = list(datasets)
    try:
        while waiting or running:
            # a dataset goes when a worker is free (not queued ahead), so a linked dataset that became ready
            # takes its place in the order instead of queueing behind every dataset submitted before
            ready = [d for d in waiting if waits_for.get(d) is None or waits_for[d] in runs]
            for dataset in ready[: max(0, workers - len(running))]:
                waiting.remove(dataset)
                running[pool.submit(_worker_ingest, settings, dataset, run_ids[dataset], allow_shrink)] = dataset
            done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
            relay()
            broken = [settle(future) for future in done]
            if any(broken):  # the other runs in the pool end with it; the datasets not started go to a new one
                for future in wait(running).done:
                    settle(future)
                pool.shutdown(wait=True)
                pool = new_pool()
    except BaseException:  # Ctrl-C, or an error here: no run goes on without this process to report it
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    relay()
    return [runs[d] for d in datasets]


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
            run.interrupted = any(_interrupted(f.event_specific_data.error) for f in failures)


INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt", "InterruptException"}  # the last: DuckDB's


def _interrupted(error) -> bool:
    """Whether a step failed because of Ctrl-C: Dagster's or DuckDB's word for it anywhere in the error chain."""
    while error is not None:
        if error.cls_name in INTERRUPTS:
            return True
        error = error.cause
    return False


def root_cause(error) -> str:
    """The innermost error's own message: the adapter's or the check's words, not Dagster's wrapper."""
    if error is None:
        return "step failed"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip().splitlines()[-1] if error.message.strip() else "step failed"
    head, _, rest = message.partition(": ")
    return rest if rest and error.cls_name and head.endswith(error.cls_name) else message

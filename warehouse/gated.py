"""The one ingest path: stage → gate → derive → commit → record, for one dataset and one run.

`cxr ingest` (through the Dagster job), the Dagster assets, `Warehouse.ingest()` and the tests all
drive this object, so nothing reaches a published table without passing the gates. Each step can
run in another process (Dagster's executors): a run's state is its staging record, found by the
run id, so two runs can never check or publish each other's files.

Publishing commits each table of the dataset (source tables, then the derived ones computed from
the same staged rows) as one Delta commit each, and only then appends the dataset-level publish
record the catalog adopts. A run killed between two commits leaves no record: the catalog keeps
answering with the previous complete publish, whose table versions stay readable by time travel.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import publish_log, quality
from .config import Settings
from .errors import CxrError
from .ingest import StagedDataset, load_staged, new_run_id, read_dataset, save_staged, stage_dataset
from .memory import beyond_limit_if_needed, release_unused
from .runs import now_iso, record_run
from .schema import DERIVED_TABLES
from .scratch import scratch_dir, sweep
from .sources import dataset_info
from .stats import compute_batches, derive_connection
from .store import StagedPartition, Store

Say = Callable[[str], None]
DERIVED_NAMES = {t.name for t in DERIVED_TABLES}


def _quiet(_: str) -> None:
    pass


class IngestBlocked(CxrError):
    """A blocking gate failed: nothing of the dataset was published."""


@dataclass
class IngestResult:
    dataset: str
    run_id: str
    status: str  # published | blocked | failed
    rows: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    warehouse_version: int | None = None
    outcomes: list[quality.CheckOutcome] = field(default_factory=list)
    message: str | None = None
    seconds: float = 0.0

    @property
    def failed_checks(self) -> list[str]:
        return [check_name(o) for o in self.outcomes if not o.passed and o.blocking]


def check_name(outcome: quality.CheckOutcome) -> str:
    """The name a check has everywhere a person reads it: `<table>__<expectation>` or `integrity__<check>`."""
    return f"integrity__{outcome.name}" if outcome.kind == "integrity" else f"{outcome.table}__{outcome.name}"


class GatedIngest:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        dataset: str,
        *,
        run_id: str | None = None,
        engine: str = "library",
        say: Say = _quiet,
        allow_shrink: bool = False,
        max_shrink: float = quality.DEFAULT_MAX_SHRINK,
    ):
        dataset_info(dataset)  # an unknown id fails here, with the known ones named
        self.settings, self.store, self.dataset = settings, store, dataset
        self.run_id = run_id or new_run_id()
        self.engine, self.say = engine, say
        self.allow_shrink, self.max_shrink = allow_shrink, max_shrink
        self.started_at = now_iso()
        self._started = time.perf_counter()

    # --- the steps ---------------------------------------------------------------------------
    def stage(self) -> StagedDataset:
        """Read the native files once and stage every table the dataset feeds, under this run."""
        self.store.remove_stale_staging(self.dataset, keep=self.run_id)
        sweep()  # scratch folders of killed runs (QBA's JSON chunks, sort spills)
        self.store.claim_staging(self.dataset, self.run_id)
        read = read_dataset(self.settings, self.dataset, say=self.say)
        staged = stage_dataset(self.store, read, run_id=self.run_id, say=self.say)
        staged.started_at, staged.seconds = self.started_at, time.perf_counter() - self._started
        save_staged(self.store, staged)
        return staged

    def staged(self) -> StagedDataset:
        return load_staged(self.store, self.dataset, self.run_id)

    def staged_files(self) -> dict[str, list[str]]:
        return {name: p.urls() for name, p in self.staged().partitions.items()}

    def gate(self) -> list[quality.CheckOutcome]:
        """Every quality gate on this run's staged files (the Dagster checks run the same functions one by one)."""
        return quality.gate_staged(self.store, self.staged_files(), self.dataset) + self.volume()

    def volume(self) -> list[quality.CheckOutcome]:
        """The volume gates: not empty, no shrink past the allowed share, a known release's counts."""
        staged = self.staged()
        previous = publish_log.adopted(self.store).get(self.dataset)
        return quality.volume_gate(
            self.dataset,
            staged.rows,
            staged.files,
            previous.rows if previous else None,
            max_shrink=self.max_shrink,
            allow_shrink=self.allow_shrink,
        )

    def publish(self, *, checks_passed: int, checks_failed: int = 0) -> IngestResult:
        """Derive, commit every table, then record the dataset-level publish; the staging goes."""
        staged = self.staged()
        if checks_failed:
            raise IngestBlocked(
                f"{self.dataset}: refusing to publish run {self.run_id}: {checks_failed} blocking checks failed"
            )
        derived = self._derive(staged)
        versions: dict[str, int] = {}
        for name, partition in [*staged.partitions.items(), *derived.items()]:
            self.say(f"committing {name}")
            versions[name] = self.store.commit(partition)
        rows = {**staged.rows, **{name: p.rows for name, p in derived.items()}}
        warehouse_version = publish_log.record(
            self.store,
            dataset=self.dataset,
            run_id=self.run_id,
            versions=versions,
            rows=rows,
            source_fingerprint=staged.fingerprint,
            source_location=staged.location,
            engine=self.engine,
            notes=staged.notes,
        )
        self.store.discard_staging(self.dataset, self.run_id)
        result = IngestResult(
            self.dataset,
            self.run_id,
            "published",
            rows,
            staged.rejected,
            versions,
            warehouse_version,
            seconds=self._elapsed(),
        )
        self._record(result, staged, checks_passed=checks_passed)
        self.vacuum(list(versions))
        return result

    def block(
        self,
        *,
        outcomes: Sequence[quality.CheckOutcome] = (),
        checks_passed: int = 0,
        failed: Sequence[str] = (),
        error: str | None = None,
    ) -> IngestResult:
        """End a run that will not publish: drop its staged files, keep the published data, say why."""
        try:
            staged = self.staged()
        except CxrError:
            staged = None
        self.store.remove_uncommitted(self.dataset, self.run_id)  # a publish that failed between two commits
        self.store.discard_staging(self.dataset, self.run_id)
        status = "failed" if error else "blocked"
        failed = list(failed) or [check_name(o) for o in outcomes if not o.passed and o.blocking]
        message = error or ("failed checks: " + ", ".join(failed) if failed else None)
        result = IngestResult(
            self.dataset,
            self.run_id,
            status,
            staged.rows if staged else {},
            staged.rejected if staged else 0,
            outcomes=list(outcomes),
            message=message,
            seconds=self._elapsed(),
        )
        self._record(result, staged, checks_passed=checks_passed, checks_failed=len(failed))
        return result

    def run(self) -> IngestResult:
        """All steps in this process: the library's and the tests' way in."""
        try:
            self.stage()
            self.say("checking")
            outcomes = self.gate()
            failed = [o for o in outcomes if not o.passed and o.blocking]
            if failed:
                return self.block(outcomes=outcomes, checks_passed=sum(o.passed for o in outcomes))
            result = self.publish(checks_passed=len(outcomes))
            result.outcomes = outcomes
            return result
        except Exception as e:
            self.block(error=f"{type(e).__name__}: {e}")
            raise

    # --- helpers -----------------------------------------------------------------------------
    def _derive(self, staged: StagedDataset) -> dict:
        linked_id = dataset_info(self.dataset).links_to
        linked = publish_log.adopted(self.store).get(linked_id) if linked_id else None
        spill = scratch_dir("derive")
        con = derive_connection(self.store, {n: p.urls() for n, p in staged.partitions.items()}, linked, spill=spill)
        derived = {}
        try:
            for spec in DERIVED_TABLES:
                self.say(f"deriving {spec.name}")

                def stage(name: str = spec.name) -> StagedPartition:  # an out-of-memory try leaves no files
                    batches = compute_batches(con, name, self.dataset, linked_id)
                    return self.store.stage(name, self.dataset, batches, run_id=self.run_id)

                derived[spec.name] = beyond_limit_if_needed(con, stage)
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
            release_unused()  # DuckDB's result batches are written: the commits start without their pages
        return derived

    def vacuum(self, tables: list[str]) -> None:
        """Remove files retired longer ago than the retention period, never one a retained publish names."""
        hours = self.settings.retention_hours
        cutoff = time.time() - hours * 3600
        retained = publish_log.publishes(self.store)
        latest = {p.dataset: p for p in retained}  # oldest first, so the last one of each dataset wins
        for table in tables:
            keep = {
                p.versions[table]
                for p in retained
                if table in p.versions and (p.published_at.timestamp() >= cutoff or latest.get(p.dataset) == p)
            }
            self.store.vacuum(table, retention_hours=hours, keep_versions=sorted(keep))

    def _record(
        self, result: IngestResult, staged: StagedDataset | None, *, checks_passed: int, checks_failed: int = 0
    ) -> None:
        rows = dict(result.rows)
        record_run(
            self.store,
            {
                "run_id": self.run_id,
                "dataset": self.dataset,
                "engine": self.engine,
                "status": result.status,
                "started_at": self.started_at,
                "finished_at": now_iso(),
                "seconds": round(result.seconds, 3),
                "rows_written": sum(n for t, n in rows.items() if t != "quarantine" and t not in DERIVED_NAMES),
                "rows_rejected": result.rejected,
                "tables": rows,
                "versions": result.versions,
                "warehouse_version": result.warehouse_version,
                "checks_passed": checks_passed,
                "checks_failed": checks_failed,
                "message": result.message,
            },
        )

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started

"""Ingest steps as plain functions: find a dataset's source, read it, stage it, publish it.

The steps are separate so an orchestrator can run quality checks between staging and
publishing (the Dagster assets in pipelines/ do exactly that); `ingest()` chains them for the
library and for tests.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import polars as pl

from .catalog import record_run
from .config import Settings
from .conform import conform, empty
from .fetch import fetch_public
from .sources import dataset_info, get_adapter
from .sources.base import SourceFolder, SourceResult
from .recluster import recluster
from .schema import table as table_def
from .store import Manifest, StagedPartition, Store, new_version

Say = Callable[[str], None]
STAGE_WORKERS = 2


def _quiet(_: str) -> None:
    pass


@dataclass
class ReadDataset:
    dataset: str
    location: str
    result: SourceResult
    fingerprint: str
    files: list[dict]
    seconds: float


@dataclass
class StagedDataset:
    dataset: str
    version: str
    run_id: str
    partitions: dict[str, StagedPartition]
    rejected: int
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    started_at: str | None = None
    seconds: float | None = None

    @property
    def rows(self) -> dict[str, int]:
        return {name: p.rows for name, p in self.partitions.items()}


def source_location(settings: Settings, dataset_id: str, say: Say = _quiet) -> str:
    """The dataset's configured source, or its embedded default data (fetched or generated on first use)."""
    configured = settings.source_for(dataset_id)
    if configured:
        return configured
    info = dataset_info(dataset_id)
    if info.default_data == "public":
        return str(fetch_public(settings.cache, say=say).dataset_dir(dataset_id))
    from .samples.defaults import ensure_default_samples

    return str(ensure_default_samples(settings.cache, dataset_id, say=say))


def fingerprint_of(files: list[dict]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def declared_files(adapter, src: SourceFolder, related: dict[str, SourceFolder]) -> list[dict]:
    """Fingerprint entries of the files the adapter declares, plus those it reads from a linked dataset."""
    files = src.fingerprint(adapter.source_files(src))
    linked_files = getattr(adapter, "linked_source_files", None)
    if linked_files:
        for linked_id, folder in related.items():
            files += [{**entry, "file": f"{linked_id}:{entry['file']}"}
                      for entry in folder.fingerprint(linked_files(folder))]
    return files


def read_dataset(settings: Settings, dataset_id: str, say: Say = _quiet) -> ReadDataset:
    """Run the dataset's adapter over its source; nothing is written."""
    location = source_location(settings, dataset_id, say=say)
    src = SourceFolder(location, settings.storage_options)
    adapter = get_adapter(dataset_id)
    related = {}
    if adapter.info.links_to:
        linked = adapter.info.links_to
        related[linked] = SourceFolder(source_location(settings, linked, say=say), settings.storage_options)
    started = time.perf_counter()
    result = adapter.read(src, progress=say, related=related)
    # the fingerprint covers the files the adapter declares, as the change sensor computes it
    files = declared_files(adapter, src, related)
    return ReadDataset(dataset_id, location, result, fingerprint_of(files), files, time.perf_counter() - started)


def stage_dataset(store: Store, read: ReadDataset, *, run_id: str, version: str | None = None,
                  say: Say = _quiet) -> StagedDataset:
    """Write every table the dataset feeds (and its quarantine) as one new, unpublished version.

    Whole tables are staged first, two at a time; then any streamed tables; the quarantine last,
    so it includes rows rejected while streaming.
    """
    version = version or new_version()
    info = dataset_info(read.dataset)
    frames = read.result.tables
    whole = [name for name in info.tables if read.result.batches is None or name in frames]

    def stage(name: str, frame: pl.DataFrame | None) -> StagedPartition:
        table = conform(name, frame, read.dataset) if frame is not None and frame.width else empty(name)
        return store.stage(name, read.dataset, table, source_fingerprint=read.fingerprint, run_id=run_id,
                           version=version)

    staged: dict[str, StagedPartition] = {}
    try:
        # Tables are independent; polars and pyarrow release the GIL, so two workers use both cores.
        with ThreadPoolExecutor(max_workers=STAGE_WORKERS) as pool:
            futures = {pool.submit(stage, name, frames.get(name)): name for name in whole}
            failures = []
            for future in as_completed(futures):
                try:
                    staged[futures[future]] = future.result()
                    say(f"staging {futures[future]}")
                except BaseException as e:  # noqa: BLE001 - raised after the pool has drained
                    failures.append(e)
            if failures:
                raise failures[0]
        if read.result.batches is not None:
            staged.update(_stage_batches(store, read, run_id=run_id, version=version, say=say))
            # a fed table that received no chunk is empty in this version, not left at the old one
            for name in info.tables:
                if name not in staged:
                    staged[name] = stage(name, None)
        rejected = read.result.rejected()
        staged["quarantine"] = stage("quarantine", rejected)
    except BaseException:
        for partition in staged.values():
            store.discard(partition)
        raise
    # several bad values of one source row are one rejected row
    rejected_rows = rejected.unique(["source_file", "line_number", "row_number"]).height
    return StagedDataset(read.dataset, version, run_id, staged, rejected_rows, read.fingerprint,
                         list(read.result.notes))


def _stage_batches(store: Store, read: ReadDataset, *, run_id: str, version: str, say: Say) -> dict:
    """Write streamed chunks as they arrive: one open writer per table, bounded memory."""
    writers = {}
    try:
        for name, frame in read.result.batches:
            if name not in writers:
                writers[name] = store.writer(name, read.dataset, version=version, file_metadata={
                    "source_fingerprint": read.fingerprint, "run_id": run_id})
                say(f"streaming {name}")
            writers[name].write(conform(name, frame, read.dataset, sort=False))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    staged = {name: store.staged_from_writer(w, source_fingerprint=read.fingerprint, run_id=run_id)
              for name, w in writers.items()}
    try:
        for name, partition in staged.items():
            if table_def(name).recluster:
                say(f"sorting {name} ({partition.rows:,} rows) for row-group pruning")
                staged[name] = recluster(store, partition)
    except BaseException:
        for partition in staged.values():
            store.discard(partition)
        raise
    return staged


STAGING_DIR = "_staging"


def save_staged(store: Store, staged: StagedDataset, *, started_at: str | None = None,
                seconds: float | None = None) -> None:
    """Record what was staged, so a later step (checks, publish) can find exactly these files."""
    staged.started_at, staged.seconds = started_at, seconds
    doc = {"dataset": staged.dataset, "version": staged.version, "run_id": staged.run_id,
           "started_at": started_at, "seconds": seconds,
           "rejected": staged.rejected, "fingerprint": staged.fingerprint, "notes": staged.notes,
           "partitions": {name: {"files": p.files, "rows": p.rows, "extra": p.extra}
                          for name, p in staged.partitions.items()}}
    path = f"{store.root}/{STAGING_DIR}/{staged.dataset}.json"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, json.dumps(doc, indent=1, sort_keys=True).encode())


def load_staged(store: Store, dataset: str) -> StagedDataset:
    path = f"{store.root}/{STAGING_DIR}/{dataset}.json"
    try:
        doc = json.loads(store.fs.cat_file(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"nothing is staged for {dataset} (no {path})") from None
    partitions = {name: StagedPartition(store, name, dataset, doc["version"], p["files"], p["rows"],
                                        doc["fingerprint"], doc["run_id"], p.get("extra", {}))
                  for name, p in doc["partitions"].items()}
    return StagedDataset(dataset, doc["version"], doc["run_id"], partitions, doc["rejected"], doc["fingerprint"],
                         doc["notes"], doc.get("started_at"), doc.get("seconds"))


def clear_staged(store: Store, dataset: str) -> None:
    path = f"{store.root}/{STAGING_DIR}/{dataset}.json"
    if store.fs.exists(path):
        store.fs.rm_file(path)


def publish_dataset(store: Store, staged: StagedDataset) -> list[Manifest]:
    return [store.publish(p) for p in staged.partitions.values()]


def discard_dataset(store: Store, staged: StagedDataset) -> None:
    for partition in staged.partitions.values():
        store.discard(partition)


def current_fingerprint(settings: Settings, dataset_id: str) -> str | None:
    """The fingerprint of a dataset's source files now, without reading them whole or fetching anything.

    None when the dataset has no configured source and its default data is not prepared yet.
    """
    def prepared(dataset: str) -> SourceFolder | None:
        location = settings.source_for(dataset)
        if location is None:
            folder = settings.default_source(dataset, dataset_info(dataset).default_data)
            if not folder.exists():
                return None
            location = str(folder)
        return SourceFolder(location, settings.storage_options)

    src = prepared(dataset_id)
    if src is None:
        return None
    adapter = get_adapter(dataset_id)
    linked = adapter.info.links_to
    related = {linked: folder for folder in [prepared(linked)] if folder} if linked else {}
    return fingerprint_of(declared_files(adapter, src, related))


def published_fingerprint(store: Store, dataset_id: str) -> str | None:
    """The source fingerprint of the dataset's currently published data."""
    for manifest in store.manifests():
        if manifest.dataset == dataset_id and manifest.source_fingerprint:
            return manifest.source_fingerprint
    return None


def publish_staged(store: Store, dataset: str, *, run_id: str, engine: str, started_at: str, seconds: float,
                   checks_passed: int, checks_failed: int) -> StagedDataset:
    """Publish what this run staged (and only that), record the run, forget the staging."""
    staged = load_staged(store, dataset)
    if staged.run_id != run_id:
        raise RuntimeError(f"{dataset}: the staged version {staged.version} belongs to run {staged.run_id}, not "
                           f"{run_id}; stage and publish in one run so the quality checks gate what is published")
    publish_dataset(store, staged)
    clear_staged(store, dataset)
    record_run(store, run_record(run_id=run_id, dataset=dataset, engine=engine, status="published",
                                 started_at=started_at, seconds=seconds, staged=staged, checks_passed=checks_passed,
                                 checks_failed=checks_failed))
    return staged


def block_staged(store: Store, dataset: str, *, run_id: str, engine: str, started_at: str, seconds: float,
                 checks_passed: int, failed_checks: list[str]) -> None:
    """A run whose blocking checks failed: drop its staged files, keep the published data, say why."""
    try:
        staged = load_staged(store, dataset)
    except FileNotFoundError:
        staged = None
    if staged is not None and staged.run_id == run_id:
        discard_dataset(store, staged)
        clear_staged(store, dataset)
    record_run(store, run_record(run_id=run_id, dataset=dataset, engine=engine, status="blocked",
                                 started_at=started_at, seconds=seconds, staged=staged, checks_passed=checks_passed,
                                 checks_failed=len(failed_checks),
                                 message="failed checks: " + ", ".join(failed_checks) if failed_checks else None))


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_record(*, run_id: str, dataset: str, engine: str, status: str, started_at: str, seconds: float,
               staged: StagedDataset | None = None, checks_passed: int = 0, checks_failed: int = 0,
               message: str | None = None) -> dict:
    return {
        "run_id": run_id, "dataset": dataset, "engine": engine, "status": status, "started_at": started_at,
        "finished_at": now_iso(), "seconds": round(seconds, 3),
        "rows_written": sum(staged.rows.values()) - staged.rows.get("quarantine", 0) if staged else 0,
        "rows_rejected": staged.rejected if staged else 0, "tables": staged.rows if staged else {},
        "checks_passed": checks_passed, "checks_failed": checks_failed, "message": message,
    }


def ingest_dataset(settings: Settings, store: Store, dataset_id: str, *, run_id: str | None = None,
                   say: Say = _quiet) -> StagedDataset:
    """Read, stage and publish one dataset without checks (the orchestrated path adds them)."""
    run_id = run_id or new_run_id()
    started_at, started = now_iso(), time.perf_counter()
    try:
        read = read_dataset(settings, dataset_id, say=say)
        staged = stage_dataset(store, read, run_id=run_id, say=say)
        publish_dataset(store, staged)
    except Exception as e:
        record_run(store, run_record(run_id=run_id, dataset=dataset_id, engine="library", status="failed",
                                     started_at=started_at, seconds=time.perf_counter() - started, message=str(e)))
        raise
    record_run(store, run_record(run_id=run_id, dataset=dataset_id, engine="library", status="published",
                                 started_at=started_at, seconds=time.perf_counter() - started, staged=staged))
    return staged

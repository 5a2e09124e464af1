"""The first half of an ingest: find a dataset's source, read it with its adapter, stage its tables.

Staging writes every table the dataset feeds (and its quarantine) under the run's own staging
folder; `warehouse.gated.GatedIngest` then gates, derives and commits them. Nothing here is
visible to a reader of the warehouse.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from .config import Settings
from .conform import conform, conform_slices, empty
from .fetch import fetch_public
from .memory import release_unused
from .recluster import recluster
from .schema import table as table_def
from .sources import dataset_info, get_adapter
from .sources.base import SourceFolder, SourceResult
from .store import ROW_GROUP_ROWS, STAGING_RECORD, StagedPartition, Store, StoreError

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
    run_id: str
    partitions: dict[str, StagedPartition]
    rejected: int
    fingerprint: str
    location: str | None = None
    notes: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # the source files read, as fingerprinted
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
            files += [
                {**entry, "file": f"{linked_id}:{entry['file']}"} for entry in folder.fingerprint(linked_files(folder))
            ]
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


def stage_dataset(store: Store, read: ReadDataset, *, run_id: str, say: Say = _quiet) -> StagedDataset:
    """Write every table the dataset feeds (and its quarantine) into the run's staging folder.

    Whole tables are staged first, two at a time; then any streamed tables; the quarantine last,
    so it includes rows rejected while streaming. On any failure the run's staging folder goes.
    """
    info = dataset_info(read.dataset)
    frames = read.result.tables
    whole = [name for name in info.tables if read.result.batches is None or name in frames]

    def stage(name: str) -> StagedPartition:
        # taken out of the read result, so each adapter frame is freed once its sorted canonical frame exists
        frame = frames.pop(name, None)
        if frame is None or not frame.width:
            return store.stage(name, read.dataset, empty(name), run_id=run_id)
        slices = conform_slices(name, frame, read.dataset, rows=ROW_GROUP_ROWS, origin=info.links_to)
        del frame  # the slices hold it until it is sorted
        return store.stage(name, read.dataset, slices, run_id=run_id)

    staged: dict[str, StagedPartition] = {}
    try:
        # Tables are independent; polars and pyarrow release the GIL, so two workers use both cores.
        with ThreadPoolExecutor(max_workers=STAGE_WORKERS) as pool:
            futures = {pool.submit(stage, name): name for name in whole}
            failures = []
            for future in as_completed(futures):
                try:
                    staged[futures[future]] = future.result()
                    say(f"staging {futures[future]}")
                except BaseException as e:
                    failures.append(e)
            if failures:
                raise failures[0]
        if read.result.batches is not None:
            staged.update(_stage_batches(store, read, run_id=run_id, say=say))
            # a fed table that received no chunk is empty in this version, not left at the old one
            for name in info.tables:
                if name not in staged:
                    staged[name] = stage(name)
        frames["quarantine"] = read.result.rejected()
        # several bad values of one source row are one rejected row
        rejected_rows = frames["quarantine"].unique(["source_file", "line_number", "row_number"]).height
        staged["quarantine"] = stage("quarantine")
    except BaseException:
        store.discard_staging(read.dataset, run_id)
        raise
    release_unused()  # the conformed slices are written: the gates start without their pages
    return StagedDataset(
        read.dataset,
        run_id,
        staged,
        rejected_rows,
        read.fingerprint,
        read.location,
        list(read.result.notes),
        read.files,
    )


def _stage_batches(store: Store, read: ReadDataset, *, run_id: str, say: Say) -> dict:
    """Write streamed chunks as they arrive: one open writer per table, bounded memory."""
    writers = {}
    assert read.result.batches is not None, "called only for a dataset that streams"
    for name, frame in read.result.batches:
        if name not in writers:
            writers[name] = store.writer(name, read.dataset, run_id)
            say(f"streaming {name}")
        writers[name].write(conform(name, frame, read.dataset, sort=False, origin=dataset_info(read.dataset).links_to))
    staged = {name: store.staged_from_writer(w) for name, w in writers.items()}
    for name, partition in staged.items():
        if table_def(name).recluster:
            say(f"sorting {name} ({partition.rows:,} rows) for row-group pruning")
            staged[name] = recluster(store, partition)
    return staged


def save_staged(store: Store, staged: StagedDataset) -> None:
    """Record what this run staged, in the run's own staging folder: the gates and the publish read exactly it."""
    doc = {
        "dataset": staged.dataset,
        "run_id": staged.run_id,
        "started_at": staged.started_at,
        "seconds": staged.seconds,
        "rejected": staged.rejected,
        "fingerprint": staged.fingerprint,
        "location": staged.location,
        "notes": staged.notes,
        "files": staged.files,
        "partitions": {
            name: {"files": p.files, "rows": p.rows, "extra": p.extra} for name, p in staged.partitions.items()
        },
    }
    path = f"{store.staging_dir(staged.dataset, staged.run_id)}/{STAGING_RECORD}"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, json.dumps(doc, indent=1, sort_keys=True).encode())


def load_staged(store: Store, dataset: str, run_id: str) -> StagedDataset:
    path = f"{store.staging_dir(dataset, run_id)}/{STAGING_RECORD}"
    try:
        doc = json.loads(store.fs.cat_file(path))
    except FileNotFoundError:
        raise StoreError(
            f"run {run_id} staged nothing for {dataset} (no {path}); stage and publish in one run, "
            "so the quality gates check what is published"
        ) from None
    partitions = {
        name: StagedPartition(store, name, dataset, run_id, p["files"], p["rows"], p.get("extra", {}))
        for name, p in doc["partitions"].items()
    }
    return StagedDataset(
        dataset,
        run_id,
        partitions,
        doc["rejected"],
        doc["fingerprint"],
        doc.get("location"),
        doc["notes"],
        doc.get("files", []),
        doc.get("started_at"),
        doc.get("seconds"),
    )


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
    folder = prepared(linked) if linked else None
    related = {linked: folder} if linked and folder else {}
    return fingerprint_of(declared_files(adapter, src, related))


def published_fingerprint(store: Store, dataset_id: str) -> str | None:
    """The source fingerprint of the dataset's newest complete publish."""
    from . import publish_log

    latest = publish_log.adopted(store).get(dataset_id)
    return latest.source_fingerprint if latest else None


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]

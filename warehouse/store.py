"""The table layer: every table is a Delta Lake table under the warehouse root.

Layout: <root>/<table>/_delta_log/… and <root>/<table>/dataset=<id>/[split=<s>/]part-….parquet,
written by delta-rs (`deltalake`). Partition values live in the paths only, as the Delta protocol
says, so Delta readers (deltalake, polars, Spark, Trino, DuckDB's delta extension) see exactly one
version, and the log's paths are relative, so the folder can be copied or moved.

A dataset's rows reach a table in two steps. Staging writes them, already as the table's data files,
under <root>/_staging/<dataset>/<run id>/<table>/dataset=<id>/, where the quality gates read them;
no Delta reader looks there. Committing moves the staged files into the table and registers them in
one Delta commit that replaces the dataset's partition (an overwrite with a predicate). Each commit
carries the dataset and run id in its commit info, so a table's history says which run wrote what. Old versions stay until the
retention vacuum, which keeps every version a publish record in the retention window names.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import CxrError
from .schema import Table
from .schema import table as table_def
from .scratch import process_alive

ROW_GROUP_ROWS = 128 * 1024
FILE_ROWS = 4 * 1024 * 1024
STAGING_DIR = "_staging"
STAGING_RECORD = "staged.json"  # what a run staged, written in its staging folder
STAGING_OWNER = "owner.json"  # which processes are running it
STALE_STAGING_SECONDS = 6 * 3600  # a staging folder this old belongs to no live run
COMMIT_ATTEMPTS = 40  # a commit that lost a race to another dataset's commit is retried on the new version


class StoreError(CxrError):
    """A table could not be written, committed or read."""


def partition_columns(table: Table) -> list[str]:
    return ["dataset", *([table.subpartition] if table.subpartition else [])]


def delta_storage_options(root_url: str, fsspec_options: dict) -> dict[str, str]:
    """The delta-rs (object_store) options equivalent to the fsspec options the rest of the project uses.

    Upper-case keys (AWS_…) pass through unchanged, so any delta-rs setting can be given directly,
    e.g. AWS_CONDITIONAL_PUT (see docs/scale-out.md: delta-rs 1.x commits with conditional writes).
    """
    if "://" not in root_url or root_url.startswith("file://"):
        return {}
    options = {k: str(v) for k, v in fsspec_options.items() if k.isupper()}
    client = fsspec_options.get("client_kwargs") or {}
    endpoint = fsspec_options.get("endpoint_url") or client.get("endpoint_url")
    mapped = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": fsspec_options.get("key"),
        "AWS_SECRET_ACCESS_KEY": fsspec_options.get("secret"),
        "AWS_SESSION_TOKEN": fsspec_options.get("token"),
        "AWS_REGION": client.get("region_name") or fsspec_options.get("region_name"),
    }
    options.update({k: str(v) for k, v in mapped.items() if v and k not in options})
    if endpoint and str(endpoint).startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    return options


@dataclass
class StagedPartition:
    """Files of one table's new rows for a dataset, written under the run's staging folder."""

    store: "Store"
    table: str
    dataset: str
    run_id: str
    files: list[dict]  # {"path": relative to the staged table folder, "rows": n, "bytes": n}
    rows: int
    extra: dict = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return self.store.staged_table_dir(self.dataset, self.run_id, self.table)

    def urls(self) -> list[str]:
        return [self.store.url(f"{self.folder}/{f['path']}") for f in self.files]


class PartitionWriter:
    """Streams record batches into the staged files of one table of one run, already as Delta data files.

    The files are what the commit registers: no partition columns inside (the folders say them), zstd, whole
    row groups of `row_group_rows` rows (rows wait until one fills, whatever size the batches come in), and the
    Delta statistics gathered while writing. The commit then only moves them into the table: it rewrote every
    staged row before (3.0 s of an 18 s NIH + CheXpert ingest).
    """

    def __init__(
        self,
        store: "Store",
        table: Table,
        dataset: str,
        run_id: str,
        *,
        file_rows: int = FILE_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
        first_file_index: int = 0,
        folder: str | None = None,
    ):
        self.store, self.table, self.dataset, self.run_id = store, table, dataset, run_id
        self.folder = folder or store.staged_table_dir(dataset, run_id, table.name)
        self.file_rows, self.row_group_rows = file_rows, row_group_rows
        self.schema = table.schema
        keys = partition_columns(table)
        self.data_schema = pa.schema([f for f in table.schema if f.name not in keys])
        self._open: dict[str | None, tuple[pq.ParquetWriter, IO[bytes], str, int, _Stats]] = {}
        self._pending: dict[str | None, pa.Table] = {}  # rows waiting for their row group to fill
        self._counter = first_file_index  # a rewrite of staged files names its files after the old ones
        self.files: list[dict] = []

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rows (already in canonical schema and order); splits by the sub-partition key."""
        if data.num_rows == 0:
            return
        data = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        data = data.cast(self.schema) if data.schema != self.schema else data
        key = self.table.subpartition
        if key is None:
            self._write_part(None, data.select(self.data_schema.names))
            return
        if data.column(key).null_count:  # such a row has no folder to go to, and the split below would drop it
            raise StoreError(
                f"{self.table.name}/dataset={self.dataset}: {data.column(key).null_count} rows have no {key} value"
            )
        for value in data.column(key).unique().to_pylist():
            self._write_part(value, data.filter(pc.equal(data.column(key), value)).select(self.data_schema.names))

    def _write_part(self, sub: str | None, data: pa.Table) -> None:
        if sub in self._pending:
            data = pa.concat_tables([self._pending.pop(sub), data])
        offset = 0
        while data.num_rows - offset >= (size := self._next_group_rows(sub)):
            self._write_group(sub, data.slice(offset, size))
            offset += size
        if offset < data.num_rows:
            self._pending[sub] = data.slice(offset)

    def _next_group_rows(self, sub: str | None) -> int:
        """The rows the next row group takes: a whole group, or what fills the open file."""
        rows_in_file = self._open[sub][3] if sub in self._open else 0
        return min(self.row_group_rows, self.file_rows - rows_in_file)

    def _write_group(self, sub: str | None, group: pa.Table) -> None:
        """One row group; it fits the open file, being at most `_next_group_rows` rows."""
        writer, handle, rel, rows, stats = self._writer(sub)
        writer.write_table(group, row_group_size=self.row_group_rows)
        stats.add(group)
        self._open[sub] = (writer, handle, rel, rows + group.num_rows, stats)
        if rows + group.num_rows >= self.file_rows:
            self._finish(sub)

    def _writer(self, sub: str | None):
        if sub not in self._open:
            sub_dir = f"{self.table.subpartition}={sub}/" if sub is not None else ""
            rel = f"{sub_dir}part-{self._counter:05d}.parquet"
            self._counter += 1
            path = f"{self.folder}/{rel}"
            self.store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            handle = self.store.fs.open(path, "wb")
            writer = pq.ParquetWriter(
                handle, self.data_schema, compression="zstd", compression_level=3, write_statistics=True
            )
            self._open[sub] = (writer, handle, rel, 0, _Stats(self.data_schema))
        return self._open[sub]

    def _finish(self, sub: str | None) -> None:
        writer, handle, rel, rows, stats = self._open.pop(sub)
        writer.close()
        handle.close()
        size = self.store.fs.info(f"{self.folder}/{rel}")["size"]
        self.files.append({"path": rel, "rows": rows, "bytes": int(size), "stats": stats.to_json()})

    def close(self) -> list[dict]:
        for sub in list(self._pending):
            self._write_group(sub, self._pending.pop(sub))
        for sub in list(self._open):
            self._finish(sub)
        return sorted(self.files, key=lambda f: f["path"])

    def abort(self) -> None:
        self._pending.clear()
        for sub in list(self._open):
            writer, handle, _, _, _ = self._open.pop(sub)
            try:
                writer.close()
            finally:
                handle.close()
        self.store.remove_tree(self.folder)
        self.files = []


class Store:
    def __init__(self, root: str, storage_options: dict | None = None):
        self.root_url = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        fs_options = {k: v for k, v in self.storage_options.items() if not k.isupper()}
        self.fs, self.root = fsspec.core.url_to_fs(self.root_url, **fs_options)
        self.root = self.root.rstrip("/")
        _refuse_partition_like(self.root_url, self.root)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = protocol
        self.local = protocol in ("file", "local")
        self.delta_options = delta_storage_options(self.root_url, self.storage_options)
        self._snapshots: dict[tuple[str, int], object] = {}  # (table, version) -> DeltaTable: versions never change
        self._commit_infos: dict[tuple[str, int], dict] = {}  # (table, version) -> its commitInfo: never changes

    def __repr__(self) -> str:
        return f"Store({self.root_url!r})"

    # --- paths ---------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """A path as DuckDB, delta-rs and people should see it (a local path, or protocol://…)."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def table_uri(self, table: str) -> str:
        return self.url(f"{self.root}/{table}")

    def exists(self) -> bool:
        return self.fs.exists(self.root)

    def staging_dir(self, dataset: str, run_id: str) -> str:
        return f"{self.root}/{STAGING_DIR}/{dataset}/{run_id}"

    def staged_table_dir(self, dataset: str, run_id: str, table: str) -> str:
        """Where a run's files of a table wait, under the Delta table's own partition path (dataset=…/[split=…/])."""
        return f"{self.staging_dir(dataset, run_id)}/{table}/dataset={dataset}"

    def remove_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # --- staging -------------------------------------------------------------------------
    def writer(self, table: str, dataset: str, run_id: str, **options) -> PartitionWriter:
        return PartitionWriter(self, table_def(table), dataset, run_id, **options)

    def stage(
        self, table: str, dataset: str, data: pa.Table | Iterable[pa.Table | pa.RecordBatch], *, run_id: str, **options
    ) -> StagedPartition:
        """Write a table's rows for a dataset (already sorted), whole or part by part as they come, into the
        run's staging folder."""
        writer = self.writer(table, dataset, run_id, **options)
        try:
            for part in [data] if isinstance(data, pa.Table) else data:
                writer.write(part)
            return self.staged_from_writer(writer)
        except BaseException:
            writer.abort()
            raise

    def staged_from_writer(self, writer: PartitionWriter, *, extra: dict | None = None) -> StagedPartition:
        files = writer.close()
        return StagedPartition(
            self,
            writer.table.name,
            writer.dataset,
            writer.run_id,
            files,
            sum(f["rows"] for f in files),
            dict(extra or {}),
        )

    def discard_staging(self, dataset: str, run_id: str) -> None:
        self.remove_tree(self.staging_dir(dataset, run_id))

    def claim_staging(self, dataset: str, run_id: str) -> None:
        """Say which processes own a run's staging folder, so a later run can tell a dead run's debris.

        A process started by `multiprocessing` (as Dagster's multiprocess executor starts each step) names
        its parent too: the run worker, which lives as long as the run does.
        """
        parent = multiprocessing.parent_process()
        pids = [os.getpid(), *([parent.pid] if parent is not None and parent.pid else [])]
        owner = {"host": socket.gethostname(), "pids": pids, "at": time.time()}
        path = f"{self.staging_dir(dataset, run_id)}/{STAGING_OWNER}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, json.dumps(owner).encode())

    def remove_stale_staging(self, dataset: str, *, keep: str, now: float | None = None) -> list[str]:
        """Remove staging folders of the dataset left by runs that died.

        A folder is dead when the processes that claimed it on this host are all gone, or, whatever the
        host, when it is older than STALE_STAGING_SECONDS.
        """
        now = time.time() if now is None else now
        base = f"{self.root}/{STAGING_DIR}/{dataset}"
        removed: list[str] = []
        try:
            entries = self.fs.ls(base, detail=True)
        except FileNotFoundError:
            return removed
        for entry in entries:
            name = entry["name"].rstrip("/")
            if name.rsplit("/", 1)[-1] == keep or entry["type"] != "directory":
                continue
            old = now - _modified(self.fs, f"{name}/{STAGING_OWNER}", fallback=name) > STALE_STAGING_SECONDS
            if old or self._owner_gone(f"{name}/{STAGING_OWNER}"):
                removed += self.remove_uncommitted(dataset, name.rsplit("/", 1)[-1])
                self.remove_tree(name)
                removed.append(self.url(name))
        return removed

    def remove_uncommitted(self, dataset: str, run_id: str) -> list[str]:
        """Data files a run moved into a table but never committed (a commit it had made stays): a dead run's, or
        those of a publish that failed between two commits."""
        removed = []
        for table in self._tables_with_partition(dataset):
            written = [
                p
                for p in self.fs.find(f"{self.root}/{table}/dataset={dataset}")
                if p.rsplit("/", 1)[-1].startswith(f"part-{run_id}-")
            ]
            if not written:
                continue
            committed = {self.fs._strip_protocol(u) for u in self.delta(table).file_uris()}
            for path in written:
                if self.fs._strip_protocol(path) not in committed:
                    self.fs.rm_file(path)
                    removed.append(self.url(path))
        return removed

    def _tables_with_partition(self, dataset: str) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"]
        return [n for n in names if not n.startswith("_") and self.fs.exists(f"{self.root}/{n}/dataset={dataset}")]

    def _owner_gone(self, path: str) -> bool:
        try:
            owner = json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return False
        if owner.get("host") != socket.gethostname():
            return False
        return not any(process_alive(pid) for pid in owner.get("pids", []) if pid > 1)

    # --- committing ----------------------------------------------------------------------
    def commit(self, staged: StagedPartition) -> int:
        """Replace the dataset's partition of the table by the staged rows in one Delta commit; its version.

        The staged files are the data files, written in the staged (sorted) order with our row groups: they move
        into the table and are committed with `create_write_transaction` (an overwrite of the dataset's
        partition). delta-rs's own writer would reorder rows across batches, and the sort order is what
        row-group pruning needs. Files moved but never committed (a killed run) are invisible to Delta
        readers: a run that ends without publishing removes them (`GatedIngest.block`), and the next run of the
        dataset those of a killed run, with its staging.
        """
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        spec = table_def(staged.table)
        dt = self.ensure_table(spec)
        actions = self._move_data_files(staged, spec)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            read_version = dt.version()
            try:
                dt.create_write_transaction(
                    actions,
                    mode="overwrite",
                    schema=spec.schema,
                    partition_by=partition_columns(spec),
                    partition_filters=[("dataset", "=", staged.dataset)],
                    commit_properties=CommitProperties(
                        custom_metadata={
                            "cxr.dataset": staged.dataset,
                            "cxr.run_id": staged.run_id,
                            "cxr.rows": str(staged.rows),
                        }
                    ),
                )
                break
            except CommitFailedError as e:
                # delta-rs counts the partition overwrite as reading the whole table, so another dataset's commit
                # in between (two runs at once: dagster.yaml allows two) fails it. The files are written; only
                # the log entry is retried, against the table as it now is, where it replaces this dataset alone.
                if attempt == COMMIT_ATTEMPTS:
                    raise StoreError(
                        f"cannot commit {staged.table}/dataset={staged.dataset}: {attempt} attempts lost to "
                        f"concurrent commits: {e}"
                    ) from e
                time.sleep(random.uniform(0.005, 0.05) * min(attempt, 10))
                dt = self.delta(spec.name)
        return self.version_of_commit(spec.name, staged.dataset, staged.run_id, after=read_version)

    def _move_data_files(self, staged: StagedPartition, spec: Table) -> list:
        """Move the staged files (already Delta data files, statistics gathered) into the table; their add actions.

        A file already in its place was moved by an earlier attempt at this publish (a retried step)."""
        from deltalake.transaction import AddAction

        table_dir = f"{self.root}/{spec.name}"
        actions = []
        for n, f in enumerate(staged.files):
            where = f"cannot commit {staged.table}/dataset={staged.dataset}"
            if "stats" not in f:
                raise StoreError(f"{where}: run {staged.run_id} was staged by an older version; ingest it again")
            values = _partition_values(staged, spec, f)
            sub = "/".join(f"{key}={value}" for key, value in values.items())
            rel = f"{sub}/part-{staged.run_id}-{n:05d}.zstd.parquet"
            source, target = f"{staged.folder}/{f['path']}", f"{table_dir}/{rel}"
            if self.fs.exists(source):
                self.fs.makedirs(f"{table_dir}/{sub}", exist_ok=True)
                self.fs.mv(source, target)
            elif not self.fs.exists(target):
                raise StoreError(f"{where}: staged file {source} is missing")
            actions.append(AddAction(rel, int(f["bytes"]), values, int(time.time() * 1000), True, f["stats"]))
        return actions

    def _staged_batches(self, staged: StagedPartition, spec: Table):
        """The staged rows, file by file in order, with the partition columns the paths hold put back."""
        for f in staged.files:
            values = _partition_values(staged, spec, f)
            with self.fs.open(f"{staged.folder}/{f['path']}", "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=ROW_GROUP_ROWS):
                    columns = {
                        name: pa.array([values[name]] * batch.num_rows, pa.string())
                        if name in values
                        else batch.column(name)
                        for name in spec.column_names
                    }
                    yield pa.RecordBatch.from_pydict(columns).cast(spec.schema)

    def ensure_table(self, spec: Table):
        """The Delta table, created (empty) first if it does not exist yet, so a partition overwrite has a target."""
        from deltalake import DeltaTable

        uri = self.table_uri(spec.name)
        try:
            exists = DeltaTable.is_deltatable(uri, storage_options=self.delta_options or None)
        except OSError as e:  # e.g. a file where the table's folder goes
            raise StoreError(f"cannot open Delta table {uri}: {e}") from e
        if exists:
            return self.delta(spec.name)
        try:
            DeltaTable.create(
                uri,
                schema=spec.schema,
                partition_by=partition_columns(spec),
                mode="ignore",
                name=spec.name,
                description=spec.description,
                storage_options=self.delta_options or None,
            )
        except Exception as e:  # another run created it at the same moment
            if not DeltaTable.is_deltatable(uri, storage_options=self.delta_options or None):
                raise StoreError(f"cannot create Delta table {uri}: {e}") from e
        return self.delta(spec.name)

    def version_of_commit(self, table: str, dataset: str, run_id: str, *, after: int = -1) -> int:
        """The version a run's commit for a dataset got, from the log's own commit files.

        Not from delta-rs's `history()`: it numbers the commits it lists by counting down from the version it
        loaded, so a commit another process made in between shifts every number by one. `after` is a version
        known to precede the commit (the one it was made against), so the search usually reads one file.
        """
        version = after + 1
        while (info := self.commit_info(table, version)) is not None:
            if info.get("cxr.run_id") == run_id and info.get("cxr.dataset") == dataset:
                return version
            version += 1
        raise StoreError(f"{table}: the commit of run {run_id} for {dataset} is not in the table's log")

    def commit_info(self, table: str, version: int) -> dict | None:
        """The commitInfo of one version, read from `_delta_log/<version>.json`; None when there is no such file."""
        if (table, version) in self._commit_infos:
            return self._commit_infos[(table, version)]
        try:
            text = self.fs.cat_file(f"{self.table_uri(table)}/_delta_log/{version:020d}.json").decode()
        except FileNotFoundError:
            return None
        info: dict = {}
        for line in text.splitlines():
            if line.startswith('{"commitInfo"'):
                info = json.loads(line)["commitInfo"]
                break
        else:  # the protocol allows commitInfo anywhere in the file
            for line in filter(None, map(str.strip, text.splitlines())):
                action = json.loads(line)
                if "commitInfo" in action:
                    info = action["commitInfo"]
                    break
        self._commit_infos[(table, version)] = info
        return info

    # --- reading -------------------------------------------------------------------------
    def delta(self, table: str, version: int | None = None):
        """The Delta table (at a version), or None when it does not exist yet.

        A table at a given version is loaded once per Store: a version's log never changes, and a catalog
        rebuild asks for the same versions for every partition (each load lists and reads the log, which
        over S3 is a dozen requests)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if version is not None and (table, version) in self._snapshots:
            return self._snapshots[(table, version)]
        try:
            dt = DeltaTable(self.table_uri(table), version=version, storage_options=self.delta_options or None)
        except TableNotFoundError:
            return None
        if version is not None:
            if len(self._snapshots) >= 256:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[(table, version)] = dt
        return dt

    def partition_files(self, table: str, dataset: str, version: int) -> list[dict]:
        """The data files of a dataset's partition at a table version: url, rows and bytes of each."""
        dt = self.delta(table, version)
        if dt is None:
            return []
        actions = pa.table(dt.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return []
        mask = pc.equal(actions.column("partition.dataset"), dataset)
        chosen = actions.filter(mask).select(["path", "num_records", "size_bytes"]).to_pylist()
        base = f"{self.root}/{table}"
        return [
            {
                "url": self.url(f"{base}/{a['path']}"),
                "rows": int(a["num_records"] or 0),
                "bytes": int(a["size_bytes"] or 0),
            }
            for a in sorted(chosen, key=lambda a: a["path"])
        ]

    def read_staged(self, table: str, staged: StagedPartition) -> pa.Table:
        """A staged table's rows (for previews and tests)."""
        spec = table_def(table)
        return pa.Table.from_batches(list(self._staged_batches(staged, spec)), schema=spec.schema)

    def columns_at(self, table: str, version: int) -> list[str]:
        dt = self.delta(table, version)
        return [f.name for f in dt.schema().fields] if dt is not None else []

    def read(self, table: str, dataset: str, version: int | None = None) -> pa.Table:
        """One dataset's rows of a table at a version (default: the current one), in file and row order.

        For tests and metadata; queries go through the catalog.
        """
        import pyarrow.dataset as pads  # imports pandas: not on the query path

        spec = table_def(table)
        dt = self.delta(table, version)
        if dt is None:
            return spec.schema.empty_table()
        files = [f["url"] for f in self.partition_files(table, dataset, dt.version())]
        if not files:
            return spec.schema.empty_table()
        filesystem = None if self.local else pa.fs.PyFileSystem(pa.fs.FSSpecHandler(self.fs))
        paths = files if self.local else [self.fs._strip_protocol(f) for f in files]
        data = pads.dataset(
            paths,
            format="parquet",
            filesystem=filesystem,
            partitioning=pads.partitioning(
                flavor="hive", schema=pa.schema([(c, pa.string()) for c in partition_columns(spec)])
            ),
            partition_base_dir=self.fs._strip_protocol(self.table_uri(table)),
        ).to_table()
        return data.select([c for c in spec.column_names if c in data.column_names])

    # --- housekeeping --------------------------------------------------------------------
    def vacuum(self, table: str, *, retention_hours: float, keep_versions: list[int]) -> list[str]:
        """Remove data files retired more than `retention_hours` ago, except those of `keep_versions`.

        A dry run without the kept versions comes first: it only compares the log with a listing, while keeping
        versions loads the table state at each of them, which grows with every publish in the retention window
        and ran after every publish of every table. The dry run also names retired files a previous vacuum already
        removed (their tombstones stay in the log), so only candidates still on storage call for the real vacuum.
        """
        dt = self.delta(table)
        if dt is None:
            return []
        candidates = dt.vacuum(retention_hours=int(retention_hours), dry_run=True, enforce_retention_duration=False)
        if not candidates:
            return []
        base = self.fs._strip_protocol(self.table_uri(table)).rstrip("/")

        def relative(path: str) -> str:  # delta-rs names a file relative to the table or as a full URI, by call
            absolute = "://" in path or path.startswith("/")
            return (self.fs._strip_protocol(path).removeprefix(base) if absolute else path).lstrip("/")

        present = {self.fs._strip_protocol(p).removeprefix(base).lstrip("/") for p in self.fs.find(base)}
        if not any(relative(c) in present for c in candidates):
            return []
        return dt.vacuum(
            retention_hours=int(retention_hours),
            dry_run=False,
            enforce_retention_duration=False,
            keep_versions=sorted(set(keep_versions)) or None,
        )


class _Stats:
    """Delta file statistics (numRecords, per-column min, max and null count) gathered while writing."""

    def __init__(self, schema: pa.Schema):
        self.rows = 0
        self.nulls = {f.name: 0 for f in schema}
        self.ranged = [
            f.name
            for f in schema
            if pa.types.is_integer(f.type)
            or pa.types.is_floating(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_date(f.type)
        ]
        self.low: dict = {}
        self.high: dict = {}

    def add(self, data: pa.Table) -> None:
        self.rows += data.num_rows
        for name in self.nulls:
            self.nulls[name] += data.column(name).null_count
        for name in self.ranged:
            bounds = pc.min_max(data.column(name)).as_py()
            if bounds["min"] is None:
                continue
            if name not in self.low or bounds["min"] < self.low[name]:
                self.low[name] = bounds["min"]
            if name not in self.high or bounds["max"] > self.high[name]:
                self.high[name] = bounds["max"]

    def to_json(self) -> str:
        def usable(v) -> bool:  # long strings would need truncation rules; NaN has no order
            return not (isinstance(v, str) and len(v) > 64) and not (isinstance(v, float) and v != v)

        low = {
            k: str(v) if hasattr(v, "isoformat") else v
            for k, v in self.low.items()
            if usable(v) and usable(self.high[k])
        }
        high = {k: str(self.high[k]) if hasattr(self.high[k], "isoformat") else self.high[k] for k in low}
        return json.dumps({"numRecords": self.rows, "minValues": low, "maxValues": high, "nullCount": self.nulls})


def _partition_values(staged: StagedPartition, spec: Table, file: dict) -> dict[str, str]:
    """A staged file's partition values, in the table's partition order: the dataset, and the sub-partition
    value its folder names (`split=train/part-00000.parquet`)."""
    values = {"dataset": staged.dataset}
    if spec.subpartition:
        values[spec.subpartition] = file["path"].split("/", 1)[0].split("=", 1)[1]
    return values


def _refuse_partition_like(root_url: str, root: str) -> None:
    """A root with a `key=value` folder in its path would be read as a column: DuckDB takes Hive partition values
    from the whole path, the first one of a name winning, so `…/dataset=prod/…` would give every row that dataset."""
    for folder in root.split("/"):
        if "=" in folder:
            raise StoreError(
                f"warehouse root {root_url!r}: its folder {folder!r} looks like a partition (key=value), and readers "
                "would take it for a column of every table; choose a root without '=' in its path"
            )


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _modified(fs, path: str, *, fallback: str | None = None) -> float:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return _modified(fs, fallback) if fallback else 0.0
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(stamp, datetime):
        return stamp.replace(tzinfo=stamp.tzinfo or UTC).timestamp()
    try:
        return float(stamp)
    except (TypeError, ValueError):
        return time.time()  # unknown age: treat as live

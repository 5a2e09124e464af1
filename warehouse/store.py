"""The Parquet store: Hive-partitioned tables whose partitions are replaced atomically.

Layout: <root>/<table>/dataset=<id>/[split=<s>/]part-<version>-<n>.parquet, plus one small
pointer per partition, <root>/<table>/dataset=<id>/_manifest.json, naming the files of the
current version. (Hive readers skip names starting with `_`.)

Publishing a partition works the same on a local disk and on an object store, which has no
rename: the new version's files are written beside the old ones under new names (staging),
then the manifest is replaced in one step (a local atomic rename, or a single object PUT).
Until that step nothing points at the new files; after it, nothing points at the old ones. A
write that fails or is killed midway leaves the previous manifest, and so the previous
partition, exactly as it was. Files no manifest names are removed later by `collect_garbage`,
after the catalog has switched to the new files (as Iceberg and DuckLake expire snapshots).
"""
from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import SCHEMA_VERSION, Table, table as table_def

MANIFEST = "_manifest.json"
ROW_GROUP_ROWS = 128 * 1024
FILE_ROWS = 4 * 1024 * 1024
ORPHAN_GRACE_SECONDS = 6 * 3600  # unreferenced files newer than this may belong to a run in flight


class StoreError(RuntimeError):
    """A partition could not be written, published or read."""


def new_version() -> str:
    """A version id that sorts by creation time: 20261123T101530123456Z-3f9a."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


def _version_of(file_name: str) -> str | None:
    # part-<version>-<n>.parquet, where version itself contains one '-'
    if not (file_name.startswith("part-") and file_name.endswith(".parquet")):
        return None
    stem = file_name[len("part-"):-len(".parquet")]
    version, _, _ = stem.rpartition("-")
    return version or None


@dataclass
class Manifest:
    table: str
    dataset: str
    version: str
    files: list[dict]                  # {"path": relative to the partition dir, "rows": n, "bytes": n}
    rows: int
    created_at: str
    schema_version: int = SCHEMA_VERSION
    source_fingerprint: str | None = None
    run_id: str | None = None
    extra: dict = field(default_factory=dict)
    columns: list[str] | None = None   # the files' columns; older partitions may lack newer ones

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        return cls(**json.loads(data))


@dataclass
class StagedPartition:
    """Files of a new partition version, written but not yet visible to readers."""

    store: "Store"
    table: str
    dataset: str
    version: str
    files: list[dict]
    rows: int
    source_fingerprint: str | None = None
    run_id: str | None = None
    extra: dict = field(default_factory=dict)

    def urls(self) -> list[str]:
        return [self.store.url(f"{self.store.partition_dir(self.table, self.dataset)}/{f['path']}")
                for f in self.files]


class PartitionWriter:
    """Streams record batches into the staged files of one partition version."""

    def __init__(self, store: "Store", table: Table, dataset: str, version: str, *, file_rows: int = FILE_ROWS,
                 row_group_rows: int = ROW_GROUP_ROWS, file_metadata: dict | None = None, first_file_index: int = 0):
        self.store, self.table, self.dataset, self.version = store, table, dataset, version
        self.file_rows, self.row_group_rows = file_rows, row_group_rows
        self.schema = table.schema.with_metadata({
            **(table.schema.metadata or {}),
            b"cxr.dataset": dataset.encode(), b"cxr.version": version.encode(),
            **{f"cxr.{k}".encode(): str(v).encode() for k, v in (file_metadata or {}).items()},
        })
        self._open: dict[str | None, tuple[pq.ParquetWriter, object, str, int]] = {}
        self._counter = first_file_index  # a rewrite of a staged version names its files after the old ones
        self.files: list[dict] = []

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rows (already in canonical schema and order); splits by the sub-partition key."""
        if data.num_rows == 0:
            return
        data = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        data = data.cast(self.schema) if data.schema != self.schema else data
        key = self.table.subpartition
        if key is None:
            self._write_part(None, data)
            return
        for value in data.column(key).unique().to_pylist():
            self._write_part(value, data.filter(pc.equal(data.column(key), value)))

    def _write_part(self, sub: str | None, data: pa.Table) -> None:
        offset = 0
        while offset < data.num_rows:
            writer, handle, rel, rows = self._writer(sub)
            take = min(self.file_rows - rows, data.num_rows - offset)
            writer.write_table(data.slice(offset, take), row_group_size=self.row_group_rows)
            offset += take
            self._open[sub] = (writer, handle, rel, rows + take)
            if rows + take >= self.file_rows:
                self._finish(sub)

    def _writer(self, sub: str | None):
        if sub not in self._open:
            sub_dir = f"{self.table.subpartition}={sub}/" if sub is not None else ""
            rel = f"{sub_dir}part-{self.version}-{self._counter:05d}.parquet"
            self._counter += 1
            path = f"{self.store.partition_dir(self.table.name, self.dataset)}/{rel}"
            self.store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            handle = self.store.fs.open(path, "wb")
            writer = pq.ParquetWriter(handle, self.schema, compression="zstd", compression_level=3,
                                      write_statistics=True, use_dictionary=True)
            self._open[sub] = (writer, handle, rel, 0)
        return self._open[sub]

    def _finish(self, sub: str | None) -> None:
        writer, handle, rel, rows = self._open.pop(sub)
        writer.close()
        handle.close()
        size = self.store.fs.info(f"{self.store.partition_dir(self.table.name, self.dataset)}/{rel}")["size"]
        self.files.append({"path": rel, "rows": rows, "bytes": int(size)})

    def close(self) -> list[dict]:
        for sub in list(self._open):
            self._finish(sub)
        return sorted(self.files, key=lambda f: f["path"])

    def abort(self) -> None:
        for sub in list(self._open):
            writer, handle, rel, _ = self._open.pop(sub)
            try:
                writer.close()
                handle.close()
            finally:
                self.files.append({"path": rel, "rows": 0, "bytes": 0})
        self.store._remove(self.table.name, self.dataset, self.files)
        self.files = []


class Store:
    def __init__(self, root: str, storage_options: dict | None = None):
        self.root_url = root
        self.fs, self.root = fsspec.core.url_to_fs(root, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = protocol
        self.local = protocol in ("file", "local")

    def __repr__(self) -> str:
        return f"Store({self.root_url!r})"

    # --- paths ---------------------------------------------------------------------------
    def partition_dir(self, table: str, dataset: str) -> str:
        return f"{self.root}/{table}/dataset={dataset}"

    def url(self, path: str) -> str:
        """A path as DuckDB and people should see it (a local path, or protocol://…)."""
        return path if self.local else self.fs.unstrip_protocol(path)

    # --- writing -------------------------------------------------------------------------
    def writer(self, table: str, dataset: str, *, version: str | None = None, **options) -> PartitionWriter:
        return PartitionWriter(self, table_def(table), dataset, version or new_version(), **options)

    def stage(self, table: str, dataset: str, data: pa.Table, *, source_fingerprint: str | None = None,
              run_id: str | None = None, version: str | None = None, extra: dict | None = None,
              **options) -> StagedPartition:
        """Write a whole partition's rows (already sorted) as a new, unpublished version."""
        writer = self.writer(table, dataset, version=version, file_metadata={
            "source_fingerprint": source_fingerprint or "", "run_id": run_id or ""}, **options)
        try:
            writer.write(data)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        return StagedPartition(self, table, dataset, writer.version, files, data.num_rows, source_fingerprint,
                               run_id, dict(extra or {}))

    def staged_from_writer(self, writer: PartitionWriter, *, source_fingerprint: str | None = None,
                           run_id: str | None = None, extra: dict | None = None) -> StagedPartition:
        files = writer.close()
        return StagedPartition(self, writer.table.name, writer.dataset, writer.version, files,
                               sum(f["rows"] for f in files), source_fingerprint, run_id, dict(extra or {}))

    def publish(self, staged: StagedPartition) -> Manifest:
        """Make a staged version the current one in a single atomic step."""
        for f in staged.files:
            path = f"{self.partition_dir(staged.table, staged.dataset)}/{f['path']}"
            if not self.fs.exists(path):
                raise StoreError(f"cannot publish {staged.table}/dataset={staged.dataset}: staged file {path} "
                                 "is missing")
        manifest = Manifest(
            table=staged.table, dataset=staged.dataset, version=staged.version, files=staged.files,
            rows=staged.rows, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source_fingerprint=staged.source_fingerprint, run_id=staged.run_id, extra=staged.extra,
            columns=table_def(staged.table).column_names,
        )
        self._write_manifest(staged.table, staged.dataset, manifest.to_json())
        return manifest

    def discard(self, staged: StagedPartition) -> None:
        """Remove a staged version that will not be published (e.g. it failed its checks)."""
        current = self.manifest(staged.table, staged.dataset)
        if current and current.version == staged.version:
            raise StoreError(f"refusing to discard {staged.table}/dataset={staged.dataset} version "
                             f"{staged.version}: it is the published one")
        self._remove(staged.table, staged.dataset, staged.files)

    def _write_manifest(self, table: str, dataset: str, payload: bytes) -> None:
        target = f"{self.partition_dir(table, dataset)}/{MANIFEST}"
        self.fs.makedirs(self.partition_dir(table, dataset), exist_ok=True)
        if self.local:
            tmp = f"{target}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)  # atomic on POSIX: readers see the old or the new manifest
        else:
            self.fs.pipe_file(target, payload)  # one PUT: object stores replace an object atomically

    def _remove(self, table: str, dataset: str, files: list[dict]) -> None:
        base = self.partition_dir(table, dataset)
        for f in files:
            path = f"{base}/{f['path']}"
            if self.fs.exists(path):
                self.fs.rm_file(path)

    # --- reading -------------------------------------------------------------------------
    def manifest(self, table: str, dataset: str) -> Manifest | None:
        path = f"{self.partition_dir(table, dataset)}/{MANIFEST}"
        try:
            return Manifest.from_json(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def manifests(self, table: str | None = None) -> list[Manifest]:
        """Current manifests of every partition (of one table, or of all)."""
        tables = [table] if table else [p.rsplit("/", 1)[-1] for p in self._list_dirs(self.root)]
        found = []
        for name in tables:
            for part_dir in self._list_dirs(f"{self.root}/{name}"):
                leaf = part_dir.rsplit("/", 1)[-1]
                if leaf.startswith("dataset="):
                    m = self.manifest(name, leaf.removeprefix("dataset="))
                    if m:
                        found.append(m)
        return sorted(found, key=lambda m: (m.table, m.dataset))

    def _list_dirs(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/") for e in entries if e["type"] == "directory")

    def file_urls(self, manifest: Manifest) -> list[str]:
        base = self.partition_dir(manifest.table, manifest.dataset)
        return [self.url(f"{base}/{f['path']}") for f in manifest.files]

    def columns_of(self, manifest: Manifest) -> list[str]:
        """The columns a partition's files have (read from a file footer for manifests that predate `columns`)."""
        if manifest.columns is not None or not manifest.files:
            return list(manifest.columns or [])
        with self.fs.open(f"{self.partition_dir(manifest.table, manifest.dataset)}/{manifest.files[0]['path']}") as f:
            return pq.read_schema(f).names

    def read(self, table: str, dataset: str) -> pa.Table:
        """The current rows of one partition (for tests and checks; queries go through the catalog)."""
        manifest = self.manifest(table, dataset)
        if manifest is None:
            return table_def(table).schema.empty_table()
        base = self.partition_dir(table, dataset)
        parts = []
        for f in manifest.files:
            with self.fs.open(f"{base}/{f['path']}", "rb") as handle:
                parts.append(pq.read_table(handle))
        return pa.concat_tables(parts) if parts else table_def(table).schema.empty_table()

    # --- housekeeping --------------------------------------------------------------------
    def collect_garbage(self, *, now: float | None = None) -> list[str]:
        """Delete data files that no manifest names and that no run can still be writing.

        A file goes when its version is older than the partition's current version (retired or
        left by a failed older run), or when it is unreferenced and older than the grace period.
        """
        now = time.time() if now is None else now
        removed = []
        for table in [p.rsplit("/", 1)[-1] for p in self._list_dirs(self.root)]:
            for part_dir in self._list_dirs(f"{self.root}/{table}"):
                leaf = part_dir.rsplit("/", 1)[-1]
                if not leaf.startswith("dataset="):
                    continue
                current = self.manifest(table, leaf.removeprefix("dataset="))
                keep = {f"{part_dir}/{f['path']}" for f in current.files} if current else set()
                for path in self.fs.find(part_dir):
                    name = path.rsplit("/", 1)[-1]
                    version = _version_of(name)
                    if version is None or path in keep:
                        continue
                    older = current is not None and version < current.version
                    stale = now - _created_at(version) > ORPHAN_GRACE_SECONDS
                    if older or stale:
                        self.fs.rm_file(path)
                        removed.append(self.url(path))
        return removed


def _created_at(version: str) -> float:
    try:
        return datetime.strptime(version.split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0

"""Stream the JSON members of a zip archive through DuckDB, one bounded chunk of members at a time.

Why DuckDB: MIMIC-Ext-CXR-QBA keeps 227k JSON documents (~150 GB inflated) in one zip. The standard
library's json module turns them into Python objects at ~70 MB/s per core and every answer and box
would then be touched again in Python; DuckDB parses a chunk straight into typed columns and
flattens the nested lists with set operations, so no Python object per answer or box is ever made.
A chunk is a few dozen MB of whole members, wrapped one per line as `{"m": <member name>,
"d": <document>}` (a JSON document has no raw newline inside a string, so replacing its newlines by
spaces keeps it intact) and written to a private temporary file that DuckDB's read_json reads.

Concurrency and memory: `workers` threads each own a zip handle and a DuckDB connection (zlib,
DuckDB and the Arrow hand-over release the GIL, so they use the cores while the caller writes
Parquet). At most `workers + 1` chunks are in flight, so memory depends on the chunk size, never
on the archive size. Results come back in archive order.

Safety: every member name is checked before any member is read; one that is absolute or climbs
out with `..` is a SourceError naming it (a hostile archive is refused whole), and so are two
wanted members with the same file name in different folders (one document per study: a second
copy would publish the study twice). A member that is not
JSON, or JSON of another shape, is found by re-reading the failed chunk member by member and comes
back as a quarantine row naming it; the other members of the chunk are read again without it.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue

import duckdb
import polars as pl

from ..scratch import scratch_dir
from .base import ZIP_MEMBER_ERRORS, SourceError, SourceFolder
from .quarantine import QUARANTINE_COLUMNS

CHUNK_BYTES = 32 << 20  # inflated member bytes per chunk
WORKERS = 2  # the target machine has two cores
WORKER_MEMORY = "1GB"  # DuckDB memory limit per worker; a chunk table stays far below it
MIN_OBJECT_BYTES = 16 << 20  # DuckDB's read_json buffer floor (its default)
RAW_TEXT_LIMIT = 64 << 10  # quarantine keeps the first 64 KiB of an unreadable member
_BOM = b"\xef\xbb\xbf"
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ChunkOutput:
    """What one chunk produced: canonical frames, quarantine rows, and how many members it held."""

    tables: dict[str, pl.DataFrame]
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    members: int = 0


# extract(connection, where) -> ChunkOutput, run after the chunk is loaded as table `chunk`;
# `where(member)` is the display name of a member for quarantine rows.
Extract = Callable[[duckdb.DuckDBPyConnection, Callable[[str], str]], ChunkOutput]


def leaves_root(name: str) -> bool:
    """True for a member path that is absolute or climbs out of the archive root (zip-slip)."""
    path = name.replace("\\", "/")
    return path.startswith("/") or bool(_DRIVE.match(path)) or ".." in path.split("/")


def archive_members(src: SourceFolder, name: str, suffix: str) -> tuple[list[zipfile.ZipInfo], list[zipfile.ZipInfo]]:
    """The archive's members named *suffix, and its other file members.

    Reads only the central directory. Raises SourceError naming the first member whose path
    leaves the dataset, or two wanted members of the same file name, before anything is read.
    """
    with src.open(name) as raw:
        try:
            infos = zipfile.ZipFile(raw).infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise SourceError(src.display(name), f"is not a readable zip archive ({e})") from None
    for info in infos:
        if leaves_root(info.filename):
            raise SourceError(
                src.display(name),
                f"member {info.filename!r} has a path that leaves the dataset "
                "(absolute or '..'); the archive is refused and nothing is ingested",
            )
    files = [info for info in infos if not info.is_dir()]
    wanted = [info for info in files if info.filename.endswith(suffix)]
    first: dict[str, str] = {}
    for info in wanted:
        base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
        if base in first:
            raise SourceError(
                src.display(name),
                f"members {first[base]!r} and {info.filename!r} have the same file "
                "name, so the same study twice; the archive is refused",
            )
        first[base] = info.filename
    return wanted, [info for info in files if not info.filename.endswith(suffix)]


def plan_chunks(infos: list[zipfile.ZipInfo], chunk_bytes: int = CHUNK_BYTES) -> list[list[zipfile.ZipInfo]]:
    """Consecutive runs of members of about chunk_bytes inflated (a bigger member is a chunk alone)."""
    chunks: list[list[zipfile.ZipInfo]] = []
    current: list[zipfile.ZipInfo] = []
    size = 0
    for info in infos:
        if current and size + info.file_size > chunk_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(info)
        size += info.file_size
    if current:
        chunks.append(current)
    return chunks


def member_quarantine(
    target_table: str, source_file: str, reason: str, data: bytes | None = None, line: int | None = None
) -> dict:
    """One quarantine row for a whole archive member."""
    raw = data[:RAW_TEXT_LIMIT].decode("utf-8", "backslashreplace") if data else None
    return {
        "target_table": target_table,
        "source_file": source_file,
        "row_number": None,
        "line_number": line,
        "column_name": "",
        "value": None,
        "reason": reason,
        "raw_record": raw,
    }


class _Worker:
    """One thread's zip handle, DuckDB connection and chunk file."""

    def __init__(
        self,
        src: SourceFolder,
        archive: str,
        columns: dict[str, str],
        target_table: str,
        setup: Callable[[duckdb.DuckDBPyConnection], None],
        tmp: Path,
        index: int,
    ):
        self.src, self.archive_name, self.columns, self.target_table = src, archive, columns, target_table
        self.raw = src.open(archive)
        self.archive = zipfile.ZipFile(self.raw)
        self.con = duckdb.connect(
            config={"threads": 1, "memory_limit": WORKER_MEMORY, "temp_directory": str(tmp / f"spill-{index}")}
        )
        setup(self.con)
        self.path = tmp / f"chunk-{index}.ndjson"

    def where(self, member: str) -> str:
        return self.src.display(f"{self.archive_name}:{member}")

    def run(self, infos: list[zipfile.ZipInfo], extract: Extract) -> ChunkOutput:
        members, bad = self._read(infos)
        bad += self._load(members)
        out = extract(self.con, self.where)
        if bad:
            out.quarantine.append(pl.DataFrame(bad, schema=QUARANTINE_COLUMNS))
        out.members = len(infos)
        return out

    def _read(self, infos: list[zipfile.ZipInfo]) -> tuple[list[tuple[str, bytes]], list[dict]]:
        """Inflate the chunk's members; one that cannot be inflated becomes a quarantine row."""
        members, bad = [], []
        for info in infos:
            try:
                data = self.archive.read(info)
            except ZIP_MEMBER_ERRORS as e:
                bad.append(
                    member_quarantine(
                        self.target_table,
                        self.where(info.filename),
                        f"cannot be read from the archive ({type(e).__name__}: {e})",
                    )
                )
                continue
            members.append((info.filename, data[3:] if data.startswith(_BOM) else data))
        return members, bad

    def _write(self, members: list[tuple[str, bytes]]) -> None:
        # read_json's buffer must hold the longest line; sizing it to the chunk keeps memory bounded
        self.max_line = max((len(name) + len(data) for name, data in members), default=0) + 1024
        with open(self.path, "wb") as out:
            for name, data in members:
                out.write(b'{"m":' + json.dumps(name).encode() + b',"d":')
                out.write(data.replace(b"\n", b" "))
                out.write(b"}\n")

    def _load_file(self) -> None:
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE chunk AS SELECT * FROM read_json($path, columns=$columns, "
            "format='newline_delimited', maximum_object_size=$size)",
            {"path": str(self.path), "columns": self.columns, "size": max(MIN_OBJECT_BYTES, self.max_line)},
        )

    def _load(self, members: list[tuple[str, bytes]]) -> list[dict]:
        """Load the chunk as table `chunk`; on failure find the unreadable members and load the rest."""
        self._write(members)
        try:
            self._load_file()
            return []
        except duckdb.Error as chunk_error:
            bad = self._isolate(members)
            if not bad:
                raise SourceError(
                    self.src.display(self.archive_name),
                    f"members {members[0][0]} … {members[-1][0]} cannot be read together, though "
                    f"each can alone: {chunk_error}",
                ) from None
        failed = {row["source_file"] for row in bad}
        self._write([(name, data) for name, data in members if self.where(name) not in failed])
        self._load_file()
        return bad

    def _isolate(self, members: list[tuple[str, bytes]]) -> list[dict]:
        """Quarantine rows for the members that are not JSON or not JSON of the expected shape."""
        bad = []
        for name, data in members:
            try:
                json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                line = getattr(e, "lineno", None)
                bad.append(member_quarantine(self.target_table, self.where(name), f"not valid JSON ({e})", data, line))
                continue
            self._write([(name, data)])
            try:
                self._load_file()
            except duckdb.Error as e:
                message = str(e).split("\n", 1)[0]
                bad.append(
                    member_quarantine(
                        self.target_table,
                        self.where(name),
                        f"JSON does not have the documented shape ({message})",
                        data,
                    )
                )
        return bad

    def close(self) -> None:
        self.con.close()
        self.archive.close()
        self.raw.close()


def stream_members(
    src: SourceFolder,
    archive: str,
    infos: list[zipfile.ZipInfo],
    extract: Extract,
    *,
    columns: dict[str, str],
    target_table: str,
    setup: Callable[[duckdb.DuckDBPyConnection], None] = lambda con: None,
    workers: int = WORKERS,
    chunk_bytes: int | None = None,
) -> Iterator[ChunkOutput]:
    """ChunkOutputs of consecutive member chunks, in archive order, at most workers + 1 in flight.

    `columns` are the DuckDB types of a wrapped line ({"m": VARCHAR, "d": <document type>});
    `setup` prepares each worker's connection (lookup tables); `extract` turns the loaded chunk
    into frames. Closing the iterator early stops the workers and removes the temporary files.
    """
    chunks = plan_chunks(infos, chunk_bytes or CHUNK_BYTES)
    if not chunks:
        return
    tmp = scratch_dir("json")
    workers = max(1, min(workers, len(chunks)))
    idle: SimpleQueue[_Worker] = SimpleQueue()
    opened: list[_Worker] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="json-members")

    def task(chunk: list[zipfile.ZipInfo]) -> ChunkOutput:
        worker = idle.get()
        try:
            return worker.run(chunk, extract)
        finally:
            idle.put(worker)

    pending: deque = deque()
    try:
        for index in range(workers):
            opened.append(_Worker(src, archive, columns, target_table, setup, tmp, index))
            idle.put(opened[-1])
        upcoming = iter(chunks)
        for chunk in upcoming:
            pending.append(pool.submit(task, chunk))
            if len(pending) > workers:
                break
        while pending:
            out = pending.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(task, following))
            yield out
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for worker in opened:
            worker.close()
        shutil.rmtree(tmp, ignore_errors=True)

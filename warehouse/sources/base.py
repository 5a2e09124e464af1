"""What every dataset adapter is: a reader of one dataset's own files into canonical frames.

An adapter reads a `SourceFolder` (a local folder or any fsspec URL) and returns polars frames
for the canonical tables it feeds, plus the rows it could not read (quarantine). It never writes:
staging, checking and publishing belong to the store and the pipelines.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import fsspec
import polars as pl

from ..errors import CxrError

SMALL_FILE_BYTES = 64 << 20  # files up to this size get a content hash in their fingerprint...
HASHED_FILES_MAX = 200  # ...unless there are more files than this (a tree of 228k reports)


# What reading one member of a zip can raise (damaged data, unsupported compression, encryption).
ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError)


class SourceError(CxrError):
    """A dataset's files are missing or not in the shape the dataset publishes them."""

    def __init__(
        self, file: str, message: str, *, row: int | None = None, line: int | None = None, column: str | None = None
    ):
        self.file, self.row, self.line, self.column = file, row, line, column
        where = file
        if line is not None:
            where += f", line {line}"
        elif row is not None:
            where += f", row {row}"
        if column:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    name: str
    version: str
    access: str  # open | registration (an agreement or sign-in) | credentialed (PhysioNet-style)
    default_data: str  # public (fetched metadata) | samples (generated fixtures)
    tables: tuple[str, ...]  # canonical tables this dataset feeds
    citation: str
    homepage: str
    links_to: str | None = None  # another dataset describing the same patients and studies, under the same ids
    # Licence terms as the source's own pages state them; "unknown" where no licence text was confirmed,
    # with what is known in licence_note. bibtex: the entries a paper using the dataset cites.
    licence: str = "unknown"
    licence_url: str | None = None
    licence_note: str = ""
    bibtex: str = ""


class SourceFolder:
    """A dataset root on any fsspec filesystem, with the few reads adapters need."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"SourceFolder({self.url!r})"

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def display(self, name: str) -> str:
        """The file's name as a person should see it in messages: the full location."""
        return f"{self.url.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def first_existing(self, *names: str) -> str | None:
        """The first of `names` (each also tried with .gz) that exists, else None."""
        for name in names:
            for candidate in (name, name + ".gz"):
                if self.exists(candidate):
                    return candidate
        return None

    def require(self, *names: str) -> str:
        found = self.first_existing(*names)
        if found is None:
            tried = ", ".join(n + "[.gz]" for n in names)
            raise SourceError(self.url, f"none of the expected files is there (looked for {tried})")
        return found

    def read_bytes(self, name: str) -> bytes:
        """The file's content, gunzipped when the name ends in .gz."""
        data = self.fs.cat_file(self.path(name))
        if name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as e:
                raise SourceError(self.display(name), f"is not a readable gzip file ({e})") from None
        return data

    def open(self, name: str, mode: str = "rb"):
        return self.fs.open(self.path(name), mode)

    def glob(self, pattern: str) -> list[str]:
        """Names (relative to the root) matching a glob pattern, sorted."""
        prefix = self.root + "/"
        return sorted(p.removeprefix(prefix) for p in self.fs.glob(self.path(pattern)))

    def fingerprint(self, names: Iterable[str]) -> list[dict]:
        """Size, modification stamp (mtime or ETag) and, for small files, a sha256 of each file.

        The fingerprint tells whether a dataset's sources changed since the last ingest without
        reading large files; a dataset of very many small files is judged by size and stamp alone.
        """
        out = []
        names = sorted(names)
        hash_contents = len(names) <= HASHED_FILES_MAX
        for name in names:
            info = self.fs.info(self.path(name))
            stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
            size = int(info.get("size") or 0)
            entry = {"file": name, "size": size, "stamp": str(stamp)}
            if hash_contents and size <= SMALL_FILE_BYTES:
                entry["sha256"] = hashlib.sha256(self.fs.cat_file(self.path(name))).hexdigest()
            out.append(entry)
        return out


@dataclass
class SourceResult:
    """Canonical frames read from one dataset, the rows that could not be read, and what was read.

    Small tables come whole in `tables`. Tables too large for memory come through `batches`, an
    iterator of (table name, frame) chunks that the stager writes as they arrive; it is consumed
    once, after `tables`. Quarantine frames appended to `quarantine` while the iterator runs are
    still published.
    """

    tables: dict[str, pl.DataFrame]
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batches: Iterator[tuple[str, pl.DataFrame]] | None = None

    def rejected(self) -> pl.DataFrame:
        from .quarantine import empty_quarantine

        return pl.concat(self.quarantine, how="diagonal_relaxed") if self.quarantine else empty_quarantine()


Progress = Callable[[str], None]


class Adapter(Protocol):
    info: DatasetInfo

    def source_files(self, src: SourceFolder) -> list[str]:
        """The native files a read would use (for fingerprints and change detection)."""

    def read(
        self, src: SourceFolder, progress: Progress | None = None, related: dict[str, SourceFolder] | None = None
    ) -> SourceResult:
        """Read the dataset's native files into canonical frames.

        `related` holds the source folders of the datasets named in `info.links_to` (when they
        are configured or have default data), e.g. MIMIC-CXR's split file for QBA.
        """

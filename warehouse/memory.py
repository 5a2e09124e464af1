"""Hand memory a step has freed back to the operating system before the next step allocates its own.

Arrow's allocator (mimalloc) and glibc's malloc keep freed pages for later allocations. The gated
ingest's steps each peak on a different allocator (Arrow while staging, pandas and numpy while GX
validates a table, DuckDB while deriving), so pages one step freed and kept sat under the next step's
peak: about 80 to 120 MB at each of CheXpert's GX tables.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import duckdb
import pyarrow as pa

T = TypeVar("T")


@cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where there is none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_unused() -> None:
    """Return the free pages of Arrow's pool and of the C heap; a few milliseconds, nothing live is touched."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def out_of_memory(error: BaseException) -> bool:
    """Whether DuckDB ran out of memory: raised as its own class while a statement runs, but as an OSError (Arrow's
    stream error) when it happens while a result streams through `to_arrow_reader`."""
    if isinstance(error, duckdb.OutOfMemoryException):
        return True
    return isinstance(error, (OSError, pa.ArrowException)) and "Out of Memory Error" in str(error)


def beyond_limit_if_needed(con: duckdb.DuckDBPyConnection, run: Callable[[], T]) -> T:
    """`run()`; if DuckDB cannot keep it within the connection's memory limit even by spilling, again without the
    limit (for this and later statements): a bound on memory must not turn into a failed ingest or catalog."""
    try:
        return run()
    except Exception as error:
        if not out_of_memory(error):
            raise
        con.execute("RESET memory_limit")  # the failed statement was rolled back
        return run()

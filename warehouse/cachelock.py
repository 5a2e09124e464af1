"""One process at a time fills an entry of the cache (the public metadata, a dataset's generated samples).

Every fill is already published by a rename, so a reader never sees half of one; but two processes that
both find the entry missing would both build it, and the second would delete the first one's folder under
its readers. That happens when two `cxr` commands start together on a fresh machine, or when CI runs the
README's two commands side by side. Fills take an exclusive advisory lock and look again once they hold it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def filling(cache: Path, entry: str) -> Iterator[None]:
    """Hold `<cache>/.<entry>.lock` exclusively (waits for another process filling the same entry)."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): fills stay atomic renames, at worst done twice
        yield
        return
    with open(cache / f".{entry}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

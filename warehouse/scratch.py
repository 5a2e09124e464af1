"""Scratch folders in the system temp dir, named after the process that owns them.

A killed ingest cannot remove its own scratch (QBA's JSON chunks, a sort's spill, a CSV copy), so
every folder is named `cxr-<kind>-<pid>-<random>` and the next ingest sweeps the folders whose
process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

_NAME = re.compile(r"^cxr-[a-z]+-(\d+)-[0-9a-f]+$")


def scratch_dir(kind: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"cxr-{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    return path


def sweep() -> list[Path]:
    """Remove scratch folders of processes that no longer run."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob("cxr-*-*-*"):
        match = _NAME.match(path.name)
        if match and path.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a permission error means it does, as another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

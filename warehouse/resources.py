"""The project's data folders, `sql/` and `expectations/`, wherever the package runs from.

In a checkout they are read live from the repo's top level (beside `warehouse/`), so an edit, a
worktree or a scratch copy is what runs. A wheel ships them inside the package as
`warehouse/sql/` and `warehouse/expectations/` (pyproject's package-dir mapping), read through
importlib.resources.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

FOLDERS = ("sql", "expectations")
_PACKAGE_DIR = Path(__file__).resolve().parent


def data_folder(name: str) -> Traversable:
    """`sql` or `expectations`: the checkout's own folder when there is one, else the installed copy."""
    if name not in FOLDERS:
        raise ValueError(f"no data folder {name!r}; known: {', '.join(FOLDERS)}")
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return resources.files(f"warehouse.{name}")

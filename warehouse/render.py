"""Output people read: aligned tables on a terminal (CSV, JSON and Parquet for programs: export.py)."""

from __future__ import annotations

import decimal
import sys
from collections.abc import Sequence
from typing import TextIO


def _cell(value) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def _numeric(values: Sequence) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool) for v in present
    )


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence],
    *,
    title: str | None = None,
    caption: str | None = None,
    file: TextIO | None = None,
    max_width: int = 60,
    numeric: Sequence[bool] | None = None,
) -> None:
    """A bordered table with numbers right-aligned; wide text cells are cut at `max_width`. `numeric` says
    which columns are numbers when the caller hands them in already formatted."""
    from rich.console import Console
    from rich.table import Table, box

    console = Console(
        file=file or sys.stdout, soft_wrap=False, highlight=False, width=None if (file or sys.stdout).isatty() else 200
    )
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAVY,
        header_style="bold",
        title_justify="left",
        caption_justify="left",
    )
    for i, name in enumerate(columns):
        right = numeric[i] if numeric is not None else _numeric([r[i] for r in rows])
        table.add_column(
            name,
            justify="right" if right else "left",
            overflow="ellipsis",
            min_width=min(len(name), 14),
            max_width=None if right else max_width,
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)

"""Output people read: aligned tables on a terminal, plain CSV/JSON for programs.

Rows arrive as (column names, row iterator) so results stream from DuckDB without building an
Arrow or pandas object on the query path.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
import sys
from typing import Iterable, Sequence, TextIO


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
    return bool(present) and all(isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)
                                 for v in present)


def print_table(columns: Sequence[str], rows: Sequence[Sequence], *, title: str | None = None,
                caption: str | None = None, file: TextIO | None = None, max_width: int = 60) -> None:
    """A bordered table with numbers right-aligned; wide text cells are cut at `max_width`."""
    from rich.console import Console
    from rich.table import Table, box

    console = Console(file=file or sys.stdout, soft_wrap=False, highlight=False,
                      width=None if (file or sys.stdout).isatty() else 200)
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAVY, header_style="bold", title_justify="left",
                  caption_justify="left")
    for i, name in enumerate(columns):
        numeric = _numeric([r[i] for r in rows])
        table.add_column(name, justify="right" if numeric else "left", overflow="ellipsis",
                         min_width=min(len(name), 14), max_width=None if numeric else max_width, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def write_csv(columns: Sequence[str], rows: Iterable[Sequence], out: TextIO) -> int:
    """Header then rows; a missing value is an empty field (never `NULL` or `None`), and values are
    spelled as write_json spells them (true/false, nested values as JSON, bytes as hex)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else _plain(v) for v in row])
        n += 1
    return n


def write_json(columns: Sequence[str], rows: Iterable[Sequence], out: TextIO) -> int:
    """A JSON array of objects, written row by row."""
    out.write("[")
    n = 0
    for row in rows:
        out.write(",\n " if n else "\n ")
        out.write(json.dumps(dict(zip(columns, map(_finite, row))), default=_json_default, ensure_ascii=False))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


def _plain(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_finite(value), default=_json_default, ensure_ascii=False)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def _finite(value):
    """NaN and infinities become null: JSON has no spelling for them (json.dumps would write `NaN`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _json_default(value):
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)

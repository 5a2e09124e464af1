"""The report's tables as Markdown (one report.md, the tables in page order) and CSV (one file per table,
raw values, with a `<column> coverage` column beside each column that has coverage notes)."""

from __future__ import annotations

import csv
from pathlib import Path

from .tables import ReportTable, fmt


def write_csv(t: ReportTable, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{t.key}.csv"
    noted = [any(n[i] for n in t.notes) for i in range(len(t.columns))]
    header = []
    for c, has in zip(t.columns, noted):
        header += [c.name] + ([f"{c.name} coverage"] if has else [])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for values, notes in zip(t.rows, t.notes):
            row = []
            for v, note, has in zip(values, notes, noted):
                row += ["" if v is None else v] + ([note or ""] if has else [])
            writer.writerow(row)
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(t: ReportTable) -> str:
    labels = [(f"{c.group}: " if c.group else "") + c.label for c in t.columns]
    lines = [
        f"#### {t.title}",
        "",
        "| " + " | ".join(_md_cell(x) for x in labels) + " |",
        "|" + "|".join("---:" if c.kind != "text" else "---" for c in t.columns) + "|",
    ]
    for values, notes in zip(t.rows, t.notes):
        lines.append(
            "| "
            + " | ".join(
                _md_cell(fmt(v, c.kind) + (f" ({note})" if note else ""))
                for c, v, note in zip(t.columns, values, notes)
            )
            + " |"
        )
    if t.caption:
        lines += ["", f"_{t.caption}_"]
    return "\n".join(lines) + "\n"

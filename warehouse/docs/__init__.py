"""The data dictionary (`cxr catalog docs`): HTML and Markdown generated from the catalog and the schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from .erd import erd_svg
from .html import render_html
from .markdown import render_markdown
from .model import DocsModel, build_model


@dataclass(frozen=True)
class DocsWritten:
    folder: Path
    files: list[Path]
    model: DocsModel


def write_docs(con: duckdb.DuckDBPyConnection, out: Path) -> DocsWritten:
    """Write index.html, the Markdown pages and erd.svg into `out` (created when missing)."""
    model = build_model(con)
    out.mkdir(parents=True, exist_ok=True)
    files = {"index.html": render_html(model), "erd.svg": erd_svg(model.tables, model.references)}
    files.update(render_markdown(model))
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return DocsWritten(out, written, model)


__all__ = ["DocsModel", "DocsWritten", "build_model", "write_docs"]

"""The data dictionary as Markdown, one page per section, for reading in a repository browser or a diff.

Anchors follow the headings (GitHub style), and the diagram is the erd.svg written beside the pages.
"""

from __future__ import annotations

from .format import cell_text, percent_text
from .model import DocsModel, TableDoc

PAGES = ("README.md", "tables.md", "findings.md", "datasets.md", "queries.md")


def _cell(value) -> str:
    return cell_text(value).replace("|", "\\|").replace("\n", " ").strip()


def _table(header: list[str], rows: list[list], right: frozenset[int] = frozenset()) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _readme(model: DocsModel) -> list[str]:
    m = model.meta
    lines = [
        "# cxr-warehouse data dictionary",
        "",
        (
            f"Warehouse version {m.get('warehouse_version') or '—'}, schema version {m.get('schema_version', '')}, "
            f"catalog built {m.get('built_at', '')}; generated {model.generated_at} by `cxr catalog docs`."
        ),
        "",
        "- [Tables and columns](tables.md)",
        "- [Findings vocabulary and unmapped labels](findings.md)",
        "- [Dataset registry](datasets.md)",
        "- [Named queries and cohorts](queries.md)",
        "",
        "## Entity-relationship diagram",
        "",
        "Lines join a referring column to the key it names; every join also matches `dataset`.",
        "",
        "![Entity-relationship diagram](erd.svg)",
        "",
        "## Tables",
        "",
    ]
    lines += _table(
        ["table", "kind", "rows", "description"],
        [
            [f"[{t.name}](tables.md#{t.name})", "derived" if t.derived else "source", t.total_rows, t.description]
            for t in model.tables
        ],
        right=frozenset({2}),
    )
    return lines


def _table_section(t: TableDoc) -> list[str]:
    lines = [
        f"## {t.name}",
        "",
        t.description,
        "",
        f"Key: `{', '.join(('dataset',) + t.key)}` · {t.total_rows:,} rows"
        + (" · " + ", ".join(f"{d} {n:,}" for d, n in t.rows.items()) if t.rows else " · no rows yet"),
        "",
    ]
    rows = []
    for c in t.columns:
        flags = ", ".join(f for f in ("key" if c.is_key else "", "not null" if not c.nullable else "") if f)
        vocab = f" Values ({c.vocabulary}): {', '.join(c.allowed_values)}." if c.allowed_values else ""
        filled = ", ".join(f"{d} {percent_text(p)}" for d, p in c.non_null.items()) or "—"
        rows.append([f"`{c.name}`", c.type, flags, c.description + vocab, filled])
    return lines + _table(["column", "type", "", "description", "not null per dataset"], rows)


def _tables_page(model: DocsModel) -> list[str]:
    lines = [
        "# Tables and columns",
        "",
        (
            "Per column, the percent of each dataset's rows where it is not null, "
            "computed on all rows. [Back to the index](README.md)."
        ),
        "",
    ]
    for t in model.tables:
        lines += _table_section(t)
    return lines


def _findings_page(model: DocsModel) -> list[str]:
    lines = [
        "# Findings vocabulary",
        "",
        (
            "The harmonized findings as a tree, then, per finding, the raw labels "
            "`finding_map` maps to it and the raw labels the `labels` table holds for it."
        ),
        "",
        "[Back to the index](README.md).",
        "",
    ]
    lines += _table(
        ["finding", "description", "label rows"],
        [
            ["&nbsp;&nbsp;" * 2 * f.depth + ("└ " if f.depth else "") + f"[`{f.id}`](#{f.id})", f.description, f.rows]
            for f in model.findings
        ],
        right=frozenset({2}),
    )
    for f in model.findings:
        lines += [f"## {f.id}", "", f.description, ""]
        if f.parent:
            lines += [f"Under [`{f.parent}`](#{f.parent}).", ""]
        if f.mapped_from:
            lines += ["Mapped raw labels: " + ", ".join(f"{r} ({s})" for s, r in f.mapped_from) + ".", ""]
        if f.raw_labels:
            lines += _table(
                ["raw label", "dataset", "labeler", "rows", "positive"],
                [
                    [r.raw_label, r.dataset, r.labeler, r.rows, r.positive]
                    for r in sorted(f.raw_labels, key=lambda r: (-r.rows, r.dataset, r.raw_label))
                ],
                right=frozenset({3, 4}),
            )
        else:
            lines += ["No labels in the warehouse.", ""]
    lines += ["## Unmapped raw labels", "", "Raw labels whose rows have no finding (`catalog_unmapped_labels`).", ""]
    lines += (
        _table(
            ["dataset", "labeler", "raw label", "rows", "positive", "why"],
            [
                [u.dataset, u.labeler, u.raw_label, u.rows, u.positive, u.note or "not in the map"]
                for u in model.unmapped
            ],
            right=frozenset({3, 4}),
        )
        if model.unmapped
        else ["Every raw label maps.", ""]
    )
    return lines


def _datasets_page(model: DocsModel) -> list[str]:
    lines = ["# Dataset registry", "", "Every field of `catalog_datasets`. [Back to the index](README.md).", ""]
    for d in model.datasets:
        lines += [f"## {d['dataset']}", "", f"**{d.get('name') or d['dataset']}**", ""]
        for column in model.dataset_columns:
            if column in ("dataset", "name"):
                continue
            value = d.get(column)
            if "bibtex" in column.lower() and value:
                lines += [
                    f"- **{column}**:",
                    "",
                    "  ```bibtex",
                    *("  " + x for x in str(value).splitlines()),
                    "  ```",
                    "",
                ]
                continue
            if column.lower().startswith("licen") and not value:
                value = "unknown"
            lines.append(f"- **{column}**: {cell_text(value) or '—'}")
        if not any(c.lower().startswith("licen") for c in model.dataset_columns):
            lines.append("- **licence**: unknown")
        lines.append("")
    return lines


def _queries_page(model: DocsModel) -> list[str]:
    lines = ["# Named queries and cohorts", "", "[Back to the index](README.md).", ""]
    for q in model.queries:
        lines += [
            f"## {q.name}",
            "",
            f"{'Cohort' if q.kind == 'cohort' else 'Named query'} · `{q.path}`",
            "",
            q.description,
            "",
        ]
        if q.parameters:
            lines += (
                ["Parameters:", ""]
                + [
                    f"- `{n}`" + (f" {t}" if t else "") + (f" = `{dflt}`" if dflt else "") + (f": {doc}" if doc else "")
                    for n, t, dflt, doc in q.parameters
                ]
                + [""]
            )
    return lines


def render_markdown(model: DocsModel) -> dict[str, str]:
    """File name -> Markdown text."""
    pages = {
        "README.md": _readme(model),
        "tables.md": _tables_page(model),
        "findings.md": _findings_page(model),
        "datasets.md": _datasets_page(model),
        "queries.md": _queries_page(model),
    }
    return {name: "\n".join(lines).rstrip() + "\n" for name, lines in pages.items()}

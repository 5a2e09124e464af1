"""Metadata a person reads in the Dagster UI: markdown previews and typed column schemas."""

from __future__ import annotations

import dagster as dg

from warehouse import schema

PREVIEW_ROWS = 5


def markdown_table(rows: list[dict], columns: list[str] | None = None, max_chars: int = 40) -> str:
    if not rows:
        return "_no rows_"
    columns = columns or list(rows[0])

    def cell(value) -> str:
        text = "∅" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def column_schema(table: str) -> dg.TableSchema:
    spec = schema.TABLES[table]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                schema.duckdb_type(c.type),
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in spec.columns
        ]
    )


def plain_json(value):
    """MetadataValue.json takes a dict or list of plain values only."""
    import json

    return dg.MetadataValue.json(
        json.loads(json.dumps(value if isinstance(value, (dict, list)) else {"value": value}, default=str))
    )

"""Named SQL queries kept as files under sql/<group>/<name>.sql, each with a comment header.

The header (`-- name:`, `-- description:`, `-- parameters:`) documents the query where it lives;
the SQL stays plain SQL that runs against the catalog's views.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources.abc import Traversable

from .resources import data_folder

SQL_ROOT = data_folder("sql")


@dataclass(frozen=True)
class NamedQuery:
    group: str
    name: str
    description: str
    sql: str
    path: Traversable


def _header(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        body = line[2:].strip()
        if ":" in body and not line.startswith("--   "):
            key, _, value = body.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        elif key:
            fields[key] += " " + body
    return fields


def named_query(group: str, name: str) -> NamedQuery:
    path = SQL_ROOT / group / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no named query {group}/{name} (looked for {path})")
    text = path.read_text()
    header = _header(text)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip().rstrip(";")
    return NamedQuery(group, header.get("name", name), header.get("description", ""), body, path)

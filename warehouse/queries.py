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


def list_queries() -> list[NamedQuery]:
    """Every named query under sql/ (cohorts, with their own format, are warehouse.cohorts')."""
    found = []
    for group in sorted((g for g in SQL_ROOT.iterdir() if g.is_dir() and g.name != "cohorts"), key=lambda g: g.name):
        for path in sorted((p for p in group.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
            found.append(named_query(group.name, path.name.removesuffix(".sql")))
    return found


def parameters(query: NamedQuery) -> list[str]:
    """The names the query's `-- parameters:` header lists (none for `none`)."""
    listed = _header(query.path.read_text()).get("parameters", "")
    return [p.strip() for p in listed.split(",") if p.strip() and p.strip().lower() != "none"]

"""`cxr catalog search TERM`: one search over everything the data dictionary documents.

It looks through tables and columns (names and descriptions), findings (ids, descriptions and the raw
labels the map gives as their synonyms), the raw labels the warehouse's labels hold per dataset, the
dataset registry, and the named queries and cohorts. A match in a name ranks above one in a
description; an exact name above a prefix above a substring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

KINDS = ("table", "column", "finding", "raw label", "dataset", "query", "cohort")
LISTS = ("raw labels", "values")  # text fields that are comma-separated lists


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    text: tuple[tuple[str, str], ...]  # (what, text) searched beside the name, e.g. ("description", "…")


@dataclass(frozen=True)
class Match:
    kind: str
    name: str
    snippet: str
    score: int


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, r)) for r in result.fetchall()]


def entries(con: duckdb.DuckDBPyConnection) -> list[Entry]:
    """Everything searchable, from the catalog (plus the query files the catalog's docs describe)."""
    from .cohorts import list_cohorts
    from .queries import list_queries, parameters

    found = [
        Entry("table", r["table_name"], (("description", r["description"]),))
        for r in _rows(con, "SELECT table_name, description FROM catalog_tables")
    ]
    for r in _rows(
        con,
        "SELECT table_name, column_name, type, description, allowed_values FROM catalog_columns "
        "ORDER BY table_name, position",
    ):
        text = [("description", r["description"])]
        if r["allowed_values"]:
            text.append(("values", ", ".join(r["allowed_values"])))
        found.append(Entry("column", f"{r['table_name']}.{r['column_name']}", tuple(text)))
    synonyms: dict[str, list[str]] = {}
    for r in _rows(con, "SELECT finding, raw_label FROM finding_map WHERE finding IS NOT NULL"):
        synonyms.setdefault(r["finding"], []).append(r["raw_label"])
    for r in _rows(con, "SELECT finding, parent, description FROM findings"):
        text = [("description", r["description"] or "")]
        if synonyms.get(r["finding"]):
            text.append(("raw labels", ", ".join(synonyms[r["finding"]])))
        if r["parent"]:
            text.append(("under", r["parent"]))
        found.append(Entry("finding", r["finding"], tuple(text)))
    for r in _rows(
        con,
        "SELECT raw_label, dataset, labeler, any_value(finding) AS finding, count(*) AS n "
        "FROM labels GROUP BY ALL ORDER BY raw_label, dataset, labeler",
    ):
        target = f"→ {r['finding']}" if r["finding"] else "→ no finding (unmapped)"
        found.append(
            Entry(
                "raw label",
                r["raw_label"],
                (("in", f"{r['dataset']} · {r['labeler']} {target}, {r['n']:,} row{'s' if r['n'] != 1 else ''}"),),
            )
        )
    for r in _rows(con, "SELECT * FROM catalog_datasets ORDER BY dataset"):
        text = [
            (k, v if isinstance(v, str) else ", ".join(map(str, v)))
            for k, v in r.items()
            if k != "dataset" and v and isinstance(v, (str, list))
        ]
        found.append(Entry("dataset", r["dataset"], tuple(text)))
    for q in list_queries():
        text = [("description", q.description)]
        if parameters(q):
            text.append(("parameters", ", ".join(parameters(q))))
        found.append(Entry("query", f"{q.group}/{q.name}", tuple(text)))
    for c in list_cohorts():
        text = [("description", c.description)]
        if c.params:
            text.append(("parameters", ", ".join(f"{p.name} {p.type}" for p in c.params)))
        found.append(Entry("cohort", c.name, tuple(text)))
    return found


def _window(text: str, at: int, length: int, width: int = 100) -> str:
    start = max(0, at - (width - length) // 2)
    end = min(len(text), start + width)
    start = max(0, end - width)
    return ("…" if start else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def _score(entry: Entry, term: str) -> Match | None:
    t = term.lower()
    name = entry.name.lower()
    short = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    first = entry.text[0][1] if entry.text else ""
    spaced = t.replace("_", " ")
    if t in (name, short) or spaced in (name.replace("_", " "), short.replace("_", " ")):
        return Match(entry.kind, entry.name, _window(first, 0, 0), 100)
    for what, text in entry.text:  # a synonym or allowed value named exactly
        if what in LISTS and t in (item.strip().lower() for item in text.split(",")):
            return Match(entry.kind, entry.name, f"{what}: {_window(text, text.lower().find(t), len(t))}", 90)
    own = short if entry.kind == "column" else name  # a column is not found by its table's name
    if own.startswith(t) or short.startswith(t):
        return Match(entry.kind, entry.name, _window(first, 0, 0), 80)
    if t in own:
        return Match(entry.kind, entry.name, _window(first, 0, 0), 60)
    for i, (what, text) in enumerate(entry.text):
        low = text.lower()
        at = low.find(t)
        if at >= 0:
            whole = re.search(rf"(?<![a-z0-9_]){re.escape(t)}(?![a-z0-9_])", low) is not None
            return Match(
                entry.kind, entry.name, f"{what}: {_window(text, at, len(t))}", (40 if whole else 30) - min(i, 5)
            )
    if t in name:
        return Match(entry.kind, entry.name, _window(first, 0, 0), 15)
    words = t.split()
    everything = " ".join([name] + [text.lower() for _, text in entry.text])
    if len(words) > 1 and all(w in everything for w in words):
        return Match(entry.kind, entry.name, _window(first, 0, 0), 20)
    return None


def search(con: duckdb.DuckDBPyConnection, term: str) -> list[Match]:
    """Matches of `term` (case-insensitive), best first."""
    term = term.strip()
    if not term:
        return []
    matches = [m for e in entries(con) if (m := _score(e, term)) is not None]
    return sorted(matches, key=lambda m: (-m.score, KINDS.index(m.kind), m.name.lower()))

"""What the data dictionary says, read from the catalog: one model that the HTML and Markdown writers render.

Column descriptions, types and vocabularies come from catalog_columns, which the catalog builds from
warehouse/schema.py, so a table added to the schema appears here with no change to this module.
Non-null percentages are computed on every row, with one aggregate query per table grouped by dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from .. import relations
from ..cohorts import list_cohorts
from ..queries import list_queries, parameters


@dataclass(frozen=True)
class ColumnDoc:
    table: str
    name: str
    type: str
    nullable: bool
    is_key: bool
    vocabulary: str | None
    allowed_values: tuple[str, ...]
    description: str
    non_null: dict[str, float]  # dataset -> percent of its rows where the column is not null


@dataclass(frozen=True)
class TableDoc:
    name: str
    description: str
    key: tuple[str, ...]
    derived: bool
    rows: dict[str, int]  # dataset -> rows (only datasets that have rows)
    columns: tuple[ColumnDoc, ...]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class RawLabel:
    dataset: str
    labeler: str
    raw_label: str
    rows: int
    positive: int


@dataclass(frozen=True)
class FindingDoc:
    id: str
    parent: str | None
    depth: int
    description: str
    children: tuple[str, ...]
    mapped_from: tuple[tuple[str, str], ...]  # (map source, raw label) rows of finding_map
    raw_labels: tuple[RawLabel, ...]  # what the labels table holds, per dataset

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.raw_labels)


@dataclass(frozen=True)
class UnmappedLabel:
    dataset: str
    labeler: str
    raw_label: str
    rows: int
    positive: int
    note: str | None  # why, when the map leaves it unmapped on purpose


@dataclass(frozen=True)
class QueryDoc:
    kind: str  # "query" or "cohort"
    name: str
    group: str
    description: str
    parameters: tuple[tuple[str, str, str, str], ...]  # (name, type, default, doc)
    path: str


@dataclass(frozen=True)
class DocsModel:
    meta: dict[str, str]
    tables: tuple[TableDoc, ...]
    references: tuple[relations.Reference, ...]
    vocabularies: dict[str, tuple[str, ...]]
    findings: tuple[FindingDoc, ...]  # depth-first, in the vocabulary file's order
    unmapped: tuple[UnmappedLabel, ...]
    dataset_columns: tuple[str, ...]  # every column catalog_datasets has, in order
    datasets: tuple[dict, ...]
    queries: tuple[QueryDoc, ...]
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def table(self, name: str) -> TableDoc:
        return next(t for t in self.tables if t.name == name)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def non_null_counts(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> dict[str, dict]:
    """dataset -> {"rows": n, column: non-null count}: one scan of the table, grouped by dataset (a table
    without a dataset column counts as one group, "all")."""
    counts = "".join(f", count({_quote(c)}) AS c{i}" for i, c in enumerate(columns))
    group = "dataset" if "dataset" in columns else "'all'"
    found = {}
    for row in con.execute(f"SELECT {group}, count(*){counts} FROM {_quote(table)} GROUP BY ALL").fetchall():
        found[row[0]] = {"rows": row[1], **dict(zip(columns, row[2:]))}
    return found


def _tables(con: duckdb.DuckDBPyConnection) -> list[TableDoc]:
    by_table: dict[str, list[dict]] = {}
    for row in _rows(con, "SELECT * FROM catalog_columns ORDER BY table_name, position"):
        by_table.setdefault(row["table_name"], []).append(row)
    docs = []
    for t in _rows(con, "SELECT table_name, description, key, derived FROM catalog_tables"):
        name, cols = t["table_name"], by_table.get(t["table_name"], [])
        counts = non_null_counts(con, name, [c["column_name"] for c in cols])
        columns = tuple(
            ColumnDoc(
                name,
                c["column_name"],
                c["type"],
                c["nullable"],
                c["is_key"],
                c["vocabulary"],
                tuple(c["allowed_values"] or ()),
                c["description"],
                {d: 100.0 * n[c["column_name"]] / n["rows"] for d, n in sorted(counts.items()) if n["rows"]},
            )
            for c in cols
        )
        docs.append(
            TableDoc(
                name,
                t["description"],
                tuple(t["key"]),
                t["derived"],
                {d: n["rows"] for d, n in sorted(counts.items())},
                columns,
            )
        )
    return docs


def _findings(con: duckdb.DuckDBPyConnection) -> list[FindingDoc]:
    vocab = _rows(con, "SELECT finding, parent, description FROM findings")
    mapped: dict[str, list[tuple[str, str]]] = {}
    for r in _rows(con, "SELECT source, raw_label, finding FROM finding_map WHERE finding IS NOT NULL"):
        mapped.setdefault(r["finding"], []).append((r["source"], r["raw_label"]))
    labels: dict[str, list[RawLabel]] = {}
    for r in _rows(
        con,
        "SELECT finding, dataset, labeler, raw_label, count(*) AS n, count(*) FILTER (WHERE value = 1) "
        "AS pos FROM labels WHERE finding IS NOT NULL GROUP BY ALL ORDER BY finding, dataset, n DESC, "
        "labeler, raw_label",
    ):
        labels.setdefault(r["finding"], []).append(
            RawLabel(r["dataset"], r["labeler"], r["raw_label"], r["n"], r["pos"])
        )
    children: dict[str | None, list[str]] = {}
    for v in vocab:
        children.setdefault(v["parent"], []).append(v["finding"])
    by_id = {v["finding"]: v for v in vocab}
    ordered: list[FindingDoc] = []

    def walk(finding: str, depth: int) -> None:
        v = by_id[finding]
        ordered.append(
            FindingDoc(
                finding,
                v["parent"],
                depth,
                v["description"] or "",
                tuple(children.get(finding, ())),
                tuple(mapped.get(finding, ())),
                tuple(labels.get(finding, ())),
            )
        )
        for child in children.get(finding, ()):
            walk(child, depth + 1)

    for root in children.get(None, ()):
        walk(root, 0)
    return ordered


def _unmapped(con: duckdb.DuckDBPyConnection) -> list[UnmappedLabel]:
    notes = {
        (r["source"], r["raw_label"].lower()): r["note"]
        for r in _rows(con, "SELECT source, raw_label, note FROM finding_map WHERE finding IS NULL")
    }
    found = []
    for r in _rows(con, "SELECT * FROM catalog_unmapped_labels ORDER BY dataset, label_rows DESC, raw_label"):
        key = r["raw_label"].lower()
        heading = key.split("/")[0].strip()  # a MeSH term with qualifiers: the heading's map row
        note = next(
            (
                notes[k]
                for k in ((r["labeler"], key), ("*", key), (r["labeler"], heading), ("*", heading))
                if k in notes
            ),
            None,
        )
        found.append(
            UnmappedLabel(r["dataset"], r["labeler"], r["raw_label"], r["label_rows"], r["positive_rows"], note)
        )
    return found


def _queries() -> list[QueryDoc]:
    docs = [
        QueryDoc(
            "query",
            q.name,
            q.group,
            q.description,
            tuple((p, "", "", "") for p in parameters(q)),
            f"sql/{q.group}/{q.name}.sql",
        )
        for q in list_queries()
    ]
    for c in list_cohorts():
        params = tuple((p.name, p.type, "NULL" if p.default is None else repr(p.default), p.doc) for p in c.params)
        docs.append(QueryDoc("cohort", c.name, "cohorts", c.description, params, f"sql/cohorts/{c.name}.sql"))
    return docs


def build_model(con: duckdb.DuckDBPyConnection) -> DocsModel:
    """Everything the data dictionary shows, from a catalog connection (warehouse.Warehouse.connect)."""
    tables = _tables(con)
    result = con.execute("SELECT * FROM catalog_datasets ORDER BY dataset")
    dataset_columns = tuple(d[0] for d in result.description)
    datasets = tuple(dict(zip(dataset_columns, row)) for row in result.fetchall())
    vocabularies: dict[str, list[str]] = {}
    for r in _rows(con, "SELECT vocabulary, value FROM catalog_vocabularies ORDER BY vocabulary, position"):
        vocabularies.setdefault(r["vocabulary"], []).append(r["value"])
    return DocsModel(
        meta=dict(con.execute("SELECT key, value FROM catalog_meta").fetchall()),
        tables=tuple(tables),
        references=tuple(relations.references(t.name for t in tables)),
        vocabularies={k: tuple(v) for k, v in vocabularies.items()},
        findings=tuple(_findings(con)),
        unmapped=tuple(_unmapped(con)),
        dataset_columns=dataset_columns,
        datasets=datasets,
        queries=tuple(_queries()),
    )

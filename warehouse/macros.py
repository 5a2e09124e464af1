"""Named queries (sql/cohorts/ and sql/stats/) as DuckDB table macros in the catalog, so user SQL can call them:
`SELECT * FROM frontal_pneumothorax(finding := 'pleural_effusion')` in `cxr sql`.

Each query becomes two macros. `_cxr_<name>_body(...)` holds the SQL with every `$param` renamed to a
positional `_cxr_p_<param>`, so a parameter never shadows a column of the same name (in a DuckDB macro an
unqualified name that is a parameter means the parameter). The public `<name>(param := default, ...)` calls
it. DuckDB refuses a table macro parameter named like a column the query binds, so such a parameter is
called `only_<param>` in the macro (qba_fine_tuning's `split` is `only_split := 'train'`); catalog_queries
lists every macro with its parameters as they are to be written.

A cohort's macro returns its manifest (every unit passing every rule) with the header's findings pivoted
under its default policy; a finding given by a FINDING parameter is the column `<param>_value` (frontal_pneumothorax's
`finding_value`).
Image roots are not known to the catalog, so absolute paths are NULL there; `cxr cohort run` has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from .queries import SQL_ROOT, named_query

_PARAM = re.compile(r"\$(\w+)\b")


@dataclass(frozen=True)
class MacroParam:
    name: str  # as the query file names it
    type: str
    default: object
    doc: str = ""


@dataclass(frozen=True)
class MacroQuery:
    group: str  # cohorts | stats
    name: str
    description: str
    params: tuple[MacroParam, ...]
    sql: str  # with $params


def named_queries(linked: tuple[str, ...]) -> list[MacroQuery]:
    """Every cohort and stats query, cohorts as their manifest SQL."""
    from .cohorts import list_cohorts

    found = []
    for c in list_cohorts():
        found.append(
            MacroQuery(
                "cohorts",
                c.name,
                c.description,
                tuple(MacroParam(p.name, p.type, p.default, p.doc) for p in c.params),
                _cohort_sql(c, linked),
            )
        )
    for path in sorted((SQL_ROOT / "stats").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".sql"):
            continue
        q = named_query("stats", path.name.removesuffix(".sql"))
        names = sorted(set(_PARAM.findall(q.sql)), key=q.sql.index)
        found.append(
            MacroQuery("stats", q.name, q.description, tuple(MacroParam(n, "VARCHAR", None) for n in names), q.sql)
        )
    return found


def _cohort_sql(cohort, linked: tuple[str, ...]) -> str:
    findings = []
    for f in cohort.findings:
        if not f.startswith("$"):
            findings.append(f)
        elif any(p.name == f[1:] and p.type == "FINDING" for p in cohort.params):
            findings.append(f)  # pivoted as labels[$param] into <param>_value
    full = (1 << len(cohort.rules)) - 1
    units = cohort.units_sql(findings, cohort.uncertain, {}, linked)
    return f"SELECT * EXCLUDE (mask) FROM (\n{units}\n) WHERE mask = {full}"


def literal(value) -> str:
    """A parameter default as SQL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _public_macro(con: duckdb.DuckDBPyConnection, q: MacroQuery, inner: str) -> list[tuple[str, MacroParam]]:
    """Create `<name>(param := default, ...)`; a parameter DuckDB refuses because a column of the query has its
    name ("Conflicting column names") is renamed only_<param> and the macro created again."""
    renamed: set[str] = set()
    while True:
        public = [(f"only_{p.name}" if p.name in renamed else p.name, p) for p in q.params]
        signature = ", ".join(f"{n} := {literal(p.default)}" for n, p in public)
        try:
            con.execute(
                f'CREATE OR REPLACE MACRO "{q.name}"({signature}) AS TABLE '
                f'SELECT * FROM "{inner}"({", ".join(n for n, _ in public)})'
            )
            return public
        except duckdb.BinderException as e:
            m = re.search(r"Conflicting column names for column (\w+)", str(e))
            if not m or m.group(1) in renamed or m.group(1) not in {p.name for p in q.params}:
                raise
            renamed.add(m.group(1))


def register(con: duckdb.DuckDBPyConnection, linked: tuple[str, ...]) -> pa.Table:
    """Create every macro on `con` (the catalog being built); the catalog_queries rows."""
    rows = []
    for q in named_queries(linked):
        inner = f"_cxr_{q.name}_body"
        body = _PARAM.sub(lambda m: f"_cxr_p_{m.group(1)}", q.sql)
        con.execute(
            f'CREATE OR REPLACE MACRO "{inner}"({", ".join(f"_cxr_p_{p.name}" for p in q.params)}) AS TABLE {body}'
        )
        public = _public_macro(con, q, inner)
        rows.append(
            {
                "query": q.name,
                "kind": q.group,
                "description": q.description,
                "parameters": [
                    {"name": n, "type": p.type, "default": literal(p.default), "doc": p.doc} for n, p in public
                ],
                "call": f"SELECT * FROM {q.name}({', '.join(f'{n} := {literal(p.default)}' for n, p in public)})",
                "sql": q.sql,
            }
        )
    param = pa.struct([("name", pa.string()), ("type", pa.string()), ("default", pa.string()), ("doc", pa.string())])
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("query", pa.string()),
                ("kind", pa.string()),
                ("description", pa.string()),
                ("parameters", pa.list_(param)),
                ("call", pa.string()),
                ("sql", pa.string()),
            ]
        ),
    )

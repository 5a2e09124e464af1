"""A cohort folder (`cxr cohort run NAME --out DIR`) as report parts: the attrition as a CONSORT-style flow,
Table 1 (table1.csv, when the run wrote one), split-balance charts and a table recounted from the manifest,
and the provenance with its citations.

The folder is the user's own output, read as files here (a plain in-memory DuckDB over the manifest), not
through the catalog.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt

from .charts import WIDTH, Chart, _config, _split_color
from .data import ReportError
from .tables import Column, ReportTable, split_key

PLURAL = {"image": "images", "study": "studies", "patient": "patients"}


@dataclass
class CohortData:
    folder: Path
    provenance: dict
    attrition: list[dict]
    table1: list[dict] | None  # None: the run wrote no table1.csv
    balance: list[dict] = field(default_factory=list)  # per split and dataset
    ages: list[dict] = field(default_factory=list)  # per split and 5-year bin
    sexes: list[dict] = field(default_factory=list)  # per split and sex
    findings: list[dict] = field(default_factory=list)  # per split and finding column

    @property
    def name(self) -> str:
        return self.provenance.get("cohort") or self.folder.name

    @property
    def unit(self) -> str:
        return self.provenance.get("unit", "image")


def _manifest(folder: Path) -> Path:
    for name in ("manifest.parquet", "manifest.csv", "manifest.jsonl"):
        if (folder / name).is_file():
            return folder / name
    raise ReportError(f"{folder}: no manifest.parquet (or .csv, .jsonl); is this a `cxr cohort run` folder?")


def load(folder: Path) -> CohortData:
    import duckdb

    folder = Path(folder)
    for needed in ("cohort.json", "attrition.csv"):
        if not (folder / needed).is_file():
            raise ReportError(f"{folder}: no {needed}; write the folder with `cxr cohort run NAME --out {folder}`")
    try:
        provenance = json.loads((folder / "cohort.json").read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{folder / 'cohort.json'}: not JSON (line {e.lineno}: {e.msg})") from None
    with (folder / "attrition.csv").open(newline="") as f:
        attrition = list(csv.DictReader(f))
    table1 = None
    if (folder / "table1.csv").is_file():
        with (folder / "table1.csv").open(newline="") as f:
            table1 = list(csv.DictReader(f))
    data = CohortData(folder, provenance, attrition, table1)
    manifest = _manifest(folder)
    reader = {".parquet": "read_parquet", ".csv": "read_csv", ".jsonl": "read_json"}[manifest.suffix]
    con = duckdb.connect(":memory:", config={"threads": 2})
    try:
        source = f"{reader}('{str(manifest).replace(chr(39), chr(39) * 2)}')"
        columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}

        def rows(sql: str) -> list[dict]:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        split = "coalesce(split, 'unassigned')"
        data.balance = rows(
            f"SELECT {split} AS split, dataset, count(*) AS units, "
            f"count(DISTINCT dataset || '/' || patient_id) AS patients FROM {source} "
            "GROUP BY ALL ORDER BY ALL"
        )
        if "age_years" in columns:
            data.ages = rows(
                f"SELECT {split} AS split, least(floor(age_years / 5) * 5, 95)::INTEGER AS age_from, "
                f"count(*) AS units FROM {source} GROUP BY ALL ORDER BY ALL"
            )
        if "sex" in columns:
            data.sexes = rows(
                f"SELECT {split} AS split, coalesce(sex, 'U') AS sex, count(*) AS units FROM {source} "
                "GROUP BY ALL ORDER BY ALL"
            )
        for finding in [f for f in provenance.get("findings", []) if f in columns]:
            q = f'"{finding}"'
            data.findings += rows(
                f"SELECT {split} AS split, '{finding}' AS finding, count({q}) AS labelled, "
                f"count(*) FILTER (WHERE {q} = 1) AS positive FROM {source} GROUP BY ALL"
            )
    finally:
        con.close()
    return data


# --- tables ---------------------------------------------------------------------------------------
def attrition_table(c: CohortData) -> ReportTable:
    unit = PLURAL.get(c.unit, c.unit)
    t = ReportTable(
        f"cohort.{c.name}.attrition",
        "Attrition",
        [
            Column("step", "Step", "count"),
            Column("rule", "Rule"),
            Column("images", "Images", "count"),
            Column("studies", "Studies", "count"),
            Column("patients", "Patients", "count"),
            Column("units_removed", f"{unit.capitalize()} removed", "count"),
            Column("removed_by_this_rule_alone", "By this rule alone", "count"),
        ],
        caption=f"What is left after each rule, in order, at image, study and patient level; the unit of the "
        f"cohort is the {c.unit}. 'By this rule alone' counts the {unit} only that rule removes.",
    )
    for a in c.attrition:
        t.add(
            [
                _int(a.get("step")),
                a.get("rule"),
                *[
                    _int(a.get(k))
                    for k in ("images", "studies", "patients", "units_removed", "removed_by_this_rule_alone")
                ],
            ]
        )
    return t


def table1_table(c: CohortData) -> ReportTable | None:
    """table1.csv as written; a column whose every filled cell is a number is shown as a number."""
    if not c.table1:
        return None
    names = list(c.table1[0])
    columns = []
    for n in names:
        filled = [r.get(n) for r in c.table1 if r.get(n) not in ("", None)]
        numbers = [_number(v) for v in filled]
        kind = (
            "text"
            if not filled or None in numbers
            else "count"
            if all(x is not None and float(x).is_integer() for x in numbers)
            else "float"
        )
        columns.append(Column(n, n, kind))
    t = ReportTable(
        f"cohort.{c.name}.table1",
        "Table 1",
        columns,
        caption="As the cohort run wrote it (table1.csv): characteristics per split, with standardized "
        "mean differences (SMD) between splits.",
    )
    for r in c.table1:
        t.add([r.get(col.name) if col.kind == "text" else _number(r.get(col.name)) for col in columns])
    return t


def balance_table(c: CohortData) -> ReportTable:
    """Per split: units, patients, share female, and each pivoted finding's share positive, from the manifest."""
    unit = PLURAL.get(c.unit, c.unit)
    splits = sorted({r["split"] for r in c.balance}, key=split_key)
    findings = sorted({r["finding"] for r in c.findings})
    t = ReportTable(
        f"cohort.{c.name}.split_balance",
        "Split balance",
        [
            Column("split", "Split"),
            Column(unit, unit.capitalize(), "count"),
            *([Column("patients", "Patients", "count")] if c.unit != "patient" else []),
            Column("female_percent", "Female (%)", "percent"),
            *[Column(f"{f}_positive_percent", f, "percent", "% positive") for f in findings],
        ],
        caption=f"Recounted from the manifest. Female: share of the split's {unit}; a finding's share is over the "
        f"{unit} labelled for it (the small figure).",
    )
    for s in splits:
        units = sum(r["units"] for r in c.balance if r["split"] == s)
        patients = sum(r["patients"] for r in c.balance if r["split"] == s)
        female = sum(r["units"] for r in c.sexes if r["split"] == s and r["sex"] == "F")
        cells = {r["finding"]: r for r in c.findings if r["split"] == s}
        pct = [
            100.0 * cells[f]["positive"] / cells[f]["labelled"] if f in cells and cells[f]["labelled"] else None
            for f in findings
        ]
        both = [patients] if c.unit != "patient" else []
        t.add(
            [s, units, *both, 100.0 * female / units if units and c.sexes else None, *pct],
            [
                None,
                None,
                *[None] * len(both),
                f"{female:,}" if c.sexes else None,
                *[f"of {cells[f]['labelled']:,}" if f in cells else None for f in findings],
            ],
        )
    return t


def provenance_items(c: CohortData) -> list[tuple[str, object]]:
    p = c.provenance
    params = ", ".join(f"{k} = {v}" for k, v in (p.get("parameters") or {}).items())
    versions = "; ".join(
        f"{t}: " + ", ".join(f"{d} v{v}" for d, v in by.items()) for t, by in (p.get("delta_versions") or {}).items()
    )
    return [
        ("cohort", p.get("cohort")),
        ("description", p.get("description")),
        ("unit", p.get("unit")),
        ("parameters", params or "none"),
        ("findings", ", ".join(p.get("findings") or []) or None),
        ("uncertain labels", p.get("uncertain")),
        ("split", p.get("split")),
        ("seed", p.get("seed")),
        ("datasets", ", ".join(p.get("datasets") or [])),
        ("run at", p.get("run_at")),
        ("warehouse version", p.get("warehouse_version")),
        ("schema version", p.get("schema_version")),
        ("project version", p.get("project_version")),
        ("table versions", versions or None),
        ("source fingerprints", [f"{d}: {v}" for d, v in (p.get("source_fingerprints") or {}).items()]),
        ("citations", [f"{d}: {_citation_text(v)}" for d, v in (p.get("citations") or {}).items()]),
        ("licences", [f"{d}: {_licence_text(v)}" for d, v in (p.get("licences") or {}).items()]),
        ("definition", p.get("file")),
    ]


def _citation_text(citation) -> str:
    """cohort.json's citation of a dataset: {text, bibtex} (or, in older runs, the text alone)."""
    return citation.get("text") or "unknown" if isinstance(citation, dict) else str(citation)


def _licence_text(licence) -> str:
    if not isinstance(licence, dict):
        return str(licence)
    parts = [licence.get("licence") or "unknown", licence.get("licence_url"), licence.get("access")]
    return " · ".join(str(x) for x in parts if x)


# --- charts ---------------------------------------------------------------------------------------
def balance_charts(c: CohortData) -> list[Chart]:
    unit = PLURAL.get(c.unit, c.unit)
    splits = sorted({r["split"] for r in c.balance}, key=split_key)
    charts = []
    if c.balance:
        chart = (
            alt.Chart(alt.Data(values=c.balance))
            .mark_bar(height=18)
            .encode(
                y=alt.Y("split:N", sort=splits, title=None),
                x=alt.X("sum(units):Q", title=unit),
                color=alt.Color("dataset:N", title="dataset", scale=alt.Scale(scheme="tableau10")),
            )
            .properties(width=WIDTH, height=alt.Step(26))
        )
        charts.append(
            Chart(
                f"cohort.{c.name}.units",
                f"{unit.capitalize()} per split and dataset",
                _config(chart),
                f"{sum(r['units'] for r in c.balance):,} {unit} in the manifest.",
            )
        )
    if c.sexes:
        order = ["M", "F", "U"]
        chart = (
            alt.Chart(alt.Data(values=c.sexes))
            .mark_bar(height=18)
            .encode(
                y=alt.Y("split:N", sort=splits, title=None),
                x=alt.X(
                    "sum(units):Q", stack="normalize", title=f"share of the split's {unit}", axis=alt.Axis(format="%")
                ),
                color=alt.Color(
                    "sex:N",
                    sort=order,
                    title="sex",
                    scale=alt.Scale(domain=order, range=["#3b6fb6", "#c8557a", "#b8bec7"]),
                ),
            )
            .properties(width=WIDTH, height=alt.Step(26))
        )
        charts.append(
            Chart(
                f"cohort.{c.name}.sex",
                "Sex per split",
                _config(chart),
                f"{sum(r['units'] for r in c.sexes if r['sex'] == 'U'):,} {unit} of unknown sex.",
            )
        )
    aged = [r for r in c.ages if r["age_from"] is not None]
    if aged:
        totals: dict[str, int] = {}
        for r in aged:
            totals[r["split"]] = totals.get(r["split"], 0) + r["units"]
        values = [{**r, "percent": 100.0 * r["units"] / totals[r["split"]]} for r in aged]
        chart = (
            alt.Chart(alt.Data(values=values))
            .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=1.8)
            .encode(
                x=alt.X("age_from:Q", title="age (5-year bins)", scale=alt.Scale(domain=[0, 100])),
                y=alt.Y("percent:Q", title=f"% of the split's {unit}"),
                color=_split_color(totals),
            )
            .properties(width=WIDTH, height=190)
        )
        missing = sum(r["units"] for r in c.ages if r["age_from"] is None)
        charts.append(
            Chart(
                f"cohort.{c.name}.age",
                "Age per split",
                _config(chart),
                f"{sum(totals.values()):,} {unit} with an age; {missing:,} without.",
            )
        )
    values = [{**r, "percent": 100.0 * r["positive"] / r["labelled"]} for r in c.findings if r["labelled"]]
    if values:
        chart = (
            alt.Chart(alt.Data(values=values))
            .mark_bar(height=alt.RelativeBandSize(0.9))
            .encode(
                y=alt.Y("finding:N", title=None),
                yOffset=alt.YOffset("split:N", sort=splits),
                x=alt.X("percent:Q", title=f"% of labelled {unit} positive"),
                color=_split_color(splits),
            )
            .properties(width=WIDTH, height=alt.Step(max(16, 6 * len(splits))))
        )
        charts.append(
            Chart(
                f"cohort.{c.name}.findings",
                "Findings per split",
                _config(chart),
                "Positive share of the units labelled for each pivoted finding.",
            )
        )
    return charts


def _int(text) -> int | None:
    value = _number(text)
    return None if value is None else int(value)


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None

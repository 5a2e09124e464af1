"""Table 1 of a cohort: who is in it, per split and overall, with standardized mean differences between splits.

Computed with DuckDB aggregates over the manifest (two queries: the numeric rows, and every categorical level
counted in one pass), so a cohort run needs neither pandas nor tableone; the tests build the same table with
`tableone`, the library epidemiologists cite for it, and compare. Rows:

- n (the cohort's units) and patients (distinct dataset + patient_id);
- age in years, mean (SD) and median [Q1,Q3] (linear interpolation, as pandas and tableone compute it), with
  the count of units whose age is missing;
- sex, race, ethnicity (race and ethnicity only when some dataset of the cohort records them; a unit whose
  dataset does not is `not recorded`);
- view (image cohorts: view_position; study and patient cohorts: whether a frontal image is among theirs);
- each chosen finding as the manifest has it after the uncertainty policy: positive, negative, uncertain
  (U-Ignore leaves none), or not stated.

SMD columns compare each pair of splits, as tableone does: Cohen's d with the pooled sample SD for age (the
second split's mean minus the first's), and Yang and Dalton's multinomial form for categorical rows (first
level dropped). Where a level is absent from both splits the covariance matrix is singular; the
Moore-Penrose inverse is used there (as R's tableone does with MASS::ginv), where Python's tableone prints nan.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import duckdb
import pyarrow as pa

AGE_MEAN = "Age, years, mean (SD)"
AGE_MEDIAN = "Age, years, median [Q1,Q3]"
FINDING_WORDS = {1: "positive", 0: "negative", -1: "uncertain"}
NOT_RECORDED = "not recorded"
NOT_STATED = "not stated"
OVERALL = "Overall"
MISSING = "Missing"
NO_SPLIT = "none"


@dataclass
class Table1:
    header: list[str]  # variable, level, Overall, the splits, Missing, then one SMD column per pair of splits
    rows: list[list[str]]
    groups: list[str]  # the splits, in column order

    def cell(self, variable: str, level: str, column: str) -> str:
        """The cell of a row (`level` '' for rows without levels) in a column named as the header names it."""
        at = self.header.index(column)
        for row in self.rows:
            if row[0] == variable and row[1] == level:
                return row[at]
        raise KeyError((variable, level))

    def to_csv(self, path: Path) -> Path:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows(self.rows)
        return path

    def to_markdown(self, path: Path, title: str) -> Path:
        def line(cells) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        lines = [line(self.header), "|" + "|".join("---" for _ in self.header) + "|", *map(line, self.rows)]
        path.write_text(f"# Table 1: {title}\n\n" + "\n".join(lines) + "\n")
        return path


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _order(levels) -> list[str]:
    return sorted(levels, key=lambda v: (v in (NOT_STATED, NOT_RECORDED), str(v)))


def categorical_variables(manifest: pa.Table, findings: list[str], recorded: bool) -> list[tuple[str, str]]:
    """(row label, SQL over `m`, the manifest with `_race` and `_ethnicity`) of each categorical variable."""
    columns = manifest.column_names
    out = [("Sex", "m.sex")]
    if recorded:
        out += [
            ("Race", f"coalesce(m._race, '{NOT_RECORDED}')"),
            ("Ethnicity", f"coalesce(m._ethnicity, '{NOT_RECORDED}')"),
        ]
    if "view_position" in columns:
        out.append(("View", "m.view_position"))
    elif "n_frontal" in columns:
        out.append(("Frontal image", "CASE WHEN coalesce(m.n_frontal, 0) > 0 THEN 'yes' ELSE 'no' END"))
    for f in findings:
        if f in columns:
            words = " ".join(f"WHEN {v} THEN '{w}'" for v, w in FINDING_WORDS.items())
            out.append((f, f"CASE m.{_ident(f)} {words} ELSE '{NOT_STATED}' END"))
        else:
            out.append((f, f"'{NOT_STATED}'"))
    return out


def build(manifest: pa.Table, findings: list[str], demographics: pa.Table | None = None) -> Table1:
    """Table 1 of the manifest's units, grouped by split; `demographics` holds (dataset, patient_id, race,
    ethnicity) rows for the datasets that record them (other rows are ignored)."""
    con = duckdb.connect(config={"threads": 2})
    try:
        con.register("m_raw", manifest)
        if demographics is None:
            con.execute(
                "CREATE TEMP TABLE d_raw (dataset VARCHAR, patient_id VARCHAR, race VARCHAR, ethnicity VARCHAR)"
            )
        else:
            con.register("d_raw", demographics.select(["dataset", "patient_id", "race", "ethnicity"]))
        con.execute(
            "CREATE TEMP VIEW md AS SELECT m.*, d.race AS _race, d.ethnicity AS _ethnicity, "
            f"coalesce(m.split, '{NO_SPLIT}') AS _grp FROM m_raw m "
            "LEFT JOIN d_raw d ON d.dataset = m.dataset AND d.patient_id = m.patient_id"
        )
        recorded = bool(
            con.execute("SELECT count(*) FROM md WHERE _race IS NOT NULL OR _ethnicity IS NOT NULL").fetchone()[0]  # type: ignore[index]
        )
        numeric = con.execute(
            """SELECT CASE WHEN grouping(_grp) = 1 THEN NULL ELSE _grp END AS grp, count(*), count(DISTINCT
                      dataset || chr(31) || patient_id), count(age_years), avg(age_years), stddev_samp(age_years),
                      quantile_cont(age_years, [0.25, 0.5, 0.75])
               FROM md GROUP BY GROUPING SETS ((_grp), ())"""
        ).fetchall()
        variables = categorical_variables(manifest, findings, recorded)
        selects = " UNION ALL ".join(
            f"SELECT {i} AS v, _grp, {sql} AS level FROM md m" for i, (_, sql) in enumerate(variables)
        )
        counts = con.execute(
            f"SELECT v, level, CASE WHEN grouping(_grp) = 1 THEN NULL ELSE _grp END, count(*) FROM ({selects}) "
            "GROUP BY GROUPING SETS ((v, level, _grp), (v, level))"
        ).fetchall()
    finally:
        con.close()

    stats = {r[0]: r[1:] for r in numeric}  # split (None: overall) -> n, patients, n_age, mean, sd, quartiles
    groups = sorted(g for g in stats if g is not None)
    grouped = len(groups) > 1
    shown = [OVERALL, *(groups if grouped else [])]
    pairs = list(combinations(groups, 2)) if grouped else []
    header = ["variable", "level", *shown, MISSING, *(f"SMD ({a},{b})" for a, b in pairs)]
    key = {OVERALL: None, **{g: g for g in groups}}
    n_of = {OVERALL: stats[None][0], **{g: stats[g][0] for g in groups}}

    def row(variable: str, level: str, cells: dict[str, str], missing: str = "", smd: dict | None = None) -> list[str]:
        return [variable, level, *(cells.get(g, "") for g in shown), missing, *((smd or {}).get(p, "") for p in pairs)]

    rows = [
        row("n", "", {g: str(n_of[g]) for g in shown}),
        row("patients", "", {g: str(stats[key[g]][1]) for g in shown}),
    ]
    missing_age = stats[None][0] - stats[None][2]
    age_smd = {p: _fmt_smd(_cont_smd(stats[p[0]], stats[p[1]])) for p in pairs}

    def mean_sd(s) -> str:
        if not s[2]:
            return ""
        return f"{s[3]:.1f} ({s[4]:.1f})" if s[4] is not None else f"{s[3]:.1f} (—)"

    def median_iqr(s) -> str:
        if not s[2]:
            return ""
        q1, med, q3 = s[5]
        return f"{med:.1f} [{q1:.1f},{q3:.1f}]"

    rows.append(row(AGE_MEAN, "", {g: mean_sd(stats[key[g]]) for g in shown}, str(missing_age), age_smd))
    rows.append(row(AGE_MEDIAN, "", {g: median_iqr(stats[key[g]]) for g in shown}, str(missing_age), age_smd))

    by_variable: dict[int, dict[str, dict]] = {}
    for v, level, grp, count in counts:
        by_variable.setdefault(v, {}).setdefault(level, {})[grp] = count
    for i, (label, _) in enumerate(variables):
        table = by_variable.get(i, {})
        levels = _order(table)
        smd = {}
        for a, b in pairs:
            pa_ = [table[lv].get(a, 0) / n_of[a] for lv in levels]
            pb_ = [table[lv].get(b, 0) / n_of[b] for lv in levels]
            smd[(a, b)] = _fmt_smd(_cat_smd(pa_, pb_))
        for j, level in enumerate(levels):
            cells = {
                g: f"{table[level].get(key[g], 0)} ({100 * table[level].get(key[g], 0) / n_of[g]:.1f})" for g in shown
            }
            rows.append(row(f"{label}, n (%)", level, cells, "", smd if j == 0 else None))
    return Table1(header, rows, groups if grouped else [])


def _cont_smd(a, b) -> float | None:
    """Cohen's d of b against a: (mean_b - mean_a) / sqrt((sd_a² + sd_b²) / 2), from (n, patients, n_age, mean,
    sd, quantiles) rows."""
    if not a[2] or not b[2] or a[4] is None or b[4] is None:
        return None
    pooled = math.sqrt((a[4] ** 2 + b[4] ** 2) / 2)
    return (b[3] - a[3]) / pooled if pooled > 0 else None


def _cat_smd(pa_: list[float], pb_: list[float]) -> float | None:
    """Yang and Dalton's SMD of a categorical variable: sqrt(d' S⁻¹ d) over the levels after the first, S the mean
    of the two multinomial covariance matrices (generalized inverse when S is singular)."""
    import numpy as np

    if len(pa_) < 2:
        return 0.0
    p1, p2 = np.asarray(pa_[1:]), np.asarray(pb_[1:])
    covs = []
    for p in (p1, p2):
        c = -np.outer(p, p)
        c[np.diag_indices_from(c)] = p * (1 - p)
        covs.append(c)
    diff = (p2 - p1).reshape(1, -1)
    value = float((diff @ np.linalg.pinv((covs[0] + covs[1]) / 2) @ diff.T)[0][0])
    return math.sqrt(max(value, 0.0))


def _fmt_smd(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.3f}"


def write(table: Table1, out: Path, title: str) -> dict[str, Path]:
    return {"table1_csv": table.to_csv(out / "table1.csv"), "table1_md": table.to_markdown(out / "table1.md", title)}

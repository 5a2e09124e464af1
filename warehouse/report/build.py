"""Puts the report's parts in order: read, tabulate, chart, render, write."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import charts as chart_parts
from . import cohort as cohort_parts
from . import data as data_parts
from . import tables as table_parts
from .files import table_markdown, write_csv
from .page import Part, Section, about_html, charts_html, esc, page, table_html

ABOUT_LABELS = {
    "name": "name",
    "version": "version",
    "access": "access",
    "licence": "licence",
    "licence_url": "licence URL",
    "homepage": "homepage",
    "citation": "citation",
    "bibtex": "BibTeX",
    "source_location": "read from",
    "last_ingest": "last ingest",
    "links_to": "links to",
    "notes": "notes",
}


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    csv: list[Path]
    tables: list[table_parts.ReportTable]
    charts: list[chart_parts.Chart]
    seconds: float


def _dataset_section(d, tables: dict, charts: list) -> Section:
    a = d.about
    anchor = f"ds-{d.dataset}"
    parts = [
        Part(
            f"{anchor}-about",
            "About",
            about_html([(ABOUT_LABELS[k], a.get(k)) for k in ABOUT_LABELS if k in a and k != "name"]),
        )
    ]
    parts.append(Part(f"{anchor}-splits", "Split statistics", _tables_html(tables["splits"], "Split statistics")))
    demo = []
    for t in tables["demographics"]:
        demo.append(
            table_html(t)
            if table_parts.recorded(t)
            else f'<h4>{esc(t.title)}</h4><p class="empty">{esc(t.caption)}</p>'
        )
    note = f'<p class="caption">{esc(table_parts.DEMOGRAPHICS_NOTE)}</p>' if demo else ""
    parts.append(
        Part(
            f"{anchor}-demographics",
            "Demographics",
            note + "".join(demo) or '<p class="empty">No studies or patients.</p>',
        )
    )
    parts.append(
        Part(f"{anchor}-charts", "Charts", charts_html(charts) if charts else '<p class="empty">Nothing to chart.</p>')
    )
    parts.append(
        Part(
            f"{anchor}-labels",
            "Labels",
            "".join(table_html(t) for t in tables["labels"]) or '<p class="empty">This dataset has no labels.</p>',
        )
    )
    if d.agreement is None:
        agreement = '<p class="empty">Labeler agreement: not computed (the catalog has no label_agreement table).</p>'
    else:
        agreement = (
            "".join(table_html(t) for t in tables["agreement"])
            or '<p class="empty">No two labelers label the same units of this dataset.</p>'
        )
    parts.append(Part(f"{anchor}-agreement", "Labeler agreement", agreement))
    studies = sum(r["studies"] for r in d.split_stats)
    lede = (
        f"{esc(a.get('access') or '')} · {studies:,} studies · ingested {esc(a.get('last_ingest') or '?')}"
        " · every figure over all rows"
    )
    return Section(anchor, a.get("name") or d.dataset, d.dataset, lede, parts)


def _tables_html(tables, part_title: str) -> str:
    """The part's tables; a table named like its part gets no second heading."""
    return "".join(table_html(t, heading=t.title != part_title) for t in tables)


def _flow_html(c) -> str:
    unit = cohort_parts.PLURAL.get(c.unit, c.unit)
    out = ['<div class="flow">']

    def counts(a) -> str:
        return (
            f'<span class="counts">{int(a["images"]):,} images · {int(a["studies"]):,} studies · '
            f'{int(a["patients"]):,} patients</span>'
        )

    for i, a in enumerate(c.attrition):
        key = {"image": "images", "study": "studies", "patient": "patients"}.get(c.unit, "images")
        if i == 0:
            out.append(
                f'<div class="box main" data-step="0">All {unit} in scope<b>{int(a[key]):,}</b>{counts(a)}</div>'
            )
            continue
        last = i == len(c.attrition) - 1
        out.append(
            f'<div class="down fork"></div><div class="branch"></div><div class="box out" data-step="{i}">'
            f'Excluded: not <em>{esc(a["rule"])}</em><b>{int(a["units_removed"]):,}</b>'
            f'<span class="counts">{int(a["removed_by_this_rule_alone"]):,} by this rule alone</span></div>'
        )
        out.append(
            f'<div class="down{" last" if last else ""}">{"<span></span>" if last else ""}</div><div></div><div></div>'
        )
        label = "In the cohort" if last else f"After rule {i}: {esc(a['rule'])}"
        out.append(
            f'<div class="box main" data-step="{i}">{label}<b>{int(a[key]):,}</b>{counts(a)}</div>'
            '<div></div><div></div>'
        )
    out.append("</div>")
    return "".join(out)


def _cohort_section(c, tables: list, charts: list) -> Section:
    anchor = f"cohort-{c.name}"
    attrition, table1, balance = tables
    parts = [
        Part(f"{anchor}-attrition", "Attrition", _flow_html(c) + table_html(attrition)),
        Part(
            f"{anchor}-table1",
            "Table 1",
            _tables_html([table1], "Table 1")
            if table1
            else '<p class="empty">Table 1: not computed (the cohort folder has no table1.csv).</p>',
        ),
        Part(f"{anchor}-balance", "Split balance", _tables_html([balance], "Split balance") + charts_html(charts)),
        Part(
            f"{anchor}-provenance",
            "Provenance",
            about_html(cohort_parts.provenance_items(c))
            + (
                f'<h4>Definition</h4><pre class="sql">{esc(c.provenance.get("sql"))}</pre>'
                if c.provenance.get("sql")
                else ""
            ),
        ),
    ]
    rows = c.provenance.get("rows")
    lede = f"{esc(c.provenance.get('description') or '')} · {rows:,} {c.unit}s" if rows is not None else ""
    return Section(anchor, f"Cohort {c.name}", str(c.folder), lede, parts, kind="cohort")


def write_report(warehouse, out: Path, datasets: list[str] | None = None, cohorts: Sequence[Path] = ()) -> ReportFiles:
    """report.html, report.md and tables/*.csv in `out`. Datasets default to every ingested one, unless only
    cohorts are asked for."""
    started = time.perf_counter()
    out = Path(out)
    engine = chart_parts.warm_up()
    loaded = data_parts.load(warehouse, datasets) if datasets or not cohorts else []
    cohort_data = [cohort_parts.load(Path(f)) for f in cohorts]
    plan: list[tuple[Section, list]] = []  # sections are made after every chart is drawn
    every_chart: list[chart_parts.Chart] = []
    pending = []
    for d in loaded:
        made = chart_parts.dataset_charts(d)
        every_chart += made
        grouped = table_parts.dataset_tables(d)
        pending.append(
            (
                lambda d=d, grouped=grouped, made=made: _dataset_section(d, grouped, made),
                [t for group in grouped.values() for t in group],
            )
        )
    for c in cohort_data:
        made = cohort_parts.balance_charts(c)
        every_chart += made
        listed = [cohort_parts.attrition_table(c), cohort_parts.table1_table(c), cohort_parts.balance_table(c)]
        pending.append(
            (
                lambda c=c, listed=listed, made=made: _cohort_section(c, listed, made),
                [t for t in listed if t is not None],
            )
        )
    engine.join()
    chart_parts.render(every_chart)
    plan = [(make(), flat) for make, flat in pending]

    sections, all_tables, markdown = [], [], []
    for section, flat in plan:
        sections.append(section)
        all_tables += flat
        markdown.append(f"## {section.title} (`{section.ident}`)\n\n" + "\n".join(table_markdown(t) for t in flat))
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{len(loaded)} dataset{'s' if len(loaded) != 1 else ''}"
        + (f", {len(cohort_data)} cohort{'s' if len(cohort_data) != 1 else ''}" if cohort_data else "")
        + f" · {built}"
    )
    footer = (
        "Every number is computed on all rows of the warehouse (never a sample); the small figure beside a "
        "number is its base or how many rows lack the field. Tables are also in report.md and tables/*.csv."
    )
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / "report.html"
    html_path.write_text(page("CXR warehouse report", subtitle, sections, footer))
    md_path = out / "report.md"
    md_path.write_text(f"# CXR warehouse report\n\n{subtitle}\n\n{footer}\n\n" + "\n".join(markdown))
    csvs = [write_csv(t, out / "tables") for t in all_tables]
    return ReportFiles(html_path, md_path, csvs, all_tables, every_chart, time.perf_counter() - started)

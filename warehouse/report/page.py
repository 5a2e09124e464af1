"""The HTML page: one self-contained file (inline CSS and SVG, no script, no external URL), with a sticky
table of contents, right-aligned numbers and each number's coverage in small type beside it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from .charts import Chart
from .tables import ReportTable, fmt

CSS = """
:root { --ink:#1d2330; --soft:#4a5160; --faint:#8a919c; --line:#e3e6eb; --bg:#f6f7f9; --card:#fff;
        --accent:#3b6fb6; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 Inter, "Helvetica Neue", Helvetica, Arial, sans-serif; color:var(--ink);
       background:var(--bg); }
.layout { display:grid; grid-template-columns: 250px minmax(0, 1fr); min-height:100vh;
          background: linear-gradient(to right, #fbfbfc 249px, var(--line) 249px, var(--line) 250px, transparent 250px); }
nav.toc { position:sticky; top:0; align-self:start; height:100vh; overflow:auto; padding:22px 18px;
          font-size:13px; }
nav.toc .brand { font-weight:650; font-size:15px; margin-bottom:2px; }
nav.toc .sub { color:var(--faint); font-size:12px; margin-bottom:18px; }
nav.toc ol { list-style:none; margin:0; padding:0; }
nav.toc > ol > li { margin:0 0 12px; }
nav.toc > ol > li > a { font-weight:600; color:var(--ink); }
nav.toc ol ol { margin:3px 0 0 10px; padding-left:8px; border-left:1px solid var(--line); }
nav.toc ol ol a { color:var(--soft); display:block; padding:1px 0; }
nav.toc a { text-decoration:none; } nav.toc a:hover { color:var(--accent); }
main { padding:28px 40px 80px; max-width:1180px; }
header.top h1 { font-size:24px; margin:0 0 4px; letter-spacing:-0.01em; }
header.top p { margin:0; color:var(--soft); }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; background:#eef2f8; color:var(--accent);
        font-size:12px; font-weight:500; vertical-align:middle; margin-left:6px; }
section.dataset, section.cohort { background:var(--card); border:1px solid var(--line); border-radius:10px;
        padding:22px 28px 26px; margin:26px 0; }
h2 { font-size:20px; margin:0 0 2px; letter-spacing:-0.01em; }
h2 .id { font: 500 13px ui-monospace, SFMono-Regular, Menlo, monospace; color:var(--faint); margin-left:8px; }
h3 { font-size:15px; margin:26px 0 8px; padding-top:14px; border-top:1px solid var(--line); }
h4 { font-size:13px; margin:16px 0 6px; color:var(--soft); font-weight:600; }
.lede { color:var(--soft); margin:4px 0 0; }
dl.about { display:grid; grid-template-columns: 130px 1fr; gap:4px 16px; margin:12px 0 0; font-size:13px; }
dl.about dt { color:var(--faint); } dl.about dd { margin:0; overflow-wrap:anywhere; }
dl.about ul { margin:0; padding-left:18px; }
.table-wrap { overflow-x:auto; margin:4px 0 2px; }
table { border-collapse:collapse; font-size:13px; min-width:40%; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
thead th { font-weight:600; color:var(--soft); text-align:left; border-bottom:1.5px solid #cfd4db;
           white-space:nowrap; }
thead tr.groups th { border-bottom:1px solid var(--line); font-size:11.5px; text-transform:uppercase;
           letter-spacing:0.04em; color:var(--faint); text-align:center; }
th.num, td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
tbody tr:hover { background:#fafbfc; }
td .cov { display:block; font-size:10.5px; color:var(--faint); line-height:1.2; }
p.caption { color:var(--faint); font-size:12px; margin:4px 0 12px; max-width:820px; }
p.empty { color:var(--soft); font-style:italic; margin:4px 0 12px; }
.charts { display:grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap:18px 26px; }
figure.chart { margin:0; padding:12px 14px; border:1px solid var(--line); border-radius:8px; }
figure.chart.wide { grid-column: 1 / -1; }
figure.chart figcaption { font-weight:600; font-size:13px; margin-bottom:6px; }
figure.chart svg { max-width:100%; height:auto; display:block; }
figure.chart p { color:var(--faint); font-size:11.5px; margin:6px 0 0; }
.flow { display:grid; grid-template-columns: minmax(240px, 340px) 40px minmax(220px, 320px); margin:10px 0 6px; }
.flow .box { border:1.5px solid #9fb4d4; background:#f4f7fc; border-radius:6px; padding:8px 12px;
             font-size:12.5px; text-align:center; }
.flow .box b { font-size:15px; display:block; }
.flow .box .counts { color:var(--soft); font-size:11.5px; }
.flow .box.out { border-color:#d9b2a2; background:#fcf6f3; text-align:left; }
.flow .down { grid-column:1; min-height:26px; position:relative; }
.flow .down::before { content:""; position:absolute; left:50%; top:0; bottom:0; border-left:1.5px solid #9fb4d4; }
.flow .down.fork::after { content:""; position:absolute; left:50%; right:0; top:50%; border-top:1.5px solid #d9b2a2; }
.flow .down.last { background: linear-gradient(#9fb4d4, #9fb4d4) no-repeat; background-size:0 0; }
.flow .down.last span { position:absolute; left:calc(50% - 4.5px); bottom:-1px; border:5px solid transparent;
             border-top-color:#9fb4d4; border-bottom:0; }
.flow .branch { grid-column:2; position:relative; }
.flow .branch::before { content:""; position:absolute; left:0; right:0; top:50%; border-top:1.5px solid #d9b2a2; }
.flow .main { grid-column:1; } .flow .out { grid-column:3; margin:12px 0; }
pre.sql { background:#f6f7f9; border:1px solid var(--line); border-radius:6px; padding:10px 12px; font-size:12px;
          overflow-x:auto; }
footer { color:var(--faint); font-size:12px; margin-top:30px; }
@media print { nav.toc { display:none; } .layout { display:block; } section { break-inside:avoid-page; } }
"""


@dataclass
class Part:
    """A titled part of a section (its own entry in the table of contents)."""

    anchor: str
    title: str
    body: str


@dataclass
class Section:
    anchor: str
    title: str
    ident: str
    lede: str
    parts: list[Part] = field(default_factory=list)
    kind: str = "dataset"


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def table_html(t: ReportTable, heading: bool = True) -> str:
    numeric = [c.kind != "text" for c in t.columns]
    head = []
    if any(c.group for c in t.columns):
        cells, i = [], 0
        while i < len(t.columns):
            group, span = t.columns[i].group, 1
            while i + span < len(t.columns) and t.columns[i + span].group == group:
                span += 1
            cells.append(f'<th colspan="{span}">{esc(group or "")}</th>')
            i += span
        head.append(f'<tr class="groups">{"".join(cells)}</tr>')
    head.append(
        "<tr>"
        + "".join(f'<th class="{"num" if n else ""}">{esc(c.label)}</th>' for c, n in zip(t.columns, numeric))
        + "</tr>"
    )
    body = []
    for values, notes in zip(t.rows, t.notes):
        cells = []
        for c, v, note, num in zip(t.columns, values, notes, numeric):
            cov = f'<span class="cov">{esc(note)}</span>' if note else ""
            cells.append(
                f'<td class="{"num" if num else ""}" data-col="{esc(c.name)}">'
                f'<span class="v">{esc(fmt(v, c.kind))}</span>{cov}</td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{esc(t.caption)}</p>' if t.caption else ""
    title = f"<h4>{esc(t.title)}</h4>" if heading else ""
    return (
        f'{title}<div class="table-wrap"><table data-table="{esc(t.key)}">'
        f'<thead>{"".join(head)}</thead><tbody>{"".join(body)}</tbody></table></div>{caption}'
    )


def charts_html(charts: list[Chart]) -> str:
    return (
        '<div class="charts">'
        + "".join(
            f'<figure class="chart{" wide" if c.wide else ""}" data-chart="{esc(c.key)}">'
            f'<figcaption>{esc(c.title)}</figcaption>{c.svg}<p>{esc(c.caption)}</p></figure>'
            for c in charts
        )
        + "</div>"
    )


def about_html(items: list[tuple[str, object]]) -> str:
    rows = []
    for label, value in items:
        if value in (None, "", []):
            continue
        if isinstance(value, (list, tuple)):
            body = "<ul>" + "".join(f"<li>{esc(v)}</li>" for v in value) + "</ul>"
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            body = f'<a href="{esc(value)}">{esc(value)}</a>'
        else:
            body = esc(value)
        rows.append(f"<dt>{esc(label)}</dt><dd>{body}</dd>")
    return f'<dl class="about">{"".join(rows)}</dl>'


def page(title: str, subtitle: str, sections: list[Section], footer: str) -> str:
    toc = "".join(
        f'<li><a href="#{s.anchor}">{esc(s.title)}</a><ol>'
        + "".join(f'<li><a href="#{p.anchor}">{esc(p.title)}</a></li>' for p in s.parts)
        + "</ol></li>"
        for s in sections
    )
    body = "".join(
        f'<section class="{s.kind}" id="{s.anchor}"><h2>{esc(s.title)}<span class="id">{esc(s.ident)}</span></h2>'
        f'<p class="lede">{s.lede}</p>'
        + "".join(f'<h3 id="{p.anchor}">{esc(p.title)}</h3>{p.body}' for p in s.parts)
        + "</section>"
        for s in sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><div class="layout"><nav class="toc"><div class="brand">{esc(title)}</div>'
        f'<div class="sub">{esc(subtitle)}</div><ol>{toc}</ol></nav><main><header class="top">'
        f'<h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>{body}<footer>{esc(footer)}</footer></main></div>'
        f'</body></html>'
    )

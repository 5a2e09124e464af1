"""The data dictionary as one self-contained index.html: inline CSS, inline SVG, a few lines of inline script.

Nothing is fetched: no fonts, no scripts, no images from elsewhere, so the page works offline and from
a file:// URL. Every table has the anchor `table-<name>`, every column `column-<table>-<column>`, every
finding `finding-<id>`, every dataset `dataset-<id>` and every query or cohort `query-<name>`.
"""

from __future__ import annotations

from html import escape
from importlib import resources

from .erd import erd_svg
from .format import cell_text, heat, percent_text
from .model import ColumnDoc, DocsModel, FindingDoc, QueryDoc, TableDoc

UNMAPPED_SHOWN = 10  # unmapped raw labels listed per dataset before "more"
RAW_SHOWN = 8  # raw labels listed per finding before "more"
CHIPS_SHOWN = 6  # mapped raw labels shown per finding before "more"
WIDE_FIELDS = ("citation", "notes", "source_location", "source_fingerprint", "homepage")
NOT_IN_MAP = '<span class="badge warn">not in the map</span>'


def _asset(name: str) -> str:
    return resources.files("warehouse.docs").joinpath(name).read_text()


def _e(value) -> str:
    return escape(str(value), quote=True)


def _filter_text(*parts) -> str:
    return _e(" ".join(str(p) for p in parts if p).lower())


def _column_row(c: ColumnDoc, datasets: list[str], rows: dict[str, int]) -> str:
    badges = []
    if c.is_key:
        badges.append('<span class="badge key">key</span>')
    if not c.nullable:
        badges.append('<span class="badge req">not null</span>')
    vocab = ""
    if c.allowed_values:
        vocab = (
            f'<div class="vocab"><span class="muted">{_e(c.vocabulary)}:</span> '
            + "".join(f'<span class="chip">{_e(v)}</span>' for v in c.allowed_values)
            + "</div>"
        )
    cells = []
    for d in datasets:
        p = c.non_null.get(d)
        if p is None:
            cells.append('<td class="nn zero">·</td>')
            continue
        n = round(p * rows[d] / 100)
        bg, fg = heat(p)
        cls = "nn zero" if n == 0 else "nn"
        cells.append(
            f'<td class="{cls}" style="background:{bg};color:{fg}" data-dataset="{_e(d)}" '
            f'data-non-null="{n}" data-rows="{rows[d]}" title="{_e(d)}: {n:,} of {rows[d]:,} rows '
            f'not null">{percent_text(p)}</td>'
        )
    filled = " ".join(d for d in datasets if c.non_null.get(d))
    return (
        f'<tr id="column-{_e(c.table)}-{_e(c.name)}" data-row data-filter="'
        f'{_filter_text(c.name, c.type, c.description, c.vocabulary, " ".join(c.allowed_values), filled)}">'
        f'<td class="name"><a href="#column-{_e(c.table)}-{_e(c.name)}"><code>{_e(c.name)}</code></a>'
        f'<div>{" ".join(badges)}</div></td>'
        f'<td class="type mono">{_e(c.type)}</td>'
        f'<td>{_e(c.description)}{vocab}</td>' + "".join(cells) + "</tr>"
    )


def _table_card(t: TableDoc) -> str:
    datasets = list(t.rows)
    kind = '<span class="badge derived">derived</span>' if t.derived else '<span class="badge">source</span>'
    spread = " · ".join(f"{_e(d)} <b>{n:,}</b>" for d, n in t.rows.items()) or "no rows yet"
    heads = "".join(f'<th class="ds" title="{_e(d)}: percent of its rows not null">{_e(d)}</th>' for d in datasets)
    rows = "".join(_column_row(c, datasets, t.rows) for c in t.columns)
    return (
        f'<section class="card" id="table-{_e(t.name)}" data-group data-filter="'
        f'{_filter_text(t.name, t.description)}">'
        f'<h3><code>{_e(t.name)}</code> {kind}<a class="anchor" href="#table-{_e(t.name)}">#</a></h3>'
        f'<p class="desc">{_e(t.description)}</p>'
        f'<div class="meta"><span>key <b class="mono">{_e(", ".join(("dataset",) + t.key))}</b></span>'
        f'<span><b>{t.total_rows:,}</b> rows</span><span>{len(t.columns)} columns</span>'
        f'<span>{spread}</span></div>'
        f'<div class="scroll"><table class="grid columns"><thead><tr><th>column</th><th>type</th>'
        f'<th>description</th>{heads}</tr></thead><tbody>{rows}</tbody></table></div></section>'
    )


def _tables(model: DocsModel) -> str:
    return (
        '<section class="part" id="tables"><h2>Tables and columns</h2><p class="lead">Every canonical table '
        'of the schema. The shaded cells give, per dataset that has rows in the table, the percent of its rows '
        'where the column is not null, computed on all rows.</p>'
        '<div class="legend">not null: 0%<span class="swatch"></span>100%<span>· = the dataset has no rows in '
        'the table</span></div>' + "".join(_table_card(t) for t in model.tables) + "</section>"
    )


def _raw_item(r) -> str:
    return (
        f'<li data-dataset="{_e(r.dataset)}" data-labeler="{_e(r.labeler)}" data-raw-label="{_e(r.raw_label)}" '
        f'data-rows="{r.rows}"><b>{_e(r.raw_label)}</b><span class="who">{_e(r.dataset)} · {_e(r.labeler)}</span>'
        f'<span class="cnt" title="{r.rows:,} label rows, {r.positive:,} positive">{r.rows:,} '
        f'<span class="faint">({r.positive:,} pos.)</span></span></li>'
    )


def _raw_list(f: FindingDoc) -> str:
    """The raw labels by rows, the most frequent first; the long tail folded away."""
    if not f.raw_labels:
        return '<span class="faint">no labels in the warehouse</span>'
    ranked = sorted(f.raw_labels, key=lambda r: (-r.rows, r.dataset, r.labeler, r.raw_label))
    shown, rest = ranked[:RAW_SHOWN], ranked[RAW_SHOWN:]
    html = f'<ul class="raw">{"".join(_raw_item(r) for r in shown)}</ul>'
    if rest:
        html += (
            f'<details class="tail"><summary>{len(rest)} more raw labels ({sum(r.rows for r in rest):,} rows)'
            f'</summary><ul class="raw">{"".join(_raw_item(r) for r in rest)}</ul></details>'
        )
    return html


def _finding_row(f: FindingDoc) -> str:
    indent = "".join('<span class="indent">&nbsp;&nbsp;&nbsp;&nbsp;</span>' for _ in range(f.depth))
    branch = '<span class="indent">└&nbsp;</span>' if f.depth else ""
    chips = [f'<span class="chip" title="finding_map source {_e(s)}">{_e(r)}</span>' for s, r in f.mapped_from]
    mapped = " ".join(chips[:CHIPS_SHOWN])
    if len(chips) > CHIPS_SHOWN:
        mapped += (
            f' <details class="more"><summary>{len(chips) - CHIPS_SHOWN} more mapped raw labels</summary>'
            + " ".join(chips[CHIPS_SHOWN:])
            + "</details>"
        )
    return (
        f'<tr id="finding-{_e(f.id)}" data-row data-filter="'
        f'{_filter_text(f.id, f.parent, f.description, " ".join(r for _, r in f.mapped_from), " ".join(r.raw_label + " " + r.dataset for r in f.raw_labels))}">'
        f'<td class="finding name">{indent}{branch}<a href="#finding-{_e(f.id)}"><code>{_e(f.id)}</code></a></td>'
        f'<td class="fdesc">{_e(f.description)}<div>{mapped}</div></td>'
        f'<td class="num">{f.rows:,}</td><td class="raw-cell">{_raw_list(f)}</td></tr>'
    )


def _findings(model: DocsModel) -> str:
    rows = "".join(_finding_row(f) for f in model.findings)
    return (
        '<section class="part" id="findings" data-group data-filter="findings vocabulary">'
        '<h2>Findings vocabulary</h2><p class="lead">The harmonized findings as a tree (a cohort that asks for a '
        'finding gets the findings under it through <code>finding_hierarchy</code>). Chips are the raw labels '
        '<code>finding_map</code> maps to the finding; the right column lists the raw labels the warehouse\'s '
        '<code>labels</code> table holds for it, per dataset and labeler, with their rows.</p>'
        '<div class="card scroll"><table class="grid"><thead><tr><th>finding</th><th>description and mapped raw '
        'labels</th><th class="num">label rows</th><th>raw labels in the warehouse</th></tr></thead>'
        f'<tbody>{rows}</tbody></table></div></section>'
    )


UNMAPPED_HEAD = (
    '<thead><tr><th>labeler</th><th>raw label</th><th class="num">rows</th><th class="num">positive</th>'
    '<th>why</th></tr></thead>'
)


def _unmapped_row(u) -> str:
    return (
        f'<tr data-row data-filter="{_filter_text(u.dataset, u.labeler, u.raw_label, u.note)}">'
        f'<td class="mono">{_e(u.labeler)}</td><td><b>{_e(u.raw_label)}</b></td>'
        f'<td class="num">{u.rows:,}</td><td class="num">{u.positive:,}</td>'
        f'<td>{_e(u.note) if u.note else NOT_IN_MAP}</td></tr>'
    )


def _unmapped(model: DocsModel) -> str:
    """Per dataset, its unmapped raw labels by rows; past the first few, folded away."""
    by_dataset: dict[str, list] = {}
    for u in model.unmapped:
        by_dataset.setdefault(u.dataset, []).append(u)
    cards = []
    for dataset, found in by_dataset.items():
        found = sorted(found, key=lambda u: (-u.rows, u.raw_label))
        gaps = sum(1 for u in found if not u.note)
        head, rest = found[:UNMAPPED_SHOWN], found[UNMAPPED_SHOWN:]
        more = (
            (
                f'<details class="tail"><summary>{len(rest)} more ({sum(u.rows for u in rest):,} rows)</summary>'
                f'<table class="grid">{UNMAPPED_HEAD}<tbody>{"".join(map(_unmapped_row, rest))}</tbody></table>'
                '</details>'
            )
            if rest
            else ""
        )
        cards.append(
            f'<div class="card scroll"><h3><code>{_e(dataset)}</code> <span class="muted">'
            f'{len(found):,} raw labels, '
            f'{sum(u.rows for u in found):,} label rows; {gaps:,} not in the map</span></h3>'
            f'<table class="grid">{UNMAPPED_HEAD}<tbody>{"".join(map(_unmapped_row, head))}</tbody></table>'
            f'{more}</div>'
        )
    body = "".join(cards) or '<p class="muted">Every raw label maps to a finding.</p>'
    return (
        '<section class="part" id="unmapped" data-group data-filter="unmapped labels">'
        '<h2>Unmapped raw labels</h2><p class="lead">Raw labels whose rows have no finding '
        '(<code>catalog_unmapped_labels</code>), per dataset: left out on purpose, with the reason, or gaps of '
        f'the map.</p>{body}</section>'
    )


def _dataset_card(model: DocsModel, d: dict) -> str:
    narrow, wide = [], []  # pairs side by side first, then long values on a row each
    for column in model.dataset_columns:
        if column in ("dataset", "name"):
            continue
        value = d.get(column)
        if "bibtex" in column.lower() and value:
            shown = f'<pre class="bib">{_e(value)}</pre>'
        elif column.lower().startswith("licen") and not value:
            shown = '<span class="badge warn">unknown</span>'
        elif value is None or value == [] or value == "":
            shown = '<span class="faint">—</span>'
        elif column == "links_to":
            shown = f'<a href="#dataset-{_e(value)}">{_e(value)}</a>'
        elif column == "tables":
            shown = " ".join(f'<a class="chip" href="#table-{_e(t)}">{_e(t)}</a>' for t in value)
        elif column == "homepage":
            shown = f'<a href="{_e(value)}" rel="noreferrer">{_e(value)}</a>'
        elif isinstance(value, list):
            shown = "<br>".join(_e(cell_text(v)) for v in value)
        else:
            shown = _e(cell_text(value))
        if column in WIDE_FIELDS or "bibtex" in column.lower() or len(cell_text(value)) > 60:
            wide.append(f'<dt class="wide">{_e(column)}</dt><dd>{shown}</dd>')
        else:
            narrow.append(f"<dt>{_e(column)}</dt><dd>{shown}</dd>")
    if not any(c.lower().startswith("licen") for c in model.dataset_columns):
        narrow.insert(2, '<dt>licence</dt><dd><span class="badge warn">unknown</span></dd>')
    fields = narrow + wide
    state = (
        '<span class="badge">ingested</span>' if d.get("ingested") else '<span class="badge req">not ingested</span>'
    )
    return (
        f'<section class="card" id="dataset-{_e(d["dataset"])}" data-group data-filter="'
        f'{_filter_text(*(cell_text(v) for v in d.values()))}"><h3><code>{_e(d["dataset"])}</code> '
        f'<span>{_e(d.get("name") or "")}</span> {state}</h3><dl class="fields">{"".join(fields)}</dl></section>'
    )


def _datasets(model: DocsModel) -> str:
    return (
        '<section class="part" id="datasets"><h2>Dataset registry</h2><p class="lead">Every dataset the '
        'warehouse knows, with every field of <code>catalog_datasets</code>.</p>'
        + "".join(_dataset_card(model, d) for d in model.datasets)
        + "</section>"
    )


def _query_row(q: QueryDoc) -> str:
    params = (
        "".join(
            f'<div><code>{_e(n)}</code>{(" <span class=muted>" + _e(t) + "</span>") if t else ""}'
            f'{(" = <code>" + _e(dflt) + "</code>") if dflt else ""}{(" — " + _e(doc)) if doc else ""}</div>'
            for n, t, dflt, doc in q.parameters
        )
        or '<span class="faint">none</span>'
    )
    kind = (
        '<span class="badge derived">cohort</span>'
        if q.kind == "cohort"
        else f'<span class="badge">{_e(q.group)}</span>'
    )
    return (
        f'<tr id="query-{_e(q.name)}" data-row data-filter="{_filter_text(q.name, q.group, q.kind, q.description)}">'
        f'<td class="name"><code>{_e(q.name)}</code><div>{kind}</div></td><td>{_e(q.description)}'
        f'<div class="faint mono">{_e(q.path)}</div></td><td class="params">{params}</td></tr>'
    )


def _queries(model: DocsModel) -> str:
    return (
        '<section class="part" id="queries" data-group data-filter="named queries cohorts">'
        '<h2>Named queries and cohorts</h2><p class="lead">SQL files under <code>sql/</code>: named queries '
        '(run against the catalog) and cohorts (<code>cxr cohort run NAME</code>), with their parameters.</p>'
        '<div class="card scroll"><table class="grid"><thead><tr><th>name</th><th>description</th>'
        '<th>parameters</th></tr></thead><tbody>'
        + "".join(_query_row(q) for q in model.queries)
        + "</tbody></table></div></section>"
    )


def _sidebar(model: DocsModel) -> str:
    tables = "".join(
        f'<li><a href="#table-{_e(t.name)}"><span>{_e(t.name)}</span><span class="n">{t.total_rows:,}</span></a></li>'
        for t in model.tables
    )
    datasets = "".join(
        f'<li><a href="#dataset-{_e(d["dataset"])}"><span>{_e(d["dataset"])}</span></a></li>' for d in model.datasets
    )
    return (
        '<nav class="sidebar"><div class="brand">cxr-warehouse<small>data dictionary</small></div>'
        '<input id="filter" type="search" placeholder="Filter tables, columns, findings… ( / )" '
        'aria-label="Filter">'
        '<div class="filter-note" id="filter-note"></div>'
        '<h4>Sections</h4><ul><li><a href="#overview">Overview</a></li><li><a href="#diagram">Diagram</a></li>'
        '<li><a href="#findings">Findings</a></li><li><a href="#unmapped">Unmapped labels</a></li>'
        '<li><a href="#datasets">Datasets</a></li><li><a href="#queries">Queries and cohorts</a></li></ul>'
        f'<h4>Tables</h4><ul>{tables}</ul><h4>Datasets</h4><ul>{datasets}</ul></nav>'
    )


def _overview(model: DocsModel) -> str:
    ingested = sum(1 for d in model.datasets if d.get("ingested"))
    stats = [
        (len(model.tables), "tables"),
        (sum(len(t.columns) for t in model.tables), "columns"),
        (ingested, f"of {len(model.datasets)} datasets ingested"),
        (len(model.findings), "findings"),
        (sum(1 for q in model.queries if q.kind == "query"), "named queries"),
        (sum(1 for q in model.queries if q.kind == "cohort"), "cohorts"),
    ]
    cards = "".join(f'<div class="stat"><b>{n:,}</b><span>{_e(label)}</span></div>' for n, label in stats)
    m = model.meta
    return (
        f'<header class="page" id="overview"><h1>Data dictionary</h1><p>Warehouse version '
        f'<b>{_e(m.get("warehouse_version") or "—")}</b> · schema version {_e(m.get("schema_version", ""))} · '
        f'catalog built {_e(m.get("built_at", ""))} · generated {_e(model.generated_at)}</p></header>'
        f'<div class="cards">{cards}</div>'
    )


def _diagram(model: DocsModel) -> str:
    return (
        '<section class="part" id="diagram"><h2>Entity-relationship diagram</h2><p class="lead">How the '
        'canonical tables join, from the references declared beside the schema (<code>warehouse/relations.py'
        '</code>). Click a table to jump to its columns.</p>'
        f'<div class="erd-wrap">{erd_svg(model.tables, model.references)}</div></section>'
    )


def render_html(model: DocsModel) -> str:
    body = (
        _sidebar(model)
        + "<main>"
        + _overview(model)
        + _diagram(model)
        + _tables(model)
        + _findings(model)
        + _unmapped(model)
        + _datasets(model)
        + _queries(model)
        + "<footer>Generated by <code>cxr catalog docs</code> from the catalog and "
        "<code>warehouse/schema.py</code>.</footer></main>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f'<title>cxr-warehouse data dictionary</title><style>{_asset("style.css")}</style></head>'
        f'<body>{body}<script>{_asset("filter.js")}</script></body></html>'
    )

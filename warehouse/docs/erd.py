"""The entity-relationship diagram of the canonical tables, as plain SVG (no network, no script).

Tables are laid out in columns by how far they stand from a table that refers to nothing (patients
first, then what refers to it, ...), each column ordered by where its referenced tables sit, so the
lines run left to right and rarely cross. A box lists the key and the referring columns; the lines
go from a referring column to the key it names, with crow's feet on the "many" side. Tables that
neither refer nor are referred to (summaries, the quarantine) sit in a row of their own below.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from ..relations import Reference
from .model import TableDoc

BOX_W, HEAD_H, ROW_H, PAD = 234, 30, 20, 8
GAP_X, GAP_Y, MARGIN, LANE = 66, 24, 20, 12
SOURCE_FILL, DERIVED_FILL = "#1e4f7a", "#2f6f62"


@dataclass
class Box:
    table: TableDoc
    rows: list[tuple[str, str, str]]  # (marker, column, type)
    hidden: int
    x: float = 0
    y: float = 0
    column: int = -1

    @property
    def height(self) -> float:
        return HEAD_H + PAD + ROW_H * (len(self.rows) + (1 if self.hidden else 0)) + PAD / 2

    def row_y(self, column: str) -> float:
        for i, (_, name, _) in enumerate(self.rows):
            if name == column:
                return self.y + HEAD_H + PAD / 2 + ROW_H * i + ROW_H / 2
        return self.y + HEAD_H / 2


def _box(table: TableDoc, refs: list[Reference]) -> Box:
    referring = {c for r in refs if r.table == table.name for c in r.columns}
    shown = [c for c in table.columns if c.name in table.key or c.name in referring]
    rows = [("PK" if c.name in table.key else "FK", c.name, c.type) for c in shown]
    rows = [(("PK FK" if m == "PK" and c in referring else m), c, t) for m, c, t in rows]
    return Box(table, rows, len(table.columns) - len(shown))


def _ranks(names: list[str], refs: list[Reference]) -> dict[str, int]:
    targets = {n: {r.to_table for r in refs if r.table == n and r.to_table != n} for n in names}
    ranks: dict[str, int] = {}

    def rank(n: str, path: tuple[str, ...] = ()) -> int:
        if n not in ranks:
            ranks[n] = 0 if not targets[n] or n in path else 1 + max(rank(t, path + (n,)) for t in targets[n])
        return ranks[n]

    for n in names:
        rank(n)
    return ranks


def _long(ref: Reference, ranks: dict[str, int]) -> bool:
    """A line that would pass behind the boxes of a column between its ends."""
    return ranks[ref.table] - ranks[ref.to_table] > 1


def _layout(tables: list[TableDoc], refs: list[Reference]) -> tuple[list[Box], list[Box], float, float]:
    linked = {n for r in refs for n in (r.table, r.to_table)}
    boxes = {t.name: _box(t, refs) for t in tables}
    joined = [t.name for t in tables if t.name in linked]
    ranks = _ranks(joined, refs)
    columns: list[list[str]] = [[] for _ in range(max(ranks.values(), default=-1) + 1)]
    for n in joined:
        columns[ranks[n]].append(n)
    order = {n: i for i, n in enumerate(joined)}
    centre: dict[str, float] = {}
    for col in columns:  # order each column by the mean height of the tables it refers to

        def weight(n: str) -> tuple[float, int]:
            ys = [centre[r.to_table] for r in refs if r.table == n and r.to_table in centre]
            return (sum(ys) / len(ys) if ys else 0.0, order[n])

        col.sort(key=weight)
        for i, n in enumerate(col):
            centre[n] = i
    heights = [sum(boxes[n].height for n in col) + GAP_Y * (len(col) - 1) for col in columns]
    tallest = max(heights, default=0)
    top = MARGIN + 24 + LANE * (sum(_long(r, ranks) for r in refs) + 1)  # lanes for the long lines
    for i, col in enumerate(columns):
        y = top + (tallest - heights[i]) / 2
        for n in col:
            boxes[n].x, boxes[n].y, boxes[n].column = MARGIN + i * (BOX_W + GAP_X), y, i
            y += boxes[n].height + GAP_Y
    width = MARGIN * 2 + max(len(columns), 1) * (BOX_W + GAP_X) - GAP_X
    others = [boxes[t.name] for t in tables if t.name not in linked]
    y = top + tallest + (56 if others else 0)
    per_row = max(1, int((width - MARGIN * 2 + GAP_X) // (BOX_W + GAP_X)))
    row_h = 0.0
    for i, b in enumerate(others):
        if i and i % per_row == 0:
            y += row_h + GAP_Y
            row_h = 0.0
        b.x, b.y = MARGIN + (i % per_row) * (BOX_W + GAP_X), y
        row_h = max(row_h, b.height)
    height = y + row_h + MARGIN
    return [boxes[n] for n in joined], others, width, height


def _edge(ref: Reference, boxes: dict[str, Box], lane: int | None) -> str:
    src, dst = boxes[ref.table], boxes[ref.to_table]
    y1 = src.row_y(ref.columns[-1] if ref.table == ref.to_table else ref.columns[0])
    title = f"<title>{escape(ref.table)}.({escape(ref.label)}) → {escape(ref.to_table)}</title>"
    if src is dst:  # a table referring to itself: a loop on its right side
        x = src.x + BOX_W
        y2 = dst.row_y(ref.to_columns[-1])
        return (
            f'<path class="edge" d="M{x},{y1} C{x + 34},{y1} {x + 34},{y2} {x},{y2}">{title}</path>'
            f'<path class="foot" d="M{x},{y1 - 5} L{x + 9},{y1} L{x},{y1 + 5}"/>'
        )
    x1, x2 = src.x, dst.x + BOX_W
    y2 = dst.row_y(ref.to_columns[0])
    bend = max(40.0, (x1 - x2) / 2)
    if lane is None:
        path = f"M{x1},{y1} C{x1 - bend},{y1} {x2 + bend},{y2} {x2},{y2}"
    else:  # over the top of the columns between, in a lane of its own
        y = MARGIN + 24 + LANE * lane
        a, b = x1 - GAP_X / 2 + 8 * lane, x2 + GAP_X / 2 - 8 * lane
        r = 6
        path = (
            f"M{x1},{y1} H{a + r} Q{a},{y1} {a},{y1 - r} V{y + r} Q{a},{y} {a - r},{y} H{b + r} "
            f"Q{b},{y} {b},{y + r} V{y2 - r} Q{b},{y2} {b - r},{y2} H{x2}"
        )
    return (
        f'<path class="edge" d="{path}">{title}</path>'
        f'<path class="foot" d="M{x1 - 10},{y1} L{x1},{y1 - 5} M{x1 - 10},{y1} L{x1},{y1 + 5} '
        f'M{x1 - 10},{y1} L{x1},{y1}"/>'
        f'<path class="foot" d="M{x2 + 7},{y2 - 5} L{x2 + 7},{y2 + 5}"/>'
    )


def _draw_box(b: Box) -> str:
    t = b.table
    fill = DERIVED_FILL if t.derived else SOURCE_FILL
    parts = [
        f'<a href="#table-{escape(t.name)}" class="erd-box" data-table="{escape(t.name)}">',
        f'<title>{escape(t.name)}: {escape(t.description)}</title>',
        f'<rect x="{b.x}" y="{b.y}" width="{BOX_W}" height="{b.height}" rx="7" class="box"/>',
        (
            f'<path d="M{b.x},{b.y + HEAD_H} V{b.y + 7} Q{b.x},{b.y} {b.x + 7},{b.y} H{b.x + BOX_W - 7} '
            f'Q{b.x + BOX_W},{b.y} {b.x + BOX_W},{b.y + 7} V{b.y + HEAD_H} Z" fill="{fill}"/>'
        ),
        f'<text x="{b.x + 12}" y="{b.y + 20}" class="head">{escape(t.name)}</text>',
        (f'<text x="{b.x + BOX_W - 12}" y="{b.y + 20}" class="count" text-anchor="end">{t.total_rows:,} rows</text>'),
    ]
    for i, (marker, name, type_) in enumerate(b.rows):
        y = b.y + HEAD_H + PAD / 2 + ROW_H * i + ROW_H / 2 + 4
        parts.append(
            f'<text x="{b.x + 12}" y="{y}" class="mark">{escape(marker)}</text>'
            f'<text x="{b.x + 56}" y="{y}" class="col">{escape(name)}</text>'
            f'<text x="{b.x + BOX_W - 12}" y="{y}" class="type" text-anchor="end">'
            f'{escape(type_.lower())}</text>'
        )
    if b.hidden:
        y = b.y + HEAD_H + PAD / 2 + ROW_H * len(b.rows) + ROW_H / 2 + 4
        parts.append(
            f'<text x="{b.x + 56}" y="{y}" class="more">+ {b.hidden} more column{"s" if b.hidden != 1 else ""}</text>'
        )
    parts.append("</a>")
    return "".join(parts)


STYLE = """
.erd text { font-family: Inter, "Segoe UI", system-ui, -apple-system, sans-serif; }
.erd .box { fill: #ffffff; stroke: #c5ccd6; stroke-width: 1; }
.erd .head { fill: #ffffff; font-size: 14.5px; font-weight: 600; }
.erd .count { fill: #d8e6f3; font-size: 11.5px; }
.erd .mark { fill: #8a6d1d; font-size: 9.5px; font-weight: 700; letter-spacing: .3px; }
.erd .col { fill: #1f2933; font-size: 13px; }
.erd .type { fill: #7b8794; font-size: 11px; }
.erd .more { fill: #7b8794; font-size: 11px; font-style: italic; }
.erd .edge { fill: none; stroke: #7d95b0; stroke-width: 1.4; }
.erd .foot { fill: none; stroke: #4f6d8f; stroke-width: 1.4; }
.erd .caption { fill: #52606d; font-size: 13px; }
.erd a:hover .box { stroke: #1e4f7a; stroke-width: 2; }
"""


def erd_svg(tables: list[TableDoc] | tuple[TableDoc, ...], refs: list[Reference] | tuple[Reference, ...]) -> str:
    """The diagram as a standalone <svg> element (inline in HTML, or written as erd.svg)."""
    tables, refs = list(tables), list(refs)
    joined, others, width, height = _layout(tables, refs)
    boxes = {b.table.name: b for b in joined + others}
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="erd" id="erd" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" role="img" '
            f'aria-label="Entity-relationship diagram of the canonical tables">'
        ),
        f"<style>{STYLE}</style>",
        (
            f'<text x="{MARGIN}" y="{MARGIN + 6}" class="caption">Lines join a referring column (crow\'s foot: '
            f'many) to the key it names (bar: one); every join also matches dataset. PK = key within a dataset, '
            f'FK = refers to another table.</text>'
        ),
    ]
    ranks = {b.table.name: b.column for b in joined}
    lanes = iter(range(1, len(refs) + 1))
    parts += [_edge(r, boxes, next(lanes) if r.table != r.to_table and _long(r, ranks) else None) for r in refs]
    parts += [_draw_box(b) for b in joined]
    if others:
        top = min(b.y for b in others)
        parts.append(
            f'<text x="{MARGIN}" y="{top - 14}" class="caption">Joined by dataset (and split) only: '
            f'summaries and the quarantine</text>'
        )
        parts += [_draw_box(b) for b in others]
    parts.append("</svg>")
    return "\n".join(parts)

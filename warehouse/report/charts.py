"""The report's charts: Vega-Lite specs written with Altair, rendered to static SVG by vl-convert.

Why this pair: vl-convert carries its own Vega engine (no browser, no network), so each chart becomes plain
SVG inlined in the page. The page then needs no script at all: it opens offline, prints, and shows the same
picture in every browser. Plotly would inline about 3.5 MB of JavaScript and draw only once scripts run.
Rendering is the slow part of a report (a tenth of a second or more per chart), so charts render on a
thread pool: vl-convert releases the GIL while it draws.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import altair as alt

from .tables import SECTIONS, split_key

FONT = "Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif"
SPLIT_COLOURS = {"train": "#3b6fb6", "valid": "#e3923d", "test": "#4f9d69", "unassigned": "#8e6bbf"}
NO_FINDING = "no_finding"
MAX_FINDINGS = 25  # label charts show the most frequent findings; the tables list every one
WIDTH = 330


@dataclass
class Chart:
    key: str
    title: str
    spec: dict
    caption: str = ""
    wide: bool = False
    svg: str = ""


def _config(chart: alt.TopLevelMixin) -> dict:
    """The chart with the report's look, as a Vega-Lite dict. Not validated against the schema: that took a third
    of the report's time, and vl-convert reports a bad spec anyway."""
    spec = (
        chart.configure(font=FONT, background="transparent")
        .configure_view(stroke=None)
        .configure_axis(
            labelColor="#4a5160",
            titleColor="#4a5160",
            gridColor="#eceef2",
            domainColor="#c9ced6",
            tickColor="#c9ced6",
            labelFontSize=11,
            titleFontSize=11,
            titleFontWeight="normal",
        )
        .configure_legend(
            labelColor="#4a5160",
            titleColor="#4a5160",
            labelFontSize=11,
            titleFontSize=11,
            titleFontWeight="normal",
            orient="bottom",
            direction="horizontal",
        )
        .configure_header(labelColor="#4a5160", labelFontSize=11, titleFontSize=11)
        .to_dict(validate=False)
    )
    spec.pop("$schema", None)
    return spec


def _split_scale(splits) -> alt.Scale:
    ordered = sorted(set(splits), key=split_key)
    return alt.Scale(domain=ordered, range=[SPLIT_COLOURS.get(s, "#9aa0a6") for s in ordered])


def _split_color(splits, legend: bool = True) -> alt.Color:
    return alt.Color(
        "split:N",
        scale=_split_scale(splits),
        sort=sorted(set(splits), key=split_key),
        title="split",
        legend=alt.Legend() if legend else None,
    )


# --- a dataset's charts --------------------------------------------------------------------------
def age_distribution(d) -> Chart | None:
    rows = d.queries.get("age_histogram", [])
    aged = [r for r in rows if r["age_from"] is not None]
    if not aged:
        return None
    totals: dict[str, int] = {}
    for r in aged:
        totals[r["split"]] = totals.get(r["split"], 0) + r["studies"]
    values = [
        {
            "split": r["split"],
            "age": r["age_from"],
            "percent": 100.0 * r["studies"] / totals[r["split"]],
            "studies": r["studies"],
        }
        for r in aged
    ]
    missing = sum(r["studies"] for r in rows if r["age_from"] is None)
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=1.8)
        .encode(
            x=alt.X("age:Q", title="age at the study (5-year bins)", scale=alt.Scale(domain=[0, 100])),
            y=alt.Y("percent:Q", title="% of the split's studies"),
            color=_split_color(totals),
        )
        .properties(width=WIDTH, height=190)
    )
    return Chart(
        f"{d.dataset}.age",
        "Age distribution per split",
        _config(chart),
        f"{sum(totals.values()):,} studies with an age; {missing:,} without.",
    )


def sex_per_split(d) -> Chart | None:
    rows = [r for r in d.demographics if r["attribute"] == "sex"]
    if not rows:
        return None
    order = ["M", "F", "U", "not_recorded"]
    values = [
        {
            "split": r["split"],
            "sex": r["bucket"],
            "percent": r["percent"],
            "patients": r["n_patients"],
            "order": order.index(r["bucket"]) if r["bucket"] in order else 9,
        }
        for r in rows
    ]
    splits = sorted({r["split"] for r in rows}, key=split_key)
    present = {r["bucket"] for r in rows}
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar(height=18)
        .encode(
            y=alt.Y("split:N", sort=splits, title=None),
            x=alt.X("percent:Q", title="% of the split's patients", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color(
                "sex:N",
                sort=order,
                title="sex",
                scale=alt.Scale(
                    domain=[b for b in order if b in present],
                    range=[c for b, c in zip(order, ["#3b6fb6", "#c8557a", "#b8bec7", "#e3e6ea"]) if b in present],
                ),
            ),
            order=alt.Order("order:Q"),
        )
        .properties(width=WIDTH, height=alt.Step(26))
    )
    unknown = sum(r["n_patients"] for r in rows if r["bucket"] in ("U", "not_recorded"))
    return Chart(
        f"{d.dataset}.sex",
        "Sex per split",
        _config(chart),
        f"{sum(r['n_patients'] for r in rows):,} patients; {unknown:,} of unknown or unrecorded sex.",
    )


VIEW_ORDER = ["PA", "AP", "AP_SUPINE", "LATERAL", "LL", "RL", "OTHER", "UNKNOWN"]
VIEW_COLOURS = ["#3b6fb6", "#6b9bd6", "#a9c6ea", "#4f9d69", "#8cc49c", "#c3e0ca", "#e3923d", "#d5d9df"]


def view_mix(d) -> Chart | None:
    rows = d.queries.get("view_mix", [])
    if not rows:
        return None
    splits = sorted({r["split"] for r in rows}, key=split_key)
    values = [
        {**r, "order": VIEW_ORDER.index(r["view_position"]) if r["view_position"] in VIEW_ORDER else 9} for r in rows
    ]
    present = {r["view_position"] for r in rows}
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar(height=18)
        .encode(
            y=alt.Y("split:N", sort=splits, title=None),
            x=alt.X("sum(images):Q", stack="normalize", title="share of the split's images", axis=alt.Axis(format="%")),
            color=alt.Color(
                "view_position:N",
                title="view",
                sort=VIEW_ORDER,
                scale=alt.Scale(
                    domain=[v for v in VIEW_ORDER if v in present],
                    range=[c for v, c in zip(VIEW_ORDER, VIEW_COLOURS) if v in present],
                ),
            ),
            order=alt.Order("order:Q"),
        )
        .properties(width=WIDTH, height=alt.Step(26))
    )
    unknown = sum(r["images"] for r in rows if r["view_position"] == "UNKNOWN")
    return Chart(
        f"{d.dataset}.views",
        "View mix per split",
        _config(chart),
        f"{sum(r['images'] for r in rows):,} images; {unknown:,} without a recorded view.",
    )


def section_lengths(d) -> Chart | None:
    rows = [r for r in d.queries.get("report_sections", []) if r["with_section"]]
    if not rows:
        return None
    splits = sorted({r["split"] for r in rows}, key=split_key)
    base = alt.Chart(alt.Data(values=rows)).encode(
        y=alt.Y("section:N", sort=list(SECTIONS), title=None),
        yOffset=alt.YOffset("split:N", sort=splits),
        color=_split_color(splits),
    )
    chart = (
        base.mark_rule(strokeWidth=3, opacity=0.55).encode(
            x=alt.X("p25:Q", title="tokens (median, interquartile range)"), x2="p75:Q"
        )
        + base.mark_point(filled=True, size=38, opacity=1).encode(x="median:Q")
    ).properties(width=WIDTH, height=alt.Step(9 if len(splits) > 1 else 16))
    reports = sum(r["reports"] for r in d.queries.get("report_sections", []) if r["section"] == "findings")
    return Chart(
        f"{d.dataset}.sections",
        "Report section lengths",
        _config(chart),
        f"Over {reports:,} reports; a section's figures are over the reports that have it.",
    )


def _top_findings(rows: list[dict], key: str) -> list[str]:
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["finding"]] = totals.get(r["finding"], 0) + r[key]
    return sorted(totals, key=lambda f: (-totals[f], f))[:MAX_FINDINGS]


def label_prevalence(d) -> Chart | None:
    rows = [r for r in d.queries.get("label_prevalence", []) if r["images_labelled_by_labeler"]]
    if not rows:
        return None
    top = _top_findings(rows, "positive")
    values = [
        {
            "finding": r["finding"],
            "split": r["split"],
            "labeler": r["labeler"],
            "percent": 100.0 * r["positive"] / r["images_labelled_by_labeler"],
        }
        for r in rows
        if r["finding"] in top
    ]
    splits = sorted({r["split"] for r in values}, key=split_key)
    labelers = sorted({r["labeler"] for r in values})
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar(height=alt.RelativeBandSize(0.9))
        .encode(
            y=alt.Y("finding:N", sort=top, title=None),
            yOffset=alt.YOffset("split:N", sort=splits),
            x=alt.X("percent:Q", title="% of labelled images positive"),
            color=_split_color(splits),
        )
        .properties(width=260 if len(labelers) > 1 else 2 * WIDTH, height=alt.Step(max(14, 4 * len(splits))))
    )
    chart = chart.facet(column=alt.Column("labeler:N", title=None, sort=labelers))
    more = len({r["finding"] for r in rows}) - len(top)
    return Chart(
        f"{d.dataset}.prevalence",
        "Label prevalence per finding, split and labeler",
        _config(chart),
        f"The {len(top)} findings with most positive images" + (f" ({more} more in the table)" if more else "") + ".",
        wide=True,
    )


def cooccurrence(d) -> Chart | None:
    rows = d.queries.get("cooccurrence", [])
    if not rows:
        return None
    per_labeler: dict[str, int] = {}
    for r in rows:
        if r["finding_a"] == r["finding_b"]:
            per_labeler[r["labeler"]] = per_labeler.get(r["labeler"], 0) + r["images"]
    labeler = max(sorted(per_labeler), key=lambda k: per_labeler[k])
    diagonal = [
        {"finding": r["finding_a"], "positive": r["images"]}
        for r in rows
        if r["labeler"] == labeler and r["finding_a"] == r["finding_b"]
    ]
    top = [f for f in _top_findings(diagonal, "positive") if f != NO_FINDING]  # its row would be empty
    values = [r for r in rows if r["labeler"] == labeler and r["finding_a"] in top and r["finding_b"] in top]
    heat = alt.Chart(alt.Data(values=values)).encode(
        x=alt.X("finding_b:N", sort=top, title=None, axis=alt.Axis(labelAngle=-45, labelLimit=140)),
        y=alt.Y("finding_a:N", sort=top, title=None, axis=alt.Axis(labelLimit=160)),
    )
    chart = (
        heat.mark_rect(stroke="white", strokeWidth=1)
        .encode(
            color=alt.Color(
                "images:Q",
                scale=alt.Scale(type="sqrt", scheme="blues"),
                title="images",
                legend=alt.Legend(orient="right", direction="vertical", gradientLength=160),
            ),
        )
        .properties(width=alt.Step(22), height=alt.Step(22))
    )
    others = sorted(set(per_labeler) - {labeler})
    return Chart(
        f"{d.dataset}.cooccurrence",
        f"Finding co-occurrence ({labeler})",
        _config(chart),
        f"Images positive for both findings, by the labeler {labeler} (all splits); the diagonal is each "
        f"finding's positive images ({NO_FINDING} left out)."
        + (f" Other labelers: {', '.join(others)}." if others else ""),
        wide=True,
    )


def dataset_charts(d) -> list[Chart]:
    made = (
        age_distribution(d),
        sex_per_split(d),
        view_mix(d),
        section_lengths(d),
        label_prevalence(d),
        cooccurrence(d),
    )
    return [c for c in made if c is not None]


# --- rendering -----------------------------------------------------------------------------------
def warm_up():
    """Start vl-convert's engine (seconds, once per process) on a thread, while the catalog is read."""
    import threading

    import vl_convert as vlc

    thread = threading.Thread(
        target=vlc.vegalite_to_svg, args=({"mark": "point", "data": {"values": []}},), daemon=True
    )
    thread.start()
    return thread


def render(charts: list[Chart]) -> list[Chart]:
    """Each chart's SVG, drawn on a small thread pool."""
    import vl_convert as vlc

    def draw(chart: Chart) -> None:
        chart.svg = vlc.vegalite_to_svg(chart.spec)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        list(pool.map(draw, charts))
    return charts

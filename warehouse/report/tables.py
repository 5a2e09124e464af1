"""The report's tables, built once from the catalog rows and written three ways (HTML, Markdown, CSV) and
printed by `cxr stats --demographics / --labels`.

A table holds raw values; each number may carry a coverage note (its base, what lacks the field), shown
small beside it in HTML, in brackets in Markdown, and as a `<column> coverage` column in CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import schema

SPLIT_ORDER = {s: i for i, s in enumerate(schema.SPLITS)}
SECTIONS = ("indication", "comparison", "findings", "impression")
BUCKET_LABELS = {"not_recorded": "not recorded", "unknown": "unknown", "U": "U (unknown)"}
SEX_ORDER = ("M", "F", "U", "not_recorded")


@dataclass(frozen=True)
class Column:
    name: str  # the CSV header
    label: str  # the header people read
    kind: str = "text"  # text | count | percent | mean | float
    group: str | None = None  # a spanning header above consecutive columns


@dataclass
class ReportTable:
    key: str  # file stem: <dataset>.<table>
    title: str
    columns: list[Column]
    rows: list[list] = field(default_factory=list)
    notes: list[list[str | None]] = field(default_factory=list)  # coverage per cell, parallel to rows
    caption: str = ""

    def add(self, values: list, notes: list[str | None] | None = None) -> None:
        self.rows.append(values)
        self.notes.append(notes or [None] * len(values))


def fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "percent":
        return f"{value:.1f}"
    if kind == "mean":
        return f"{value:.2f}"
    if kind == "float":
        return f"{value:.3f}"
    return str(value)


def split_key(split: str) -> int:
    return SPLIT_ORDER.get(split, len(SPLIT_ORDER))


def n(value: int, what: str) -> str:
    return f"{value:,} {what}"


# --- Table 1 ----------------------------------------------------------------------------------
def split_statistics(d) -> ReportTable:
    """Table 1: studies, images, patients, reports and mean tokens per section, per split."""
    t = ReportTable(
        f"{d.dataset}.split_statistics",
        "Split statistics",
        [
            Column("split", "Split"),
            Column("studies", "Studies", "count", "Study statistics"),
            Column("images", "Images", "count", "Study statistics"),
            Column("patients", "Patients", "count", "Study statistics"),
            Column("reports", "Reports", "count", "Report statistics (mean tokens)"),
            *[Column(f"mean_tokens_{s}", s.capitalize(), "mean", "Report statistics (mean tokens)") for s in SECTIONS],
        ],
        caption="Counts over every row of the split. Mean tokens are over the reports that have the section; "
        "the small figure is how many do, out of the split's reports.",
    )
    sections = {(r["split"], r["section"]): r for r in d.queries.get("report_sections", [])}
    for r in sorted(d.split_stats, key=lambda r: split_key(r["split"])):
        notes: list[str | None] = [None] * 5
        for s in SECTIONS:
            sec = sections.get((r["split"], s))
            notes.append(f"{sec['with_section']:,} of {sec['reports']:,}" if sec else None)
        t.add(
            [
                r["split"],
                r["studies"],
                r["images"],
                r["patients"],
                r["reports"],
                *[r[f"mean_tokens_{s}"] for s in SECTIONS],
            ],
            notes,
        )
    return t


# --- Table 2 ----------------------------------------------------------------------------------
ATTRIBUTE_TITLES = {
    "age_bucket": ("Age", "studies"),
    "sex": ("Sex", "patients"),
    "race": ("Race", "patients"),
    "ethnicity": ("Ethnicity", "patients"),
}


def _buckets(attribute: str, present: set[str]) -> list[str]:
    if attribute == "age_bucket":
        order = list(schema.AGE_BUCKETS)
        fixed = set(order[:5])
    elif attribute == "sex":
        order, fixed = list(SEX_ORDER), {"M", "F", "U"}
    else:
        order = list(schema.RACES if attribute == "race" else schema.ETHNICITIES)
        fixed = set()
    return [b for b in order if b in fixed or b in present] + sorted(present - set(order))


def demographics(d) -> list[ReportTable]:
    """Table 2, one table per attribute: the percent of the split's studies (age) or patients (sex, race,
    ethnicity) in each bucket, with its count beside it. 'not recorded' (the source has no such field) is
    its own column, apart from 'unknown' (the source has the field and it is blank or unknown)."""
    tables = []
    for attribute, (title, base) in ATTRIBUTE_TITLES.items():
        rows = [r for r in d.demographics if r["attribute"] == attribute]
        if not rows:
            continue
        buckets = _buckets(attribute, {r["bucket"] for r in rows})
        count_key = "n_studies" if base == "studies" else "n_patients"
        t = ReportTable(
            f"{d.dataset}.demographics_{attribute}",
            f"{title} (% of {base})",
            [
                Column("split", "Split"),
                Column(base, f"Base ({base})", "count"),
                *[Column(b, BUCKET_LABELS.get(b, b), "percent", f"{title} (%)") for b in buckets],
            ],
            caption=f"Percent of the split's {base} (the base column); the small figures count {base}.",
        )
        if {r["bucket"] for r in rows} == {schema.NOT_RECORDED}:
            t.caption = f"{title} is not recorded by the source."
        by = {(r["split"], r["bucket"]): r for r in rows}
        for split in sorted({r["split"] for r in rows}, key=split_key):
            cells = [by.get((split, b)) for b in buckets]
            total = sum(c[count_key] for c in cells if c)
            t.add(
                [split, total, *[c["percent"] if c else 0.0 for c in cells]],
                [None, None, *[f"{c[count_key]:,}" if c else "0" for c in cells]],
            )
        tables.append(t)
    return tables


def recorded(t: ReportTable) -> bool:
    """False when every value of the table is 'not recorded' (the page says so in one line instead)."""
    return not t.caption.endswith("is not recorded by the source.")


DEMOGRAPHICS_NOTE = (
    "Age is per study (the age at that study); sex, race and ethnicity are per patient. "
    "'not recorded' means the source has no such field at all; 'unknown' means it has the field "
    "but not the value for these patients or studies."
)


# --- labels -----------------------------------------------------------------------------------
def label_prevalence(d) -> ReportTable | None:
    """Percent of labelled images positive, per finding and labeler (rows) and split (columns)."""
    rows = d.queries.get("label_prevalence", [])
    if not rows:
        return None
    splits = sorted({r["split"] for r in rows}, key=split_key)
    t = ReportTable(
        f"{d.dataset}.label_prevalence",
        "Label prevalence (% of labelled images positive)",
        [
            Column("finding", "Finding"),
            Column("labeler", "Labeler"),
            *[Column(f"{s}_positive_percent", s, "percent", "% positive") for s in splits],
            *[Column(f"{s}_positive", s, "count", "positive images") for s in splits],
        ],
        caption="Per image (a study's label counts for each of its images): positive images over the split's "
        "images the labeler labels at all (the small figure; a finding it does not mention counts as not "
        "positive), and how many are uncertain. Label coverage below lists the images it leaves unlabelled.",
    )
    by = {(r["finding"], r["labeler"], r["split"]): r for r in rows}
    for finding, labeler in sorted({(r["finding"], r["labeler"]) for r in rows}):
        cells = [by.get((finding, labeler, s)) for s in splits]
        pct = [100.0 * c["positive"] / c["images_labelled_by_labeler"] if c else None for c in cells]
        notes = [
            (f"of {c['images_labelled_by_labeler']:,}" + (f" · {c['uncertain']:,} unc." if c["uncertain"] else ""))
            if c
            else None
            for c in cells
        ]
        t.add(
            [finding, labeler, *pct, *[c["positive"] if c else None for c in cells]],
            [None, None, *notes, *[None] * len(splits)],
        )
    return t


def label_coverage(d) -> ReportTable | None:
    """Per labeler and split: the split's images, how many it labels at all, and how many it leaves out."""
    rows = d.queries.get("label_prevalence", [])
    if not rows:
        return None
    images = {r["split"]: r["images"] for r in d.queries.get("split_images", [])}
    t = ReportTable(
        f"{d.dataset}.label_coverage",
        "Label coverage",
        [
            Column("labeler", "Labeler"),
            Column("split", "Split"),
            Column("images", "Images", "count"),
            Column("labelled", "Labelled", "count"),
            Column("unlabelled", "Without any label", "count"),
        ],
        caption="Images of the split with at least one label from the labeler, and those with none.",
    )
    seen = {(r["labeler"], r["split"]): r["images_labelled_by_labeler"] for r in rows}
    for (labeler, split), labelled in sorted(seen.items(), key=lambda kv: (kv[0][0], split_key(kv[0][1]))):
        total = images.get(split)
        t.add([labeler, split, total, labelled, None if total is None else max(total - labelled, 0)])
    return t


AGREEMENT_COLUMNS = (
    ("labeler_a", "Labeler A", "text"),
    ("labeler_b", "Labeler B", "text"),
    ("finding", "Finding", "text"),
    ("unit", "Unit", "text"),
    ("n", "n", "count"),
    ("prevalence_a", "Prev. A", "float"),
    ("prevalence_b", "Prev. B", "float"),
    ("kappa", "κ", "float"),
    ("mcc", "MCC", "float"),
    ("f1", "F1", "float"),
    ("n_excluded_uncertain", "Uncertain excluded", "count"),
)


def label_agreement(d) -> ReportTable | None:
    """The catalog's label_agreement rows for the dataset, with 95% intervals as coverage notes."""
    if not d.agreement:
        return None
    t = ReportTable(
        f"{d.dataset}.label_agreement",
        "Labeler agreement",
        [Column(k, label, kind) for k, label, kind in AGREEMENT_COLUMNS],
        caption="Agreement between two labelers on the same units; the small figures are 95% intervals.",
    )
    for r in sorted(
        d.agreement, key=lambda r: (str(r.get("labeler_a")), str(r.get("labeler_b")), str(r.get("finding")))
    ):
        t.add(
            [r.get(k) for k, _, _ in AGREEMENT_COLUMNS],
            [_interval(r, k) if k in ("kappa", "mcc", "f1") else None for k, _, _ in AGREEMENT_COLUMNS],
        )
    return t


def _interval(r: dict, k: str) -> str | None:
    low, high = r.get(f"{k}_low"), r.get(f"{k}_high")
    return None if low is None or high is None else f"{low:.2f}–{high:.2f}"


def dataset_tables(d) -> dict[str, list[ReportTable]]:
    """Every table of one dataset's section, by the part of the page it belongs to."""
    return {
        "splits": [split_statistics(d)],
        "demographics": demographics(d),
        "labels": [t for t in (label_prevalence(d), label_coverage(d)) if t is not None],
        "agreement": [t for t in (label_agreement(d),) if t is not None],
    }

"""One vocabulary of findings across datasets, with the raw label always kept beside it.

The vocabulary is data: warehouse/vocab/findings.csv (finding, parent, description) is a tree, e.g.
lung_opacity > consolidation > pneumonia and support_devices > central_venous_catheter > picc;
warehouse/vocab/finding_map.csv (source, raw_label, cui, finding, provenance, note) maps raw labels.
A label row keeps the most specific finding its raw label maps to; a cohort asks for a parent with
`descendants()` or the `finding_hierarchy` closure table, never through copied rows per ancestor.

Matching, case-insensitively, for each label: first its code (`cui` column, when the source gives
one) against the map's cui, then its raw label. Rows of the labeler's own source come before rows
that apply to any source (`*`). A map row with qualifiers (`Opacity/ribs`, MeSH style) matches a
full term (the frame's `raw_label`) with that heading and all those qualifiers, the row naming most
qualifiers first; otherwise the lookup key must equal the row's raw label. A raw label the map does
not cover, or covers with an empty finding (unmapped on purpose, with a note why), gets finding
NULL: never an id outside the vocabulary. The catalog lists them in `catalog_unmapped_labels`.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources

import polars as pl

ANY = "*"
_SEP = "\x1f"


def _csv(name: str, strings: tuple[str, ...] = ()) -> pl.DataFrame:
    return pl.read_csv(
        resources.files("warehouse.vocab").joinpath(name).read_bytes(),
        schema_overrides=dict.fromkeys(strings, pl.String),
    )


@lru_cache(maxsize=1)
def vocabulary() -> pl.DataFrame:
    """finding, parent (null at a root), description — the harmonized findings."""
    frame = _csv("findings.csv", strings=("parent",))
    ids = frame["finding"].to_list()
    if len(set(ids)) != len(ids):
        raise ValueError("findings.csv lists a finding twice")
    orphans = set(frame["parent"].drop_nulls()) - set(ids)
    if orphans:
        raise ValueError(f"findings.csv names parents that are not findings: {sorted(orphans)}")
    parent = dict(zip(frame["finding"], frame["parent"]))
    for finding in ids:
        seen, node = {finding}, parent[finding]
        while node is not None:
            if node in seen:
                raise ValueError(f"findings.csv: the parents of {finding!r} form a cycle")
            seen.add(node)
            node = parent[node]
    return frame


def findings() -> frozenset[str]:
    """The ids of the vocabulary: the only values labels.finding may hold besides NULL."""
    return frozenset(vocabulary()["finding"])


@lru_cache(maxsize=1)
def mapping() -> pl.DataFrame:
    """source, raw_label, cui, finding, provenance, note — the versioned raw-label map.

    An empty finding is a raw label left unmapped on purpose; its note says why."""
    frame = _csv("finding_map.csv", strings=("cui", "finding", "provenance", "note"))
    unknown = set(frame["finding"].drop_nulls()) - findings()
    if unknown:
        raise ValueError(f"finding_map.csv maps to findings missing from findings.csv: {sorted(unknown)}")
    silent = frame.filter(pl.col("finding").is_null() & pl.col("note").is_null())
    if silent.height:
        raise ValueError(f"finding_map.csv leaves labels unmapped without a note: {silent['raw_label'].to_list()}")
    if frame["provenance"].null_count():
        raise ValueError("finding_map.csv: every row needs a provenance")
    keys = frame.select(pl.col("source"), pl.col("raw_label").str.to_lowercase())
    if keys.is_duplicated().any():
        raise ValueError(f"finding_map.csv maps a raw label twice: {keys.filter(keys.is_duplicated()).rows()}")
    return frame


def unmapped_on_purpose() -> pl.DataFrame:
    """The map rows that deliberately map to nothing, with the note why."""
    return mapping().filter(pl.col("finding").is_null()).select("source", "raw_label", "note", "provenance")


@lru_cache(maxsize=1)
def hierarchy() -> pl.DataFrame:
    """Closure of the tree: (ancestor, descendant, depth) for every finding and each of its ancestors,
    itself included at depth 0, so `WHERE ancestor = 'lung_opacity'` selects the finding and all below it."""
    parent = dict(zip(vocabulary()["finding"], vocabulary()["parent"]))
    rows = []
    for finding in parent:
        node, depth = finding, 0
        while node is not None:
            rows.append((node, finding, depth))
            node, depth = parent[node], depth + 1
    return pl.DataFrame(
        rows, schema={"ancestor": pl.String, "descendant": pl.String, "depth": pl.Int16}, orient="row"
    ).sort("ancestor", "depth", "descendant")


def descendants(finding: str) -> set[str]:
    """The finding and every finding under it (support_devices -> the tubes, lines and pacemakers)."""
    if finding not in findings():
        raise KeyError(f"{finding!r} is not a finding of the vocabulary")
    closure = hierarchy()
    return set(closure.filter(pl.col("ancestor") == finding)["descendant"])


def ancestors(finding: str) -> list[str]:
    """The finding's parents up to its root, nearest first."""
    closure = hierarchy().filter((pl.col("descendant") == finding) & (pl.col("depth") > 0)).sort("depth")
    return closure["ancestor"].to_list()


@cache
def _tables(labeler: str):
    """Per scope (own labeler, then `*`): exact keys, qualifier rows and codes, each -> finding or None."""
    table = mapping()
    scopes = []
    for source in (labeler, ANY):
        rows = table.filter(pl.col("source") == source)
        exact, qualified, codes = {}, [], {}
        for raw, cui, finding in zip(rows["raw_label"], rows["cui"], rows["finding"]):
            key = raw.strip().lower()
            exact[key] = finding
            heading, *quals = [p.strip() for p in key.split("/")]
            if quals:
                qualified.append((heading, frozenset(quals), finding))
            if cui:
                codes[cui.strip().upper()] = finding
        qualified.sort(key=lambda q: -len(q[1]))  # stable: the most qualifiers first, then file order
        scopes.append((exact, qualified, codes))
    return scopes


_MISS = object()


def match(key: str | None, labeler: str, term: str | None = None, cui: str | None = None) -> tuple[bool, str | None]:
    """(whether a map row covers the label, the finding it maps to): (True, None) is unmapped on purpose.

    `key` is the lookup key, `term` the full raw label (defaults to the key), `cui` the source's code."""
    term = key if term is None else term
    scopes = _tables(labeler)
    if cui:
        for _, _, codes in scopes:
            found = codes.get(cui.strip().upper(), _MISS)
            if found is not _MISS:
                return True, found
    parts = [p.strip() for p in term.strip().lower().split("/")] if term else []
    if len(parts) > 1:
        heading, quals = parts[0], set(parts[1:])
        for _, qualified, _ in scopes:
            for row_heading, row_quals, finding in qualified:
                if row_heading == heading and row_quals <= quals:
                    return True, finding
    for candidate in (key, term):
        if candidate:
            for exact, _, _ in scopes:
                found = exact.get(candidate.strip().lower(), _MISS)
                if found is not _MISS:
                    return True, found
    return False, None


def _lookup(key: str | None, term: str | None, cui: str | None, labeler: str) -> str | None:
    return match(key, labeler, term, cui)[1]


def finding_of(raw_labels, labeler: str) -> dict[str, str | None]:
    """Harmonized finding id for each distinct raw label (None when the map gives none)."""
    return {raw: _lookup(raw, raw, None, labeler) for raw in raw_labels}


def with_findings(
    frame: pl.DataFrame, labeler: str, raw: str = "raw_label", out: str = "finding", cui: str | None = None
) -> pl.DataFrame:
    """Add the harmonized finding column, looking each distinct (code, raw label) up once.

    `raw` is the lookup key (IU passes a key derived from the MeSH term); the full term, for qualifier
    rows, is the `raw_label` column when the frame has one. `cui`, optional, names a column of the
    source's code for each row (PadChest's UMLS CUI), matched before any text."""
    term = "raw_label" if "raw_label" in frame.columns else raw
    columns = list(dict.fromkeys(c for c in (cui, term, raw) if c))
    combo = pl.concat_str([pl.col(c).fill_null("") for c in columns], separator=_SEP)
    distinct = frame.select(columns).unique()
    lookup = {}
    for row in distinct.iter_rows(named=True):
        lookup[_SEP.join(row[c] or "" for c in columns)] = _lookup(
            row[raw], row[term], row[cui] if cui else None, labeler
        )
    return frame.with_columns(combo.replace_strict(lookup, default=None, return_dtype=pl.String).alias(out))

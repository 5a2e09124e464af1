"""One vocabulary of findings across datasets, with the raw label always kept beside it.

The mapping is data (warehouse/vocab/finding_map.csv), matched case-insensitively, first for the
labeler's own rows and then for rows that apply to any source (`*`). A raw label with no mapping
keeps a slug of itself as its finding (`Calcified Granuloma` -> `calcified_granuloma`), so every
label stays queryable by finding and nothing is dropped for want of a mapping.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import polars as pl

_NON_WORD = re.compile(r"[^a-z0-9]+")


def slug(raw_label: str) -> str:
    return _NON_WORD.sub("_", raw_label.strip().lower()).strip("_")


@lru_cache(maxsize=1)
def vocabulary() -> pl.DataFrame:
    """The harmonized findings with a description each."""
    return pl.read_csv(resources.files("warehouse.vocab").joinpath("findings.csv").read_bytes())


@lru_cache(maxsize=1)
def mapping() -> pl.DataFrame:
    """source, raw_label, finding, note — the versioned raw-label map."""
    frame = pl.read_csv(resources.files("warehouse.vocab").joinpath("finding_map.csv").read_bytes(),
                        schema_overrides={"note": pl.String})
    unknown = set(frame["finding"]) - set(vocabulary()["finding"])
    if unknown:
        raise ValueError(f"finding_map.csv maps to findings missing from findings.csv: {sorted(unknown)}")
    return frame


def finding_of(raw_labels, labeler: str) -> dict[str, str]:
    """Harmonized finding id for each distinct raw label (own-labeler rows, then `*`, then a slug)."""
    table = mapping()
    keys = [k.lower() for k in table["raw_label"]]
    own = {k: f for k, s, f in zip(keys, table["source"], table["finding"]) if s == labeler}
    anywhere = {k: f for k, s, f in zip(keys, table["source"], table["finding"]) if s == "*"}
    result = {}
    for raw in raw_labels:
        key = raw.strip().lower()
        result[raw] = own.get(key) or anywhere.get(key) or slug(raw)
    return result


def with_findings(frame: pl.DataFrame, labeler: str, raw: str = "raw_label", out: str = "finding") -> pl.DataFrame:
    """Add the harmonized finding column, mapping each distinct raw label once."""
    lookup = finding_of(frame[raw].unique().drop_nulls().to_list(), labeler)
    return frame.with_columns(pl.col(raw).replace_strict(lookup, default=None, return_dtype=pl.String).alias(out))

"""Value harmonizers shared by adapters: ages, sexes and view positions.

Each returns a polars expression so adapters stay vectorized. The source's own value is always
kept in a *_source column beside the harmonized one.
"""
from __future__ import annotations

import polars as pl

from .quarantine import empty_quarantine, quarantine_rows

# Every sex word seen in the supported datasets -> F/M/U.
SEX_WORDS = {
    "F": "F", "M": "M", "U": "U", "O": "U",
    "FEMALE": "F", "MALE": "M", "UNKNOWN": "U", "OTHER": "U",
}

# Every view word seen in the supported datasets (upper-cased) -> the canonical view.
VIEW_WORDS = {
    "PA": "PA", "POSTERO_ANTERIOR": "PA", "POSTEROANTERIOR": "PA", "POSTERO-ANTERIOR": "PA",
    "AP": "AP", "ANTERO_POSTERIOR": "AP", "ANTEROPOSTERIOR": "AP", "ANTERO-POSTERIOR": "AP",
    "AP_HORIZONTAL": "AP_SUPINE", "AP SUPINE": "AP_SUPINE", "SUPINE": "AP_SUPINE",
    "LATERAL": "LATERAL", "LAT": "LATERAL", "L": "LATERAL", "XTABLE LATERAL": "LATERAL",
    "LL": "LL", "LEFT LATERAL": "LL", "RL": "RL", "RIGHT LATERAL": "RL",
    "UNKNOWN": "UNKNOWN", "N/A": "UNKNOWN", "NONE": "UNKNOWN", "NAN": "UNKNOWN", "": "UNKNOWN",
}
FRONTAL = ("PA", "AP", "AP_SUPINE")


def sex(raw: pl.Expr) -> pl.Expr:
    """F/M/U from a source's sex word; an unrecognized word passes through so checks flag it."""
    key = raw.str.strip_chars().str.to_uppercase()
    return pl.when(raw.is_null() | (key == "")).then(pl.lit("U")).otherwise(
        key.replace_strict(SEX_WORDS, default=raw))


def view_position(raw: pl.Expr) -> pl.Expr:
    """Canonical view; known-but-unusual views (oblique, decubitus, AP axial…) become OTHER."""
    key = raw.str.strip_chars().str.to_uppercase()
    return pl.when(raw.is_null()).then(pl.lit("UNKNOWN")).otherwise(
        key.replace_strict(VIEW_WORDS, default="OTHER"))


def is_frontal(view: pl.Expr) -> pl.Expr:
    return view.is_in(FRONTAL)


_AGE_UNITS_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
MAX_AGE_YEARS = 120   # older is a data error, not a patient


def _parsed_age(raw: pl.Expr) -> pl.Expr:
    text = raw.cast(pl.String).str.strip_chars().str.to_uppercase()
    number = text.str.extract(r"^(-?\d+(?:\.\d+)?)[YMWD]?$", 1).cast(pl.Float64)
    unit = text.str.extract(r"^-?\d+(?:\.\d+)?([YMWD])$", 1).fill_null("Y")
    return number / unit.replace_strict(_AGE_UNITS_PER_YEAR, default=1.0, return_dtype=pl.Float64)


def age_years(raw: pl.Expr) -> pl.Expr:
    """Years from a plain number ('57', '62.0') or a DICOM AS string ('068Y', '006M', '010W', '003D').

    Null when missing, unreadable or out of range (negative, over MAX_AGE_YEARS); `age_problem` says which.
    """
    years = _parsed_age(raw)
    return pl.when((years >= 0) & (years <= MAX_AGE_YEARS)).then(years).cast(pl.Float32)


def age_problem(raw: pl.Expr) -> pl.Expr:
    """Why age_years is null for a written age (a quarantine reason), or null when it is fine or blank."""
    years = _parsed_age(raw)
    written = raw.is_not_null() & (raw.cast(pl.String).str.strip_chars() != "")
    return (pl.when(written & years.is_null()).then(pl.lit("age is not a number of years"))
            .when(years < 0).then(pl.lit("age is negative"))
            .when(years > MAX_AGE_YEARS).then(pl.lit(f"age is over {MAX_AGE_YEARS} years")))


def age_quarantine(read, rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Quarantine rows (column `age`) for the ages age_years turns to null; the rows themselves still publish.

    `read` is the CsvRead the rows came from; it supplies each row's raw record.
    """
    reason = age_problem(pl.col(column))
    bad = rows.filter(reason.is_not_null())
    if bad.is_empty():
        return empty_quarantine()
    bad = read.with_raw(bad).with_columns(pl.col(column).alias("age"), reason.alias("_reason"))
    return quarantine_rows(bad, target_table="studies", source_file=read.src.display(read.name), column="age",
                           reason="").with_columns(bad["_reason"].alias("reason"))

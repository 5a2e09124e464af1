"""Value harmonizers shared by adapters: ages, sexes and view positions.

Each returns a polars expression so adapters stay vectorized. The source's own value is always
kept in a *_source column beside the harmonized one.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from .quarantine import empty_quarantine, quarantine_rows

# Every sex word seen in the supported datasets -> F/M/U.
SEX_WORDS = {
    "F": "F",
    "M": "M",
    "U": "U",
    "O": "U",
    "FEMALE": "F",
    "MALE": "M",
    "UNKNOWN": "U",
    "OTHER": "U",
}

# Every view word seen in the supported datasets (upper-cased) -> the canonical view.
VIEW_WORDS = {
    "PA": "PA",
    "POSTERO_ANTERIOR": "PA",
    "POSTEROANTERIOR": "PA",
    "POSTERO-ANTERIOR": "PA",
    "AP": "AP",
    "ANTERO_POSTERIOR": "AP",
    "ANTEROPOSTERIOR": "AP",
    "ANTERO-POSTERIOR": "AP",
    "AP_HORIZONTAL": "AP_SUPINE",
    "AP SUPINE": "AP_SUPINE",
    "SUPINE": "AP_SUPINE",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "L": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
    "LL": "LL",
    "LEFT LATERAL": "LL",
    "RL": "RL",
    "RIGHT LATERAL": "RL",
    "UNKNOWN": "UNKNOWN",
    "N/A": "UNKNOWN",
    "NONE": "UNKNOWN",
    "NAN": "UNKNOWN",
    "": "UNKNOWN",
}
FRONTAL = ("PA", "AP", "AP_SUPINE")


def sex(raw: pl.Expr) -> pl.Expr:
    """F/M/U from a source's sex word; an unrecognized word passes through so checks flag it."""
    key = raw.str.strip_chars().str.to_uppercase()
    return pl.when(raw.is_null() | (key == "")).then(pl.lit("U")).otherwise(key.replace_strict(SEX_WORDS, default=raw))


def view_position(raw: pl.Expr) -> pl.Expr:
    """Canonical view; known-but-unusual views (oblique, decubitus, AP axial…) become OTHER."""
    key = raw.str.strip_chars().str.to_uppercase()
    return pl.when(raw.is_null()).then(pl.lit("UNKNOWN")).otherwise(key.replace_strict(VIEW_WORDS, default="OTHER"))


def is_frontal(view: pl.Expr) -> pl.Expr:
    return view.is_in(FRONTAL)


_AGE_UNITS_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
MAX_AGE_YEARS = 120  # older is a data error, not a patient


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
    return (
        pl.when(written & years.is_null())
        .then(pl.lit("age is not a number of years"))
        .when(years < 0)
        .then(pl.lit("age is negative"))
        .when(years > MAX_AGE_YEARS)
        .then(pl.lit(f"age is over {MAX_AGE_YEARS} years"))
    )


def age_quarantine(read, rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Quarantine rows (column `age`) for the ages age_years turns to null; the rows themselves still publish.

    `read` is the CsvRead the rows came from; it supplies each row's raw record.
    """
    reason = age_problem(pl.col(column))
    bad = rows.filter(reason.is_not_null())
    if bad.is_empty():
        return empty_quarantine()
    bad = read.with_raw(bad).with_columns(pl.col(column).alias("age"), reason.alias("_reason"))
    return quarantine_rows(
        bad, target_table="studies", source_file=read.src.display(read.name), column="age", reason=""
    ).with_columns(bad["_reason"].alias("reason"))


# --- race and ethnicity ---------------------------------------------------------------------------
# Source words (upper-cased, trimmed) -> schema.RACES, tried in order as prefixes: MIMIC-IV's
# `WHITE - RUSSIAN`, `BLACK/CAPE VERDEAN`, `ASIAN - CHINESE`; CheXpert Plus's `Pacific Islander`,
# `Native American`, `Patient Refused`; ReXGradient's DICOM EthnicGroup `W` / `B`. Hispanic/Latino
# words are an ethnicity, not a race (OMB): their race is `other` and ethnicity_from_race() says hispanic.
# A word none of these match is `other`, its spelling kept in race_source (free text must not block).
RACE_PREFIXES = (
    ("UNKNOWN", "unknown"),
    ("UNABLE TO OBTAIN", "unknown"),
    ("PATIENT DECLINED", "unknown"),
    ("PATIENT REFUSED", "unknown"),
    ("DECLINED", "unknown"),
    ("REFUSED", "unknown"),
    ("UNK", "unknown"),
    ("MULTIPLE", "multiple"),
    ("MULTIRACIAL", "multiple"),
    ("AMERICAN INDIAN", "american_indian_alaska_native"),
    ("ALASKA", "american_indian_alaska_native"),
    ("NATIVE AMERICAN", "american_indian_alaska_native"),
    ("NATIVE HAWAIIAN", "native_hawaiian_pacific_islander"),
    ("PACIFIC ISLANDER", "native_hawaiian_pacific_islander"),
    ("WHITE", "white"),
    ("CAUCASIAN", "white"),
    ("PORTUGUESE", "white"),
    ("BLACK", "black"),
    ("AFRICAN AMERICAN", "black"),
    ("ASIAN", "asian"),
)
RACE_EXACT = {"W": "white", "B": "black", "A": "asian", "U": "unknown", "O": "other", "OTHER": "other"}
HISPANIC_PREFIXES = ("HISPANIC", "LATINO", "SOUTH AMERICAN")


def _key(raw: pl.Expr) -> pl.Expr:
    return raw.str.strip_chars().str.to_uppercase()


def race(raw: pl.Expr) -> pl.Expr:
    """schema.RACES word of a source's race word; null or blank is `unknown` (the field exists, says nothing).

    A dataset without a race field does not call this: its patients' race is `not_recorded`
    (the schema default)."""
    key = _key(raw)
    out = (
        pl.when(raw.is_null() | (key == ""))
        .then(pl.lit("unknown"))
        .when(key.is_in(list(RACE_EXACT)))
        .then(key.replace_strict(RACE_EXACT, default=None))
    )
    for prefix, word in RACE_PREFIXES:
        out = out.when(key.str.starts_with(prefix)).then(pl.lit(word))
    return out.otherwise(pl.lit("other"))


def ethnicity(raw: pl.Expr) -> pl.Expr:
    """schema.ETHNICITIES word of an ethnicity word (CheXpert Plus `Non-Hispanic/Non-Latino`, `Hispanic/Latino`)."""
    key = _key(raw)
    return (
        pl.when(raw.is_null() | (key == ""))
        .then(pl.lit("unknown"))
        .when(key.str.starts_with("NON"))
        .then(pl.lit("not_hispanic"))
        .when(key.str.starts_with("HISPANIC") | key.str.starts_with("LATINO"))
        .then(pl.lit("hispanic"))
        .otherwise(pl.lit("unknown"))
    )


def ethnicity_from_race(raw: pl.Expr) -> pl.Expr:
    """For sources with one field mixing race and ethnicity (MIMIC-IV race, DICOM EthnicGroup): `hispanic`
    when the word says Hispanic/Latino, else `unknown` (the source does not say the patient is not)."""
    key = _key(raw)
    hispanic = pl.any_horizontal(*(key.str.starts_with(p) for p in HISPANIC_PREFIXES)) | key.str.contains("HISPANIC")
    return pl.when(hispanic.fill_null(False)).then(pl.lit("hispanic")).otherwise(pl.lit("unknown"))


def hispanic_race(raw: pl.Expr) -> pl.Expr:
    """race() for a mixed field: a Hispanic/Latino word is race `other` (OMB puts Hispanic in ethnicity)."""
    key = _key(raw)
    return (
        pl.when(pl.any_horizontal(*(key.str.starts_with(p) for p in HISPANIC_PREFIXES)).fill_null(False))
        .then(pl.lit("other"))
        .otherwise(race(raw))
    )


# --- source_attributes ------------------------------------------------------------------------------
def attribute_fields(fields: Mapping[str, object], table: str) -> list[str]:
    """The source columns an adapter's SOURCE_FIELDS send to `<table>.source_attributes`."""
    target = f"{table}.source_attributes"
    return [name for name, where in fields.items() if where == target or (isinstance(where, tuple) and target in where)]


ATTRIBUTE_ENTRY = pl.Struct({"key": pl.String, "value": pl.String})
_ROW = "\x00row"  # the row index while entries are unpivoted; no source field is named so


def attributes(columns: dict[str, pl.Expr], missing: tuple[str, ...] = ()) -> pl.Expr:
    """The source_attributes entries {field: value as text} of each row; null and blank values (and the
    source's own spellings of missing, e.g. PadChest's `nan`) are left out; null when nothing is left.

    Built columnar (fields unpivoted to one row per value, filtered, gathered back per row): polars'
    concat_list of structs plus list.eval costs microseconds per entry, seconds on PadChest."""
    if not columns:
        return pl.lit(None, pl.List(ATTRIBUTE_ENTRY))
    names = list(columns)
    fields = pl.struct([expr.cast(pl.String).alias(f"_{i}") for i, expr in enumerate(columns.values())])
    return fields.map_batches(
        lambda rows: _entries(rows, names, missing), return_dtype=pl.List(ATTRIBUTE_ENTRY), is_elementwise=True
    )  # row by row: in a group_by it runs once, not per group


def _entries(rows: pl.Series, names: list[str], missing: tuple[str, ...]) -> pl.Series:
    frame = rows.struct.unnest()
    frame.columns = names
    value = pl.col("value")
    kept = (
        frame.with_row_index(_ROW)
        .unpivot(index=_ROW, variable_name="key", value_name="value")
        .filter(value.is_not_null() & (value.str.strip_chars() != "") & ~value.is_in(list(missing)))
        .sort(_ROW, maintain_order=True)  # unpivot is field by field; per row, keep the fields' order
        .group_by(_ROW, maintain_order=True)
        .agg(pl.struct("key", "value").alias("entries"))
    )
    every_row = pl.DataFrame({_ROW: pl.arange(0, frame.height, eager=True, dtype=pl.UInt32)})
    return every_row.join(kept, on=_ROW, how="left", maintain_order="left")["entries"].alias(rows.name)


def source_attributes(
    fields: Mapping[str, object], table: str, rename: dict[str, str] | None = None, missing: tuple[str, ...] = ()
) -> pl.Expr:
    """attributes() of every column SOURCE_FIELDS sends to `<table>.source_attributes`, read from the frame's
    column of the same name (or `rename[name]`)."""
    rename = rename or {}
    return attributes({name: pl.col(rename.get(name, name)) for name in attribute_fields(fields, table)}, missing)

"""Rows an adapter could not read, kept with where they came from and why.

Nothing is dropped silently: a value that does not parse becomes a quarantine row naming the
file, row, line and column, with the whole raw record beside it.
"""

from __future__ import annotations

import polars as pl
from polars.datatypes import DataType, DataTypeClass

QUARANTINE_COLUMNS: dict[str, DataType | DataTypeClass] = {
    "target_table": pl.String,
    "source_file": pl.String,
    "row_number": pl.Int64,
    "line_number": pl.Int64,
    "column_name": pl.String,
    "value": pl.String,
    "reason": pl.String,
    "raw_record": pl.String,
}


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_COLUMNS)


def quarantine_rows(
    bad: pl.DataFrame, *, target_table: str, source_file: str, column: str, reason: str, one_line_rows: bool = True
) -> pl.DataFrame:
    """Quarantine rows of a raw frame read by `read_csv` (it carries _row, and _raw from CsvRead.with_raw).

    The line is `_line` when the frame has it (CsvRead.with_raw of a multi-line format), else
    `_row` + 1 for one-line formats, else unknown.
    """
    if bad.is_empty():
        return empty_quarantine()
    if "_line" in bad.columns:
        line = pl.col("_line").cast(pl.Int64)
    else:
        line = pl.col("_row").cast(pl.Int64) + 1 if one_line_rows else pl.lit(None, pl.Int64)
    return bad.select(
        pl.lit(target_table).alias("target_table"),
        pl.lit(source_file).alias("source_file"),
        pl.col("_row").cast(pl.Int64).alias("row_number"),
        line.alias("line_number"),
        pl.lit(column).alias("column_name"),
        (pl.col(column).cast(pl.String) if column in bad.columns else pl.lit(None, pl.String)).alias("value"),
        pl.lit(reason).alias("reason"),
        pl.col("_raw").alias("raw_record") if "_raw" in bad.columns else pl.lit(None, pl.String).alias("raw_record"),
    )

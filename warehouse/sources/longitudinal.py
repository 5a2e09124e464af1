"""Longitudinal columns of studies: visit_order, days_since_first, days_since_previous.

visit_order is 1 for a patient's first study in the dataset, then 2, 3, ...: studies are ordered by
the keys the source gives (a date and time, a follow-up number, relative timestamps), nulls last,
ties broken by study_id. days_since_first / days_since_previous come from `days` (a number of days
on any fixed origin, fractional when times are known) and are null when the source has no dates.
"""

from __future__ import annotations

import polars as pl

EPOCH = pl.date(1970, 1, 1)


def days_of(date: pl.Expr, time: pl.Expr | None = None) -> pl.Expr:
    """Days since 1970-01-01 of a date (plus the fraction of the day a time gives)."""
    days = (date - EPOCH).dt.total_days().cast(pl.Float64)
    if time is not None:
        seconds = (time.cast(pl.Int64) / 1_000_000_000).fill_null(0.0)  # polars Time counts nanoseconds
        days = days + seconds / 86_400
    return days


def with_visits(
    studies: pl.DataFrame,
    order_by: list[pl.Expr],
    days: pl.Expr | None = None,
    patient: str = "patient_id",
    study: str = "study_id",
) -> pl.DataFrame:
    """`studies` with visit_order and, when `days` is given, days_since_first and days_since_previous."""
    keys = [e.alias(f"_order_{i}") for i, e in enumerate(order_by)]
    extra = [days.alias("_days")] if days is not None else []
    frame = studies.with_columns(*keys, *extra)
    order = [patient, *(f"_order_{i}" for i in range(len(keys))), study]
    frame = frame.sort(order, nulls_last=True, maintain_order=True)
    frame = frame.with_columns((pl.int_range(pl.len()).over(patient) + 1).cast(pl.Int32).alias("visit_order"))
    if days is not None:
        frame = frame.with_columns(
            (pl.col("_days") - pl.col("_days").min().over(patient)).alias("days_since_first"),
            (pl.col("_days") - pl.col("_days").shift(1).over(patient)).alias("days_since_previous"),
        )
    return frame.drop(*(f"_order_{i}" for i in range(len(keys))), *(["_days"] if days is not None else []))

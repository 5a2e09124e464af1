"""Blocking asset checks on the staged dataset: one Dagster check per GX expectation, one per integrity query.

Check names are `<table>__<expectation name>` (e.g. `studies__age_years_in_range`),
`integrity__<check name>` and `volume__<gate>`. Each hangs on the staged table it checks
(`staged/studies`; an integrity check on the first table it reads; the volume gates, which weigh
the whole dataset, on `staged/images`) and is partitioned by dataset, so every evaluation shows
its partition. A critical expectation is a blocking ERROR check: when it fails, `tables` does not
run and nothing of the dataset is published. Warnings are reported, never block.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from warehouse import quality

from .assets import DATASET_PARTITIONS, gated_ingest, staged_key
from .metadata import markdown_table, plain_json
from .resources import WarehouseResource


@contextmanager
def _staged_connection(context, warehouse: WarehouseResource) -> Iterator[tuple[duckdb.DuckDBPyConnection, set[str]]]:
    """DuckDB over this run's staged files (the staging record is keyed by the run id), and the tables staged."""
    ingest = gated_ingest(context, warehouse)
    files = ingest.staged_files()
    with quality.staged_connection(ingest.store, files) as con:
        yield con, set(files)


def _result(check_name: str, outcome: quality.CheckOutcome, dataset: str, table: str) -> dg.AssetCheckResult:
    metadata = {
        "dataset": dataset,
        "check": outcome.description,
        "unexpected rows": outcome.unexpected_count,
        "examples": dg.MetadataValue.md(markdown_table(outcome.sample[:10])) if outcome.sample else "none",
        "examples (json)": plain_json(outcome.sample),
    }
    if outcome.unexpected_percent is not None:
        metadata["unexpected percent"] = float(outcome.unexpected_percent)
    if outcome.observed is not None:
        metadata["observed value"] = plain_json(outcome.observed)
    if outcome.evaluated_rows is not None:
        metadata["rows evaluated"] = outcome.evaluated_rows
    if outcome.note:
        metadata["note"] = outcome.note
    severity = dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN
    summary = "passed" if outcome.passed else f"{outcome.unexpected_count:,} offending rows"
    return dg.AssetCheckResult(
        asset_key=staged_key(table),
        check_name=check_name,
        passed=outcome.passed,
        severity=severity,
        metadata=metadata,
        description=f"{outcome.description} — {summary}",
    )


def expectation_checks(table: str) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            f"{table}__{name}",
            asset=staged_key(table),
            blocking=blocking,
            description=description,
            partitions_def=DATASET_PARTITIONS,
        )
        for name, blocking, description in quality.expectation_checks(table)
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{table}_expectations",
        can_subset=True,
        description=f"Great Expectations suite expectations/{table}.json on the staged {table}.",
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        dataset = context.partition_key
        with _staged_connection(context, warehouse) as (con, fed):
            outcomes = {o.name: o for o in quality.expectation_gate(con, table, fed, dataset)}
        for key in context.selected_asset_check_keys:
            yield _result(key.name, outcomes[key.name.split("__", 1)[1]], dataset, table)

    return _checks


def integrity_checks() -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            f"integrity__{c.name}",
            asset=staged_key(c.table),
            blocking=c.blocking,
            description=c.description,
            additional_deps=[staged_key(t) for t in c.requires[1:]],
            partitions_def=DATASET_PARTITIONS,
        )
        for c in quality.integrity_checks()
    ]
    table_of = {f"integrity__{c.name}": c.table for c in quality.integrity_checks()}

    @dg.multi_asset_check(
        specs=specs,
        name="integrity",
        can_subset=True,
        description="Cross-table integrity SQL (expectations/integrity.sql) on the staged dataset.",
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        dataset = context.partition_key
        with _staged_connection(context, warehouse) as (con, fed):
            outcomes = {o.name: o for o in quality.run_integrity(con, fed)}
        for key in context.selected_asset_check_keys:
            yield _result(key.name, outcomes[key.name.removeprefix("integrity__")], dataset, table_of[key.name])

    return _checks


def volume_checks() -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            f"volume__{name}",
            asset=staged_key("images"),
            blocking=True,
            description=description,
            partitions_def=DATASET_PARTITIONS,
        )
        for name, description in quality.VOLUME_CHECKS
    ]

    @dg.multi_asset_check(
        specs=specs,
        name="volume",
        can_subset=True,
        description="Volume gates: not empty, no shrink against the last publish, known counts.",
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        outcomes = {o.name: o for o in gated_ingest(context, warehouse).volume()}
        for key in context.selected_asset_check_keys:
            yield _result(key.name, outcomes[key.name.removeprefix("volume__")], context.partition_key, "images")

    return _checks


with warnings.catch_warnings():
    # partitioned checks are a Dagster "preview" feature (1.13); they are what shows each evaluation's dataset
    warnings.simplefilter("ignore", dg.PreviewWarning)
    QUALITY_CHECKS = [*(expectation_checks(t) for t in quality.suite_tables()), integrity_checks(), volume_checks()]

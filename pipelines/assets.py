"""Assets: stage a dataset once, gate it, publish every table together, derive stats, rebuild the catalog.

Why one `staged` asset per dataset partition rather than one staged asset per table: a dataset's
native files are read once, and its tables are published together or not at all. Every quality
check hangs off `staged`; if any blocking check fails, Dagster never starts `tables`, so no table
of that dataset moves to the new version (images never point at studies of another version) and
the previously published partitions stay in the catalog.
"""

import time

import dagster as dg

from warehouse import schema
from warehouse.ingest import (
    load_staged, new_version, now_iso, publish_staged, read_dataset, save_staged, stage_dataset,
)
from warehouse.sources import DATASETS, dataset_info

from .metadata import PREVIEW_ROWS, column_schema, markdown_table, plain_json
from .resources import WarehouseResource

DATASET_PARTITIONS = dg.StaticPartitionsDefinition(list(DATASETS))
STAGED = dg.AssetKey("staged")
SOURCE_TABLES = [t.name for t in schema.SOURCE_TABLES]
DERIVED_TABLES = [t.name for t in schema.DERIVED_TABLES]
CATALOG_POOL = "duckdb_catalog"


@dg.asset(partitions_def=DATASET_PARTITIONS, group_name="ingest", kinds={"parquet"},
          description="A dataset's native files read once and written as an unpublished version of every "
                      "table it feeds (plus its quarantine). The quality checks run on this.")
def staged(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    settings, store = warehouse.settings(), warehouse.store()
    started = time.perf_counter()
    read = read_dataset(settings, dataset, say=context.log.info)
    result = stage_dataset(store, read, run_id=context.run.run_id, version=new_version(), say=context.log.debug)
    save_staged(store, result, started_at=now_iso(), seconds=time.perf_counter() - started)
    rows = result.rows
    quarantine_preview = read.result.rejected().head(10).to_dicts()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": sum(n for t, n in rows.items() if t != "quarantine"),
        "rows per table": dg.MetadataValue.md(markdown_table([{"table": t, "rows": f"{n:,}"} for t, n in rows.items()])),
        "rows rejected": result.rejected,
        "source": dg.MetadataValue.path(read.location),
        "source fingerprint": result.fingerprint,
        "source files": dg.MetadataValue.md(markdown_table(
            [{"file": f["file"], "bytes": f"{f['size']:,}", "stamp": f["stamp"], "sha256": f.get("sha256", "")[:16]}
             for f in read.files])),
        "version": result.version,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "_none_"),
        "rejected rows (first 10)": dg.MetadataValue.md(markdown_table(
            quarantine_preview, ["source_file", "line_number", "column_name", "value", "reason"])),
        "read seconds": round(read.seconds, 2),
    })


def _check_counts(context) -> tuple[int, list[str]]:
    """How many of this run's checks passed, and the names of those that failed."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    passed, failed = 0, []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            passed += 1
        else:
            failed.append(evaluation.asset_check_key.name)
    return passed, failed


@dg.multi_asset(
    specs=[dg.AssetSpec(name, partitions_def=DATASET_PARTITIONS, deps=[STAGED], group_name="tables",
                        kinds={"parquet"}, description=schema.TABLES[name].description)
           for name in SOURCE_TABLES],
    partitions_def=DATASET_PARTITIONS, can_subset=True, name="tables",
    description="Publish the staged version of every table of the dataset in one go (a manifest switch each).")
def tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    dataset = context.partition_key
    store = warehouse.store()
    staged_doc = load_staged(store, dataset)
    passed, failed = _check_counts(context)
    published = publish_staged(store, dataset, run_id=context.run.run_id, engine="dagster",
                               started_at=staged_doc.started_at or now_iso(), seconds=staged_doc.seconds or 0.0,
                               checks_passed=passed, checks_failed=len(failed))
    fed = set(dataset_info(dataset).tables) | {"quarantine"}
    for key in context.selected_asset_keys:
        table = key.path[-1]
        if table not in fed:
            yield dg.MaterializeResult(asset_key=key, metadata={
                "dagster/row_count": 0, "note": f"{dataset} does not feed {table}"})
            continue
        manifest = store.manifest(table, dataset)
        preview = store.read(table, dataset).slice(0, PREVIEW_ROWS).to_pylist()
        yield dg.MaterializeResult(asset_key=key, metadata={
            "dagster/row_count": manifest.rows,
            "version": manifest.version,
            "files": len(manifest.files),
            "bytes": sum(f["bytes"] for f in manifest.files),
            "dagster/column_schema": column_schema(table),
            "preview": dg.MetadataValue.md(markdown_table(preview)),
            "checks passed in run": passed,
        })
    context.log.info(f"published {dataset} version {published.version}")


@dg.multi_asset(
    specs=[dg.AssetSpec(name, partitions_def=DATASET_PARTITIONS, deps=SOURCE_TABLES, group_name="derived",
                        kinds={"parquet"}, description=schema.TABLES[name].description)
           for name in DERIVED_TABLES],
    partitions_def=DATASET_PARTITIONS, can_subset=True, name="derived",
    description="Split statistics, demographics and the flat image_labels cohort table of the published "
                "dataset (sql/stats/*.sql).")
def derived(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    from warehouse.stats import compute

    dataset = context.partition_key
    store = warehouse.store()
    for key in context.selected_asset_keys:
        table = key.path[-1]
        data = compute(store, table, dataset)
        manifest = store.publish(store.stage(table, dataset, data, run_id=context.run.run_id))
        yield dg.MaterializeResult(asset_key=key, metadata={
            "dagster/row_count": manifest.rows, "version": manifest.version,
            "dagster/column_schema": column_schema(table),
            "table": dg.MetadataValue.md(markdown_table(data.to_pylist()[:60])),
        })


@dg.asset(deps=[*SOURCE_TABLES, *DERIVED_TABLES], group_name="catalog", kinds={"duckdb"}, pool=CATALOG_POOL,
          description="The DuckDB catalog: views over every table's current files plus documentation tables. "
                      "Rebuilt whole and swapped in atomically; one writer at a time.")
def catalog(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from warehouse.api import Warehouse

    summary = Warehouse(warehouse.settings()).refresh_catalog()
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(summary.path)),
        "partitions": summary.partitions,
        "retired files removed": summary.removed_files,
        "rows per table": dg.MetadataValue.md(markdown_table(
            [{"table": t, "rows": f"{n:,}"} for t, n in summary.tables.items()])),
        "datasets": plain_json(sorted(DATASETS)),
    })


INGEST_ASSETS = [staged, tables, derived]

"""Assets: stage a dataset once, gate it, publish every table together, rebuild the catalog.

The assets only wire `warehouse.gated.GatedIngest`, the one ingest path `cxr ingest` and
`Warehouse.ingest()` also drive. One `staged` step per dataset partition reads the native files
once and materializes `staged/<table>` for every table (the run's new rows, not yet published).
Each quality check hangs on the staged table it checks, partitioned by dataset; if a blocking
check fails, Dagster never starts `tables`, so no table of that dataset moves to the new version
and the catalog keeps the previous complete publish. Checks sit on the staged tables, not on the
published ones, because a gate must run before the publish it guards. `tables` derives the
statistics from the same staged rows and commits source and derived tables, then records the
dataset-level publish; `catalog`, in the same run, adopts it.
"""

import dagster as dg

from warehouse import schema
from warehouse.gated import GatedIngest
from warehouse.sources import DATASETS

from .metadata import PREVIEW_ROWS, column_schema, markdown_table, plain_json
from .resources import WarehouseResource

DATASET_PARTITIONS = dg.StaticPartitionsDefinition(list(DATASETS))
SOURCE_TABLES = [t.name for t in schema.SOURCE_TABLES]
DERIVED_TABLES = [t.name for t in schema.DERIVED_TABLES]
CATALOG_POOL = "duckdb_catalog"


def staged_key(table: str) -> dg.AssetKey:
    """The asset of a table's staged rows: what this run would publish, before the gates pass."""
    return dg.AssetKey(["staged", table])


STAGED_KEYS = [staged_key(t) for t in SOURCE_TABLES]


def gated_ingest(context, warehouse: WarehouseResource) -> GatedIngest:
    """This run's ingest of this partition: its staging is keyed by the Dagster run id."""
    return GatedIngest(
        warehouse.settings(),
        warehouse.store(),
        context.partition_key,
        run_id=context.run.run_id,
        engine="dagster",
        say=context.log.debug,
        allow_shrink=warehouse.allow_shrink,
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            staged_key(name),
            partitions_def=DATASET_PARTITIONS,
            group_name="staging",
            kinds={"parquet"},
            description=f"This run's new rows of {name}, staged and not yet published: "
            f"{schema.TABLES[name].description}",
        )
        for name in SOURCE_TABLES
    ],
    partitions_def=DATASET_PARTITIONS,
    can_subset=False,
    name="staged",
    description="A dataset's native files read once and staged as this run's new rows of every table it feeds "
    "(plus its quarantine). The quality checks run on these.",
)
def staged(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    ingest = gated_ingest(context, warehouse)
    context.log.info(f"reading {ingest.dataset}")
    result = ingest.stage()
    rows = result.rows
    quarantine = ingest.store.read_staged("quarantine", result.partitions["quarantine"]).slice(0, 10).to_pylist()
    dataset_wide: dict[str, dg.RawMetadataValue] = {
        "rows staged": sum(n for t, n in rows.items() if t != "quarantine"),
        "rows per table": dg.MetadataValue.md(
            markdown_table([{"table": t, "rows": f"{n:,}"} for t, n in rows.items()])
        ),
        "rows rejected": result.rejected,
        "source": dg.MetadataValue.path(result.location or ""),
        "source fingerprint": result.fingerprint,
        "source files": dg.MetadataValue.md(
            markdown_table(
                [
                    {
                        "file": f["file"],
                        "bytes": f"{f['size']:,}",
                        "stamp": f["stamp"],
                        "sha256": f.get("sha256", "")[:16],
                    }
                    for f in result.files
                ]
            )
        ),
        "run": ingest.run_id,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "_none_"),
        "stage seconds": round(result.seconds or 0.0, 2),
    }
    for name in SOURCE_TABLES:
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": rows.get(name, 0),
            "dagster/column_schema": column_schema(name),
        }
        if name == "images":  # the dataset's summary, once, on the table every dataset feeds
            metadata |= dataset_wide
        if name == "quarantine":
            metadata["rejected rows (first 10)"] = dg.MetadataValue.md(
                markdown_table(quarantine, ["source_file", "line_number", "column_name", "value", "reason"])
            )
        if name not in rows:
            metadata["note"] = f"{ingest.dataset} does not feed {name}"
        yield dg.MaterializeResult(asset_key=staged_key(name), metadata=metadata)


def _check_counts(context) -> tuple[int, list[str]]:
    """How many of this run's checks passed, and the names of those that failed."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    passed, failed = 0, []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed.append(evaluation.asset_check_key.name)
    return passed, failed


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            partitions_def=DATASET_PARTITIONS,
            deps=STAGED_KEYS,
            group_name="derived" if schema.TABLES[name].derived else "tables",
            kinds={"delta"},
            description=schema.TABLES[name].description,
        )
        for name in [*SOURCE_TABLES, *DERIVED_TABLES]
    ],
    partitions_def=DATASET_PARTITIONS,
    can_subset=False,
    name="tables",
    description="Derive the statistics from the staged rows, commit every table of the dataset (one Delta "
    "commit each), then record the dataset-level publish the catalog adopts.",
)
def tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    ingest = gated_ingest(context, warehouse)
    passed, failed = _check_counts(context)
    published = ingest.publish(checks_passed=passed, checks_failed=len(failed))
    fed = set(published.versions)
    for key in context.selected_asset_keys:
        table = key.path[-1]
        if table not in fed:
            yield dg.MaterializeResult(
                asset_key=key, metadata={"dagster/row_count": 0, "note": f"{ingest.dataset} does not feed {table}"}
            )
            continue
        preview = ingest.store.read(table, ingest.dataset, published.versions[table]).slice(0, PREVIEW_ROWS)
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": published.rows.get(table, 0),
                "delta version": published.versions[table],
                "warehouse version": published.warehouse_version,
                "dagster/column_schema": column_schema(table),
                "preview": dg.MetadataValue.md(markdown_table(preview.to_pylist())),
                "checks passed in run": passed,
            },
        )
    context.log.info(f"published {ingest.dataset} as warehouse version {published.warehouse_version}")


@dg.asset(
    deps=[*SOURCE_TABLES, *DERIVED_TABLES],
    group_name="catalog",
    kinds={"duckdb"},
    pool=CATALOG_POOL,
    description="The DuckDB catalog: views over the newest complete publish of every dataset plus "
    "documentation tables. Rebuilt whole and swapped in atomically; one writer at a time.",
)
def catalog(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from warehouse.api import Warehouse

    summary = Warehouse(warehouse.settings()).refresh_catalog()
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(summary.path)),
            "partitions": summary.partitions,
            "warehouse version": summary.warehouse_version,
            "rows per table": dg.MetadataValue.md(
                markdown_table([{"table": t, "rows": f"{n:,}"} for t, n in summary.tables.items()])
            ),
            "datasets": plain_json(sorted(DATASETS)),
        }
    )


INGEST_ASSETS = [staged, tables]
PUBLISH_KEYS = [*STAGED_KEYS, *(dg.AssetKey(t) for t in [*SOURCE_TABLES, *DERIVED_TABLES])]  # all but catalog

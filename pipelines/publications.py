"""What people read, kept current by the same runs that ingest: the data dictionary and the report.

Both are assets downstream of the catalog, so the daily schedule, the source-change sensor and a UI
run rebuild them after every publish. They are written beside the catalog file (`<catalog dir>/docs`
and `<catalog dir>/report`) into a scratch folder first and swapped in whole, so a reader never opens
half of one.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from .assets import catalog
from .resources import WarehouseResource


def publication_dir(settings, name: str) -> Path:
    return Path(settings.catalog).parent / name


def swap_in(target: Path, write: Callable[[Path], object]) -> None:
    """Write into a sibling scratch folder, then replace `target` with it in two renames."""
    scratch = target.with_name(f".{target.name}.writing-{os.getpid()}")
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        write(scratch)
        if target.exists():
            target.rename(retired)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


@dg.asset(
    deps=[catalog],
    group_name="publications",
    kinds={"html"},
    description="The data dictionary (cxr catalog docs): every table and column with its coverage per "
    "dataset, the ER diagram, the findings vocabulary, the datasets, queries and cohorts.",
)
def data_dictionary(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from warehouse.api import Warehouse
    from warehouse.docs import write_docs

    settings = warehouse.settings()
    wh = Warehouse(settings)
    target = publication_dir(settings, "docs")

    def write(folder: Path) -> None:
        con = wh.connect()
        try:
            write_docs(con, folder)
        finally:
            con.close()

    swap_in(target, write)
    context.log.info(f"wrote the data dictionary to {target}")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(target / "index.html")), "files": len(list(target.iterdir()))}
    )


@dg.asset(
    deps=[catalog],
    group_name="publications",
    kinds={"html"},
    description="The dataset report (cxr report): split statistics and demographics in the shape of a "
    "paper's Table 1 and Table 2, charts, label prevalence and labeler agreement, per dataset.",
)
def report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from warehouse.api import Warehouse
    from warehouse.report import write_report

    settings = warehouse.settings()
    target = publication_dir(settings, "report")
    swap_in(target, lambda folder: write_report(Warehouse(settings), folder))
    context.log.info(f"wrote the report to {target}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(target / "report.html")),
            "bytes": (target / "report.html").stat().st_size,
        }
    )


PUBLICATION_ASSETS = [data_dictionary, report]

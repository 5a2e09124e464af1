"""The code location `dagster dev` and `dagster definitions validate` load from the repo root."""

from __future__ import annotations

import dagster as dg

from .assets import INGEST_ASSETS, catalog
from .automation import (
    blocked_run_cleanup,
    catalog_job,
    daily_ingest,
    ingest_job,
    source_change_sensor,
)
from .checks import QUALITY_CHECKS
from .publications import PUBLICATION_ASSETS
from .resources import WarehouseResource

defs = dg.Definitions(
    assets=[*INGEST_ASSETS, catalog, *PUBLICATION_ASSETS],
    asset_checks=QUALITY_CHECKS,
    jobs=[ingest_job, catalog_job],
    schedules=[daily_ingest],
    sensors=[source_change_sensor, blocked_run_cleanup],
    resources={"warehouse": WarehouseResource()},
    executor=dg.in_process_executor,  # the UI's and `dagster asset materialize`'s runs too: see automation.py
)

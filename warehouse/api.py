"""`Warehouse`: the Python entry point for queries, ingestion and catalog upkeep.

Queries open the catalog read-only for each call, so many readers can work while an ingest
rebuilds the catalog, and a reader always sees the newest published catalog.
"""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import duckdb

from .config import Settings

if TYPE_CHECKING:
    import pyarrow as pa

    from .catalog import CatalogSummary
    from .store import Store


class Warehouse:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.load()
        self._store: "Store | None" = None

    @property
    def store(self) -> "Store":
        from .store import Store

        if self._store is None:
            self._store = Store(self.settings.warehouse, self.settings.storage_options)
        return self._store

    @property
    def catalog_path(self) -> Path:
        return self.settings.catalog

    # --- queries -------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the catalog (built first if it does not exist yet)."""
        if not self.catalog_path.exists():
            self.refresh_catalog()
        con = duckdb.connect(str(self.catalog_path), read_only=True)
        if self.settings.remote:
            from .catalog import register_store

            register_store(con, self.store)
        return con

    def sql(self, query: str, params: list | dict | None = None) -> "pa.Table":
        con = self.connect()
        try:
            return con.sql(query, params=params).to_arrow_table()
        finally:
            con.close()

    def pl(self, query: str, params: list | dict | None = None):
        import polars as pl

        return pl.from_arrow(self.sql(query, params))

    # --- upkeep --------------------------------------------------------------------------
    def refresh_catalog(self) -> "CatalogSummary":
        from .catalog import build_catalog
        from .sources import DATASETS, dataset_info

        sources = {d: self.settings.source_for(d) or f"(embedded default: {dataset_info(d).default_data})"
                   for d in DATASETS}
        return build_catalog(self.store, self.catalog_path, datasets=[dataset_info(d) for d in DATASETS],
                             sources=sources)

    def ingest(self, datasets: list[str] | None = None, say=print):
        """Ingest datasets through the library steps and rebuild the catalog."""
        from .ingest import ingest_dataset, new_run_id
        from .sources import DATASETS

        run_id = new_run_id()
        staged = [ingest_dataset(self.settings, self.store, d, run_id=run_id, say=say) for d in datasets or DATASETS]
        self.refresh_catalog()
        return staged

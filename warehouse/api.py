"""`Warehouse`: the Python entry point for queries, ingestion and catalog upkeep.

Every query gets its own connection: an in-memory DuckDB with the catalog file attached read-only.
Not sharing DuckDB's per-file database instance means a new query always sees the newest catalog,
while a connection held open (a notebook) keeps answering from the catalog it opened: the files
it names stay for the retention period.

`Warehouse(as_of=…)` answers as the warehouse was at a past version (an integer: the publish
log's version) or time: it builds a catalog of that moment in a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from .config import ConfigError, Settings
from .errors import StaleCatalog

if TYPE_CHECKING:
    import pyarrow as pa

    from .catalog import CatalogSummary
    from .gated import IngestResult
    from .store import Store


def built_for(path: Path) -> dict[str, str] | None:
    """The catalog file's own record of what it was built from (root, warehouse version), or None.

    Here rather than in warehouse.catalog, so a query imports nothing but DuckDB and the store.
    """
    if not path.exists():
        return None
    con = duckdb.connect(":memory:")
    try:
        con.execute("ATTACH '" + str(path).replace("'", "''") + "' AS c (READ_ONLY)")
        try:
            return dict(con.execute("SELECT key, value FROM c.catalog_meta").fetchall())
        except duckdb.CatalogException:
            return {}
    finally:
        con.close()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


PROGRESS_AFTER_MS = 1000  # a query shorter than this never shows a bar (CXR_PROGRESS_AFTER_MS)


def progress_settings() -> dict[str, str]:
    after = os.environ.get("CXR_PROGRESS_AFTER_MS", str(PROGRESS_AFTER_MS))
    if not after.isdigit():
        raise ConfigError(f"CXR_PROGRESS_AFTER_MS must be a whole number of milliseconds, not {after!r}")
    return {"enable_progress_bar": "true", "enable_progress_bar_print": "true", "progress_bar_time": after}


class Warehouse:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        as_of: int | datetime | str | None = None,
        notice: Callable[[str], None] = _stderr,
    ):
        from .publish_log import parse_as_of

        self.settings = settings or Settings.load()
        self.as_of = parse_as_of(as_of) if isinstance(as_of, str) else as_of
        self.notice = notice
        self._store: "Store | None" = None
        self._as_of_dir: tempfile.TemporaryDirectory | None = None

    @property
    def store(self) -> "Store":
        from .store import Store

        if self._store is None:
            self._store = Store(self.settings.warehouse, self.settings.storage_options)
        return self._store

    @property
    def catalog_path(self) -> Path:
        if self.as_of is None:
            return self.settings.catalog
        if self._as_of_dir is None:
            self._as_of_dir = tempfile.TemporaryDirectory(prefix="cxr-as-of-")
            self._build(Path(self._as_of_dir.name) / "catalog.duckdb")
        return Path(self._as_of_dir.name) / "catalog.duckdb"

    # --- queries -------------------------------------------------------------------------
    def connect(self, *, progress: bool = False) -> duckdb.DuckDBPyConnection:
        """A confined read-only connection to the catalog (warehouse.confine), rebuilt first if it is
        missing or was built for another root. It can read the warehouse and nothing else.

        `progress` turns on DuckDB's progress bar (drawn on stdout for queries over PROGRESS_AFTER_MS):
        for a person at a terminal, never when stdout is data."""
        from .confine import confined_connection
        from .views import PLANNER_SETTINGS

        path = self.catalog_path
        if self.as_of is None:
            self.ensure_catalog()
        return confined_connection(
            path,
            readable=[self.store.url(self.store.root)],
            filesystems=[] if self.store.local else [self.store.fs],
            limits=self.limits,
            settings={**PLANNER_SETTINGS, **(progress_settings() if progress else {})},
        )

    @property
    def limits(self):
        from .confine import Limits

        return Limits(memory_limit=self.settings.query_memory, timeout_seconds=self.settings.query_timeout)

    def run(self, con: duckdb.DuckDBPyConnection, query: str, params: list | dict | None = None):
        """Run user SQL on a connection from `connect()`: refused unless it only reads, stopped at the time limit."""
        from .confine import run

        return run(con, query, params, timeout_seconds=self.settings.query_timeout)

    def ensure_catalog(self) -> None:
        """Build the catalog when there is none, when the one there names another warehouse root, or when an
        older version built it (its catalog_layout is not views.CATALOG_LAYOUT)."""
        if not self.store.exists():
            raise StaleCatalog(
                f"the warehouse root {self.settings.warehouse} does not exist; check CXR_WAREHOUSE "
                "(or `warehouse` in cxr.toml), or run `cxr ingest` to create it"
            )
        from .views import CATALOG_LAYOUT

        meta = built_for(self.settings.catalog)
        if meta is None:
            why = None
        elif meta.get("warehouse_root") != self.store.root_url:
            why = f"was built for {meta.get('warehouse_root')!r}, not {self.store.root_url!r}"
        elif meta.get("catalog_layout", "1") != CATALOG_LAYOUT:
            why = (
                f"was built by an older cxr-warehouse (layout {meta.get('catalog_layout', '1')}, now {CATALOG_LAYOUT})"
            )
        else:
            return
        if why:
            self.notice(f"cxr: the catalog {self.settings.catalog} {why}; rebuilding it (`cxr catalog rebuild`)")
        self.refresh_catalog()

    def sql(self, query: str, params: list | dict | None = None) -> "pa.Table":
        con = self.connect()
        try:
            return self.run(con, query, params).to_arrow_table()
        finally:
            con.close()

    def pl(self, query: str, params: list | dict | None = None):
        import polars as pl

        return pl.from_arrow(self.sql(query, params))

    # --- upkeep --------------------------------------------------------------------------
    def refresh_catalog(self) -> "CatalogSummary":
        """Rebuild the catalog from the newest complete publish of every dataset."""
        from .catalog import remove_debris

        remove_debris(self.settings.catalog)
        return self._build(self.settings.catalog)

    def _build(self, path: Path) -> "CatalogSummary":
        from .catalog import build_catalog
        from .sources import DATASETS, dataset_info

        return build_catalog(
            self.store,
            path,
            datasets=[dataset_info(d) for d in DATASETS],
            as_of=self.as_of if path != self.settings.catalog else None,
        )

    def ingest(
        self,
        datasets: list[str] | None = None,
        say: Callable[[str], None] = lambda m: None,
        *,
        allow_shrink: bool = False,
    ) -> "list[IngestResult]":
        """Ingest datasets through the gated path (stage, gate, derive, commit), then rebuild the catalog.

        Raises the first error, or IngestBlocked naming the failed checks, after every dataset was tried.
        """
        from .gated import GatedIngest, IngestBlocked
        from .sources import DATASETS

        if self.as_of is not None:
            raise StaleCatalog("a Warehouse opened as of a past version is read-only; open it without as_of to ingest")
        results, errors = [], []
        for dataset in datasets or DATASETS:
            try:
                results.append(
                    GatedIngest(self.settings, self.store, dataset, say=say, allow_shrink=allow_shrink).run()
                )
            except Exception as e:
                errors.append(e)
        self.refresh_catalog()
        if errors:
            raise errors[0]
        blocked = [r for r in results if r.status != "published"]
        if blocked:
            raise IngestBlocked(
                "; ".join(f"{r.dataset} was not published (the previous version stays): {r.message}" for r in blocked)
            )
        return results

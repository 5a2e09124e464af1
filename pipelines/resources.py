"""The one resource: where the warehouse, catalog, cache and sources are (warehouse.config.Settings)."""

import dagster as dg

from warehouse.config import Settings
from warehouse.store import Store


class WarehouseResource(dg.ConfigurableResource):
    """Settings come from CXR_* variables and cxr.toml as everywhere else; fields here override them."""

    warehouse: str | None = None
    catalog: str | None = None
    cache: str | None = None
    sources_json: str | None = None  # JSON {dataset: location}, for tests and one-off runs
    allow_shrink: bool = False  # let a dataset shrink past the volume gate's limit (cxr ingest --allow-shrink)

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_shrink: bool = False) -> "WarehouseResource":
        import json

        return cls(
            warehouse=settings.warehouse,
            catalog=str(settings.catalog),
            cache=str(settings.cache),
            sources_json=json.dumps(settings.sources),
            allow_shrink=allow_shrink,
        )

    def settings(self) -> Settings:
        import json
        from pathlib import Path

        base = Settings.load()
        changes: dict[str, object] = {}
        if self.warehouse:
            changes["warehouse"] = self.warehouse
        if self.catalog:
            changes["catalog"] = Path(self.catalog)
        if self.cache:
            changes["cache"] = Path(self.cache)
        if self.sources_json:
            changes["sources"] = {**base.sources, **json.loads(self.sources_json)}
        return base.with_overrides(**changes)

    def store(self) -> Store:
        settings = self.settings()
        return Store(settings.warehouse, settings.storage_options)

"""cxr-warehouse: chest X-ray datasets in one set of partitioned Parquet tables, queried with DuckDB.

`from warehouse import Warehouse` is the Python entry point. Submodules are imported lazily so
that the query path stays fast (no Dagster, no Great Expectations, no polars unless asked).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Settings", "Warehouse"]


def __getattr__(name: str):
    if name == "Warehouse":
        from .api import Warehouse

        return Warehouse
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(f"module 'warehouse' has no attribute {name!r}")

"""The dataset registry: dataset id -> adapter module, imported only when used.

Importing this package is cheap (no polars, no fsspec) so the query path can name datasets.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import UnknownName

if TYPE_CHECKING:
    from .base import Adapter, DatasetInfo

# Order is the order `cxr ingest` processes datasets in.
DATASETS: tuple[str, ...] = (
    "nih_cxr14",
    "chexpert",
    "mimic_cxr",
    "rexgradient",
    "chexpert_plus",
    "iu_xray",
    "padchest",
    "mimic_qba",
    "vindr_cxr",
    "rsna_pneumonia",
    "siim_pneumothorax",
)


def get_adapter(dataset_id: str) -> "Adapter":
    if dataset_id not in DATASETS:
        raise UnknownName(f"unknown dataset {dataset_id!r}; known: {', '.join(DATASETS)}")
    return import_module(f"{__name__}.{dataset_id}").ADAPTER


def dataset_info(dataset_id: str) -> "DatasetInfo":
    return get_adapter(dataset_id).info

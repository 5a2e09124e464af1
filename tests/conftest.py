"""Shared fixtures: the real public metadata, isolated settings, and one ingested warehouse.

The public metadata (the torchxrayvision wheel's data files) is fetched once into the user
cache (or CXR_CACHE) and reused across sessions; everything the tests write goes to tmp paths.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from warehouse.cachelock import filling
from warehouse.config import Settings
from warehouse.fetch import fetch_public

# Test files that each take a minute or more of one worker, handed out first (with `--no-loadscope-reorder`;
# pytest-xdist otherwise orders files by how many tests they hold), so the two workers finish together
# instead of one running the S3 files alone at the end. Only the order changes; a stale list costs time.
SLOWEST_FILES_FIRST = (
    "tests/s3/test_s3.py",
    "tests/test_kills.py",
    "tests/s3/test_s3_kills.py",
    "tests/test_pipelines.py",
    "tests/test_dagster_cli.py",
    "tests/test_tables.py",
    "tests/test_gates_planted.py",
    "tests/test_gates.py",
    "tests/test_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep order


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Settings.load().cache


@pytest.fixture(scope="session")
def public_data(cache_dir):
    """<cache>/public with one folder per public dataset, laid out as the datasets ship."""
    return fetch_public(cache_dir, say=lambda m: None)


def make_settings(tmp: Path, cache: Path, env: dict[str, str] | None = None, **sources: str) -> Settings:
    env = {
        "CXR_WAREHOUSE": str(tmp / "warehouse"),
        "CXR_CATALOG": str(tmp / "catalog.duckdb"),
        "CXR_CACHE": str(cache),
        **(env or {}),
    }
    env.update({f"CXR_SOURCE_{k.upper()}": str(v) for k, v in sources.items()})
    return Settings.load(env=env, cwd=tmp)


@pytest.fixture
def settings(tmp_path, cache_dir) -> Settings:
    return make_settings(tmp_path, cache_dir)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test run, shared by every pytest-xdist worker (the cache's fill lock
    orders them; the first one builds it). For fixtures that tests only read: the others would see their writes."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    root = base / name
    with filling(base, name):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture(scope="session")
def public_warehouse(tmp_path_factory, cache_dir, public_data):
    """A warehouse with NIH ChestX-ray14 and CheXpert ingested from the real metadata (read-only use)."""
    from warehouse import Warehouse

    def build(root: Path) -> None:
        Warehouse(make_settings(root, cache_dir)).ingest(["nih_cxr14", "chexpert"], say=lambda m: None)

    return Warehouse(make_settings(built_once(tmp_path_factory, "public-warehouse", build), cache_dir))


@pytest.fixture(scope="session")
def raw_files(public_data) -> dict[str, Path]:
    """Paths of the real raw files, for tests that count straight from them."""
    root = Path(public_data.root)
    return {
        "nih_entry": root / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz",
        "nih_bbox": root / "nih_cxr14" / "BBox_List_2017.csv.gz",
        "chexpert_train": root / "chexpert" / "train.csv.gz",
    }


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    """Tests build their own Settings; a developer's CXR_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("CXR_") and name not in ("CXR_CACHE", "CXR_PUBLIC_WHEEL"):
            monkeypatch.delenv(name)


def nih_subset(raw_files, folder: Path, rows: int) -> Path:
    """The first `rows` data rows of the real Data_Entry file, and the real boxes of those images."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(raw_files["nih_entry"], "rt", newline="") as f:
        lines = [next(f) for _ in range(rows + 1)]
    (folder / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    kept = {line.split(",", 1)[0] for line in lines[1:]}
    with gzip.open(raw_files["nih_bbox"], "rt", newline="") as f:
        boxes = [line for i, line in enumerate(f) if i == 0 or line.split(",", 1)[0] in kept]
    (folder / "BBox_List_2017.csv").write_text("".join(boxes))
    return folder

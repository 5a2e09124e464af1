"""Where things live: the warehouse root, the catalog file, the cache and each dataset's source.

Precedence, highest first: environment variables, the config file, built-in defaults.

Environment:
  CXR_WAREHOUSE          warehouse root, a folder or an fsspec URL (s3://bucket/prefix)
  CXR_CATALOG            the DuckDB catalog file (always local)
  CXR_CACHE              cache for fetched public metadata and generated samples
  CXR_CONFIG             path of the config file (default ./cxr.toml when it exists)
  CXR_SOURCE_<DATASET>   a dataset's source folder or URL, e.g. CXR_SOURCE_NIH_CXR14=/data/nih
  CXR_IMAGES_<DATASET>   the folder (or URL) a dataset's image files unpack to, for cohort manifests'
                         absolute paths, e.g. CXR_IMAGES_CHEXPERT=/data/CheXpert-v1.0
  CXR_STORAGE_OPTIONS    JSON of fsspec options for remote roots, e.g. {"endpoint_url": "..."}
  CXR_RETENTION_HOURS    how long retired table versions stay readable (default 168: a week)
  CXR_QUERY_TIMEOUT      seconds a user query may run (default 300)
  CXR_QUERY_MEMORY       DuckDB memory limit for user queries (default 4GB)
  CXR_PUBLIC_WHEEL       an already-downloaded torchxrayvision wheel for `cxr fetch` (read by warehouse.fetch)
  CXR_PROGRESS_AFTER_MS  how long a query runs before `cxr sql` shows DuckDB's progress bar on a terminal
                         (default 1000; read by warehouse.api)

Config file (TOML):
  warehouse = "s3://bucket/cxr"
  catalog = "cxr-data/catalog.duckdb"
  [sources]
  nih_cxr14 = "/data/NIH"
  mimic_cxr = "s3://physionet-mirror/mimic-cxr-jpg/2.1.0"
  [images]
  chexpert = "/data/CheXpert-v1.0"
  [storage_options]
  endpoint_url = "http://127.0.0.1:5000"

A dataset with no configured source uses the embedded default data: the public metadata
fetched from the torchxrayvision wheel, or generated samples for credentialed datasets.

Configuration is strict: an unknown CXR_* variable, an unknown cxr.toml key or an unknown dataset id
(in CXR_SOURCE_<ID>, CXR_IMAGES_<ID>, [sources] or [images]) is a ConfigError that suggests the right name, because a typo
would otherwise be ignored silently (a misspelt source meant ingesting the default data instead).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import CxrError

DEFAULT_DATA_DIR = "cxr-data"
DEFAULT_RETENTION_HOURS = 168.0  # a week, Delta Lake's own default for retired files
DEFAULT_QUERY_TIMEOUT = 300.0  # seconds a user query may run
DEFAULT_QUERY_MEMORY = "4GB"  # DuckDB memory limit of a user query

# Every CXR_* variable the project reads, in one place: any other CXR_* name is a typo and an error.
ENV_VARS: tuple[str, ...] = (
    "CXR_WAREHOUSE",
    "CXR_CATALOG",
    "CXR_CACHE",
    "CXR_CONFIG",
    "CXR_STORAGE_OPTIONS",
    "CXR_RETENTION_HOURS",
    "CXR_QUERY_TIMEOUT",
    "CXR_QUERY_MEMORY",
    "CXR_PUBLIC_WHEEL",  # read by warehouse.fetch, not by Settings
    "CXR_PROGRESS_AFTER_MS",  # read by warehouse.api, not by Settings
)
SOURCE_PREFIX = "CXR_SOURCE_"  # + an upper-case dataset id from warehouse.sources.DATASETS
IMAGES_PREFIX = "CXR_IMAGES_"  # + an upper-case dataset id: where that dataset's image files are
# Every top-level cxr.toml key.
FILE_KEYS: tuple[str, ...] = (
    "warehouse",
    "catalog",
    "cache",
    "sources",
    "images",
    "storage_options",
    "retention_hours",
    "query_timeout",
    "query_memory",
)


class ConfigError(CxrError, ValueError):
    """A configuration value is missing or malformed."""


def _default_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cxr-warehouse", appauthor=False))


@dataclass(frozen=True)
class Settings:
    warehouse: str
    catalog: Path
    cache: Path
    sources: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # dataset id -> image root (cohort manifests)
    storage_options: dict = field(default_factory=dict)
    config_file: Path | None = None
    retention_hours: float = DEFAULT_RETENTION_HOURS
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    query_memory: str = DEFAULT_QUERY_MEMORY

    @classmethod
    def load(cls, env: dict[str, str] | None = None, cwd: Path | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        cwd = Path.cwd() if cwd is None else cwd
        config_file, file_conf = _read_config_file(env, cwd)
        _check_names(env, file_conf, config_file)
        base = config_file.parent if config_file else cwd

        def pick(env_name: str, key: str, default):
            if env.get(env_name):
                return env[env_name]
            if key in file_conf:
                return file_conf[key]
            return default

        warehouse = str(pick("CXR_WAREHOUSE", "warehouse", cwd / DEFAULT_DATA_DIR / "warehouse"))
        catalog = Path(pick("CXR_CATALOG", "catalog", cwd / DEFAULT_DATA_DIR / "catalog.duckdb"))
        cache = Path(pick("CXR_CACHE", "cache", _default_cache()))
        sources = {k: str(v) for k, v in file_conf.get("sources", {}).items()}
        for name, value in env.items():
            if name.startswith("CXR_SOURCE_") and value:
                sources[name.removeprefix("CXR_SOURCE_").lower()] = value
        images = {k: str(v) for k, v in file_conf.get("images", {}).items()}
        for name, value in env.items():
            if name.startswith(IMAGES_PREFIX) and value:
                images[name.removeprefix(IMAGES_PREFIX).lower()] = value
        storage_options = dict(file_conf.get("storage_options", {}))
        if env.get("CXR_STORAGE_OPTIONS"):
            try:
                storage_options.update(json.loads(env["CXR_STORAGE_OPTIONS"]))
            except json.JSONDecodeError as e:
                raise ConfigError(f"CXR_STORAGE_OPTIONS is not valid JSON: {e}") from None
        retention = _number(
            pick("CXR_RETENTION_HOURS", "retention_hours", DEFAULT_RETENTION_HOURS),
            "retention_hours (CXR_RETENTION_HOURS)",
        )
        timeout = _number(
            pick("CXR_QUERY_TIMEOUT", "query_timeout", DEFAULT_QUERY_TIMEOUT), "query_timeout (CXR_QUERY_TIMEOUT)"
        )
        return cls(
            retention_hours=retention,
            query_timeout=timeout,
            query_memory=str(pick("CXR_QUERY_MEMORY", "query_memory", DEFAULT_QUERY_MEMORY)),
            warehouse=_absolute(warehouse, base),
            catalog=_absolute_path(catalog, base),
            cache=_absolute_path(cache, base),
            sources={k: _absolute(v, base) for k, v in sources.items()},
            images={k: _absolute(v, base) for k, v in images.items()},
            storage_options=storage_options,
            config_file=config_file,
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)

    def source_for(self, dataset_id: str) -> str | None:
        """The configured source location of a dataset, or None to use the embedded default."""
        return self.sources.get(dataset_id)

    def image_root(self, dataset_id: str) -> str | None:
        """Where a dataset's image files are (CXR_IMAGES_<ID>, [images]), or None when not configured."""
        return self.images.get(dataset_id)

    def default_source(self, dataset_id: str, kind: str) -> Path:
        """Where the embedded default data of a dataset lives in the cache (kind: public or samples)."""
        return self.cache / kind / dataset_id

    @property
    def remote(self) -> bool:
        return "://" in self.warehouse and not self.warehouse.startswith("file://")


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, not {value!r}")
    return number


def _dataset_ids() -> tuple[str, ...]:
    """The known dataset ids; imported here, not at module level, to keep config import-light."""
    from .sources import DATASETS

    return DATASETS


def _did_you_mean(name: str, known) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _check_names(env: dict[str, str], file_conf: dict, config_file: Path | None) -> None:
    """Refuse unknown CXR_* variables, cxr.toml keys and dataset ids, naming the right ones: a typo is never ignored."""
    ids = _dataset_ids()
    source_vars = [SOURCE_PREFIX + d.upper() for d in ids]
    image_vars = [IMAGES_PREFIX + d.upper() for d in ids]
    problems = []
    for name in sorted(env):
        if not name.startswith("CXR_") or name in ENV_VARS:
            continue
        prefix = next((p for p in (SOURCE_PREFIX, IMAGES_PREFIX) if name.startswith(p)), None)
        if prefix is not None:
            dataset = name.removeprefix(prefix).lower()
            if dataset not in ids:
                near = source_vars if prefix == SOURCE_PREFIX else image_vars
                problems.append(
                    f"{name} names no known dataset {dataset!r}{_did_you_mean(name, near)}; "
                    f"known dataset ids: {', '.join(ids)}"
                )
        else:
            problems.append(
                f"unknown environment variable {name}"
                f"{_did_you_mean(name, [*ENV_VARS, *source_vars, *image_vars])}; "
                f"known: {', '.join(ENV_VARS)}, {SOURCE_PREFIX}<DATASET>, {IMAGES_PREFIX}<DATASET>"
            )
    where = config_file or "cxr.toml"
    for key in file_conf:
        if key not in FILE_KEYS:
            problems.append(
                f"{where}: unknown key {key!r}{_did_you_mean(key, FILE_KEYS)}; known: {', '.join(FILE_KEYS)}"
            )
    for table in ("sources", "images", "storage_options"):
        if table in file_conf and not isinstance(file_conf[table], dict):
            problems.append(f"{where}: {table} must be a table ([{table}]), not {file_conf[table]!r}")
    for table in ("sources", "images"):
        named = file_conf.get(table)
        for dataset in named if isinstance(named, dict) else ():
            if dataset not in ids:
                problems.append(
                    f"{where}: [{table}] names no known dataset {dataset!r}"
                    f"{_did_you_mean(dataset, ids)}; known dataset ids: {', '.join(ids)}"
                )
    if problems:
        raise ConfigError("\n".join(problems))


def _read_config_file(env: dict[str, str], cwd: Path) -> tuple[Path | None, dict]:
    explicit = env.get("CXR_CONFIG")
    path = Path(explicit) if explicit else cwd / "cxr.toml"
    if not path.is_absolute():
        path = cwd / path
    if not path.exists():
        if explicit:
            raise ConfigError(f"CXR_CONFIG points to {path}, which does not exist")
        return None, {}
    try:
        return path, tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None


def _absolute(location: str, base: Path) -> str:
    if "://" in location:
        return location
    return str(_absolute_path(Path(location), base))


def _absolute_path(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()

"""Strict configuration: typos in CXR_* names, cxr.toml keys and dataset ids are errors, and Dagster's
instance comes from the project's own dagster.yaml, never from one that merely sits in the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from warehouse.config import ENV_VARS, ConfigError, Settings
from warehouse.sources import DATASETS

REPO = Path(__file__).parents[1]


def test_a_misspelt_variable_is_refused_with_the_right_name(tmp_path):
    with pytest.raises(ConfigError, match=r"CXR_WAREHOSE.*did you mean CXR_WAREHOUSE"):
        Settings.load(env={"CXR_WAREHOSE": "/data/wh"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="did you mean CXR_SOURCE_NIH_CXR14"):
        Settings.load(env={"CXR_SOURCES_NIH_CXR14": "/data/nih"}, cwd=tmp_path)


def test_a_misspelt_source_names_the_known_datasets(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={"CXR_SOURCE_NIH_CX14": "/data/nih"}, cwd=tmp_path)
    message = str(caught.value)
    assert "CXR_SOURCE_NIH_CX14" in message and "did you mean CXR_SOURCE_NIH_CXR14" in message
    assert all(dataset in message for dataset in DATASETS)


def test_unknown_config_file_keys_are_refused(tmp_path):
    (tmp_path / "cxr.toml").write_text('warehose = "wh"\n')
    with pytest.raises(ConfigError, match=r"cxr.toml: unknown key 'warehose' \(did you mean warehouse\?\)"):
        Settings.load(env={}, cwd=tmp_path)
    (tmp_path / "cxr.toml").write_text('[sources]\nchexpret = "/data/chexpert"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={}, cwd=tmp_path)
    message = str(caught.value)
    assert "'chexpret'" in message and "did you mean chexpert" in message
    assert all(dataset in message for dataset in DATASETS)
    (tmp_path / "cxr.toml").write_text('sources = "/data"\n')
    with pytest.raises(ConfigError, match="sources must be a table"):
        Settings.load(env={}, cwd=tmp_path)


def test_every_problem_is_reported_at_once(tmp_path):
    (tmp_path / "cxr.toml").write_text('catalgo = "c.duckdb"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={"CXR_QUERY_TIMEUOT": "5", "CXR_SOURCE_MIMIC": "/m"}, cwd=tmp_path)
    assert {"CXR_QUERY_TIMEUOT", "CXR_SOURCE_MIMIC", "catalgo"} <= set(str(caught.value).replace("'", " ").split())


def test_valid_configuration_still_loads(tmp_path):
    (tmp_path / "cxr.toml").write_text(
        'warehouse = "wh"\ncatalog = "c.duckdb"\ncache = "cache"\nretention_hours = 1\nquery_timeout = 2\n'
        'query_memory = "1GB"\n[sources]\nmimic_cxr = "s3://b/mimic"\n[storage_options]\nanon = true\n'
    )
    env = {name: "" for name in ENV_VARS} | {
        "CXR_PUBLIC_WHEEL": "/tmp/x.whl",
        "CXR_QUERY_TIMEOUT": "7",
        **{f"CXR_SOURCE_{d.upper()}": f"/data/{d}" for d in DATASETS},
    }
    s = Settings.load(env=env, cwd=tmp_path)
    assert s.sources == {d: f"/data/{d}" for d in DATASETS}
    assert s.query_timeout == 7 and s.retention_hours == 1 and s.query_memory == "1GB"
    assert s.storage_options == {"anon": True} and s.warehouse == str(tmp_path / "wh")
    assert Settings.load(env={"PATH": "/bin", "DAGSTER_HOME": "/x"}, cwd=tmp_path / "empty").sources == {}


def test_a_dagster_yaml_in_the_working_directory_is_not_used(tmp_path, monkeypatch):
    from pipelines import cli

    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (planted / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir: hijacked\n")
    monkeypatch.chdir(planted)
    assert cli.dagster_home(env={}) == REPO.resolve()  # the checkout's own, beside the package
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path / "installed")  # not a checkout: no dagster.yaml beside it
    assert cli.dagster_home(env={}) is None  # ephemeral, still not the cwd's
    assert cli.dagster_home(env={"DAGSTER_HOME": str(tmp_path)}) == tmp_path.resolve()  # explicit wins


def test_the_instance_keeps_its_storage_under_dagster_home(tmp_path, monkeypatch):
    from pipelines.runner import instance

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  sqlite:\n    base_dir: .dagster/storage\ntelemetry:\n  enabled: false\n"
    )
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    inst = instance()
    try:
        assert inst.is_persistent
        assert (home / ".dagster" / "storage").is_dir() and not any(cwd.iterdir())
    finally:
        inst.dispose()

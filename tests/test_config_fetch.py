"""Configuration precedence and the verified public-metadata fetch."""

from __future__ import annotations

import time

import pytest

from warehouse.config import ConfigError, Settings
from warehouse.fetch import LAYOUT, WHEEL_SHA256, FetchError, fetch_public, is_fetched


def test_defaults_live_in_the_working_directory(tmp_path):
    s = Settings.load(env={}, cwd=tmp_path)
    assert s.warehouse == str(tmp_path / "cxr-data" / "warehouse")
    assert s.catalog == tmp_path / "cxr-data" / "catalog.duckdb"
    assert s.sources == {} and s.config_file is None


def test_environment_beats_config_file(tmp_path):
    (tmp_path / "cxr.toml").write_text(
        'warehouse = "wh-from-file"\ncatalog = "cat.duckdb"\n[sources]\nnih_cxr14 = "data/nih"\n'
        'mimic_cxr = "s3://bucket/mimic"\n[storage_options]\nendpoint_url = "http://127.0.0.1:9"\n'
    )
    s = Settings.load(env={"CXR_SOURCE_NIH_CXR14": "/elsewhere/nih"}, cwd=tmp_path)
    assert s.warehouse == str(tmp_path / "wh-from-file")  # relative to the config file
    assert s.sources == {"nih_cxr14": "/elsewhere/nih", "mimic_cxr": "s3://bucket/mimic"}
    assert s.storage_options == {"endpoint_url": "http://127.0.0.1:9"}
    s = Settings.load(env={"CXR_WAREHOUSE": "s3://b/wh"}, cwd=tmp_path)
    assert s.warehouse == "s3://b/wh" and s.remote


def test_bad_configuration_is_reported(tmp_path):
    (tmp_path / "cxr.toml").write_text("warehouse = [unclosed\n")
    with pytest.raises(ConfigError, match=r"cxr\.toml"):
        Settings.load(env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(env={"CXR_CONFIG": str(tmp_path / "missing.toml")}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="CXR_STORAGE_OPTIONS"):
        Settings.load(env={"CXR_STORAGE_OPTIONS": "{not json"}, cwd=tmp_path / "nowhere")


def test_fetch_is_verified_laid_out_and_idempotent(public_data, cache_dir):
    assert is_fetched(cache_dir)
    for dataset, files in LAYOUT.items():
        for native in files.values():
            assert (public_data.root / dataset / native).stat().st_size > 1000
    started = time.perf_counter()
    again = fetch_public(cache_dir, say=lambda m: None)
    assert not again.fetched_now and time.perf_counter() - started < 0.5


def test_a_tampered_wheel_is_refused(public_data, tmp_path):
    wheel = tmp_path / "torchxrayvision-1.5.7-py3-none-any.whl"
    wheel.write_bytes(b"PK not the real wheel")
    with pytest.raises(FetchError, match=WHEEL_SHA256):
        fetch_public(tmp_path / "cache", say=lambda m: None, wheel=wheel)
    assert not (tmp_path / "cache" / "public").exists()


def test_two_processes_filling_the_same_samples_generate_them_once(tmp_path):
    """Two fills of one missing cache entry at once (two `cxr` commands started together): the second waits
    for the first and reuses its folder, rather than generating it again and deleting it under its reader."""
    import threading

    from warehouse.samples.defaults import MARKER, ensure_default_samples

    said: list[str] = []
    results: list = []
    start = threading.Barrier(2)

    def fill() -> None:
        start.wait()
        results.append(ensure_default_samples(tmp_path, "mimic_cxr", say=said.append))

    threads = [threading.Thread(target=fill) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2 and results[0] == results[1] and (results[0] / MARKER).is_file()
    assert sum(m.startswith("generating mimic_cxr") for m in said) == 1, said
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["mimic_cxr"], "no half-built folder is left"

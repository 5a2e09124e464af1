"""Dagster's own command line finds the code location from the repo root with no flags."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")


def _env(tmp_path) -> dict:
    return dict(
        os.environ,
        DAGSTER_HOME=str(REPO),
        CXR_WAREHOUSE=str(tmp_path / "wh"),
        CXR_CATALOG=str(tmp_path / "catalog.duckdb"),
    )


def test_definitions_validate_from_repo_root(tmp_path):
    proc = subprocess.run(
        [str(DAGSTER), "definitions", "validate"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location cxr_warehouse" in proc.stderr + proc.stdout


def test_dg_checks_the_definitions(tmp_path):
    """The `dg` CLI (Dagster's successor to `dagster definitions validate`) finds the project from pyproject.toml."""
    proc = subprocess.run(
        [str(DAGSTER.with_name("dg")), "check", "defs"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
    assert "does not match" not in proc.stdout + proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals():
    # a parent that ignores SIGINT/SIGTERM (as some CI runners do) must not make dagster dev unstoppable
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_dagster_dev_serves_the_ui_with_our_assets(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_default_signals,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                info = json.load(urllib.request.urlopen(f"{base}/server_info", timeout=2))
                break
            except OSError:
                assert proc.poll() is None, "dagster dev exited early"
                assert time.time() < deadline, "the UI did not answer within 120 s"
                time.sleep(1)
        assert "dagster_webserver_version" in info
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        nodes = []
        while time.time() < deadline and not nodes:  # the code server may still be loading
            request = urllib.request.Request(
                f"{base}/graphql", data=query, headers={"Content-Type": "application/json"}
            )
            nodes = json.load(urllib.request.urlopen(request, timeout=10))["data"]["assetNodes"]
            time.sleep(0 if nodes else 1)
        keys = {"/".join(node["assetKey"]["path"]) for node in nodes}
        assert {"staged/images", "staged/labels", "patients", "images", "labels", "split_stats", "catalog"} <= keys
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_materializing_a_partition_with_dagster_leaves_the_catalog_current(tmp_path, cache_dir):
    """What the README tells a data engineer to run: one partition, every gate, the catalog, in one Dagster run."""
    import shutil

    from warehouse import Warehouse

    from .conftest import make_settings

    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    settings = make_settings(tmp_path, cache_dir)
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        CXR_WAREHOUSE=settings.warehouse,
        CXR_CATALOG=str(settings.catalog),
        CXR_CACHE=str(cache_dir),
    )
    proc = subprocess.run(
        [
            str(DAGSTER),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "*catalog+",
            "--partition",
            "iu_xray",
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    wh = Warehouse(settings)
    assert wh.sql("SELECT count(*) FROM catalog_datasets WHERE run_id IS NOT NULL").column(0)[0].as_py() == 1
    images = wh.sql("SELECT count(*) FROM images WHERE dataset = 'iu_xray'").column(0)[0].as_py()
    assert images > 0 and images == wh.store.delta("images").to_pyarrow_dataset().count_rows()
    # ...and the data dictionary downstream of the catalog was rewritten from it
    docs = (settings.catalog.parent / "docs" / "index.html").read_text()
    assert all(f'id="table-{t}"' in docs for t in ("images", "labels", "image_labels"))
    report = (settings.catalog.parent / "report" / "report.html").read_text()
    assert "IU X-ray" in report and "<svg" in report
    assert not list(settings.catalog.parent.glob(".docs.*")) and not list(settings.catalog.parent.glob(".report.*")), (
        "no scratch or retired folder is left"
    )
    steps = proc.stderr.count("STEP_START")
    assert steps >= 3 and proc.stderr.count("Launching subprocess") == 0, "one process runs every step"

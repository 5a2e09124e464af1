"""The S3 fixtures both S3 test files use: moto's server on loopback (one per test module) and settings whose
warehouse root is a fresh prefix of its bucket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from warehouse.config import Settings

BUCKET = "cxr-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    import boto3

    boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=BUCKET)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


SECRET = "cxr-test-secret-4f1d9a"  # moto takes any credentials; a unique one can be searched for


@pytest.fixture
def s3_settings(s3_server, tmp_path, cache_dir, request):
    options = {
        "endpoint_url": s3_server,
        "key": "cxr-test-key",
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    prefix = "".join(c if c.isalnum() else "-" for c in request.node.name)  # no glob characters in paths
    env = {
        "CXR_WAREHOUSE": f"s3://{BUCKET}/{prefix}",
        "CXR_CATALOG": str(tmp_path / "catalog.duckdb"),
        "CXR_CACHE": str(cache_dir),
        "CXR_STORAGE_OPTIONS": json.dumps(options),
    }
    return Settings.load(env=env, cwd=tmp_path)


def s3_env(settings, cache_dir, source) -> dict[str, str]:
    """The environment of a `cxr` child process using these settings, NIH read from `source`."""
    return {
        "CXR_WAREHOUSE": settings.warehouse,
        "CXR_CATALOG": str(settings.catalog),
        "CXR_CACHE": str(cache_dir),
        "CXR_STORAGE_OPTIONS": json.dumps(settings.storage_options),
        "CXR_SOURCE_NIH_CXR14": str(source),
    }

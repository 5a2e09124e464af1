"""Volume gates: a dataset that comes out empty, shrinks past the allowed share, or misses a known
release's counts is blocked, and the message names the table and the difference."""

from __future__ import annotations

import pytest

from warehouse import Warehouse, quality
from warehouse.gated import IngestBlocked

from .conftest import make_settings, nih_subset


def test_a_shrinking_dataset_is_blocked_unless_allowed(tmp_path, cache_dir, raw_files):
    large = nih_subset(raw_files, tmp_path / "src-500", 500)
    small = nih_subset(raw_files, tmp_path / "src-300", 300)
    Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=large)).ingest(["nih_cxr14"])
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=small))
    with pytest.raises(IngestBlocked, match="volume__no_shrink"):
        wh.ingest(["nih_cxr14"])
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 500
    wh.ingest(["nih_cxr14"], allow_shrink=True)
    assert wh.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 300


def test_shrink_is_measured_per_table_against_the_last_publish():
    previous = {"images": 1000, "labels": 2000, "quarantine": 5}
    ok = quality.volume_gate("nih_cxr14", {"images": 810, "labels": 2000, "quarantine": 0}, [], previous)
    assert all(o.passed for o in ok), "19 % fewer images is inside the 20 % default"
    bad = {o.name: o for o in quality.volume_gate("nih_cxr14", {"images": 790, "labels": 2000}, [], previous)}
    assert not bad["no_shrink"].passed and bad["no_shrink"].blocking
    assert bad["no_shrink"].sample == [
        {"table": "images", "published": 1000, "staged": 790, "lost": 210, "lost_percent": 21.0}
    ]
    empty = {o.name: o for o in quality.volume_gate("iu_xray", {"images": 0, "studies": 0, "quarantine": 3}, [], None)}
    assert not empty["not_empty"].passed and empty["no_shrink"].passed


def test_a_known_release_must_give_its_known_counts():
    release = next(e for e in quality.expected_counts() if e["dataset"] == "chexpert" and e["table"] == "images")
    files = [{"file": release["file"], "sha256": release["sha256"]}]
    rows = {e["table"]: e["rows"] for e in quality.expected_counts() if e["dataset"] == "chexpert"}
    assert all(o.passed for o in quality.volume_gate("chexpert", rows, files, None))
    short = {**rows, "images": rows["images"] - 7}
    outcome = {o.name: o for o in quality.volume_gate("chexpert", short, files, None)}["expected_counts"]
    assert not outcome.passed
    assert outcome.sample == [
        {"table": "images", "release": release["release"], "expected": 223_414, "staged": 223_407, "difference": -7}
    ]
    # another file (a user's own copy, a subset) is not held to the release's counts
    assert all(o.passed for o in quality.volume_gate("chexpert", short, [{"file": "train.csv", "sha256": "x"}], None))

"""`cxr cohort verify`: a cohort re-run at its recorded versions is identical row for row, and a re-run on changed
data names the dataset that changed and the units that enter and leave, counted here from the raw CheXpert rows."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from warehouse import Warehouse
from warehouse.cohort_verify import report_lines, verify
from warehouse.cohorts import Cohort

from .conftest import make_settings
from .test_cli import cxr

FIRST, DROPPED, ADDED = 800, 150, 120  # rows of the first source; rows the second drops, and adds


def _write_source(folder, lines, header):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(header + "".join(lines))


@pytest.fixture(scope="module")
def changed(tmp_path_factory, cache_dir, raw_files):
    """A CheXpert warehouse, a cohort run on it, then CheXpert re-ingested from a changed train.csv."""
    tmp = tmp_path_factory.mktemp("verify")
    with gzip.open(raw_files["chexpert_train"], "rt", newline="") as f:
        header, *lines = [next(f) for _ in range(FIRST + ADDED + 1)]
    first, second = lines[:FIRST], lines[DROPPED : FIRST + ADDED]
    source = tmp / "source"
    _write_source(source, first, header)
    wh = Warehouse(make_settings(tmp, cache_dir, chexpert=source))
    wh.ingest(["chexpert"], say=lambda m: None)
    cohort = tmp / "frontal.sql"
    cohort.write_text(
        "-- name: frontal\n-- description: frontal CheXpert images\n-- unit: image\n"
        "-- datasets: chexpert\n-- findings: edema\n-- rule: frontal\nis_frontal\n"
    )
    out = tmp / "run"
    run = Cohort.load(cohort).run(wh, out_dir=out)
    before = verify(out, wh.settings)
    _write_source(source, second, header)
    wh.ingest(["chexpert"], say=lambda m: None, allow_shrink=True)
    return {"wh": wh, "out": out, "run": run, "before": before, "first": first, "second": second}


def _frontal_paths(lines) -> set[str]:
    return {
        r["Path"]
        for r in csv.DictReader(["Path,Sex,Age,Frontal/Lateral\n", *lines])
        if r["Frontal/Lateral"] == "Frontal"
    }


def test_without_changes_verify_says_identical(changed):
    before = changed["before"]
    assert before.reproducible and before.current.identical and not before.current.changed_datasets
    assert changed["run"].manifest.num_rows == len(_frontal_paths(changed["first"])) > 500
    printed = "\n".join(report_lines(before))  # what `cxr cohort verify` prints
    assert "identical at the recorded versions" in printed and "current data: identical" in printed


def test_after_a_changed_source_verify_names_the_dataset_and_the_row_difference(changed):
    result = verify(changed["out"], changed["wh"].settings)
    assert result.reproducible  # at the recorded versions nothing changed
    then, now = _frontal_paths(changed["first"]), _frontal_paths(changed["second"])
    current = result.current
    assert list(current.changed_datasets) == ["chexpert"]
    assert (current.rows_then, current.rows_now) == (len(then), len(now))
    assert (current.entered, current.left) == (len(now - then), len(then - now))
    assert current.entered > 0 and current.left > 0 and current.modified == 0
    printed = "\n".join(report_lines(result))
    assert "identical at the recorded versions" in printed and "changed since the run: chexpert" in printed
    assert f"{len(now - then):,} enter, {len(then - now):,} leave" in printed


def test_verify_fails_when_the_recorded_manifest_is_not_what_the_versions_give(changed, tmp_path):
    record = json.loads((changed["out"] / "cohort.json").read_text())
    record["manifest_sha256"] = "0" * 64
    folder = tmp_path / "tampered"
    folder.mkdir()
    (folder / "cohort.json").write_text(json.dumps(record))
    proc = cxr(changed["wh"], "cohort", "verify", str(folder), check=False)
    assert proc.returncode == 1 and "DIFFERENT at the recorded versions" in proc.stdout
    missing = cxr(changed["wh"], "cohort", "verify", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 1 and "cohort.json does not exist" in missing.stderr

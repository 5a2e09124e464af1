"""Longitudinal columns (visit_order, days_since_*), dataset notes, harmonized race and the age policy,
each recomputed here from the native files with csv / gzip rather than taken from the adapters."""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse
from warehouse.samples.defaults import write as write_sample
from warehouse.sources import get_adapter, padchest, values
from warehouse.sources.base import SourceFolder

from .conftest import make_settings

REPO = Path(__file__).parents[1]


def ranks(rows: list[tuple]) -> dict[str, int]:
    """{study: 1-based position} per patient, rows being (patient, sort key, study)."""
    by_patient = defaultdict(list)
    for patient, key, study in rows:
        by_patient[patient].append((key, study))
    out = {}
    for visits in by_patient.values():
        for i, (_, study) in enumerate(sorted(visits), start=1):
            out[study] = i
    return out


def _table(wh, sql: str) -> list[tuple]:
    t = wh.sql(sql)
    return list(zip(*(t.column(i).to_pylist() for i in range(t.num_columns))))


# --- NIH: Follow-up # ---------------------------------------------------------------------------


def test_nih_visit_order_is_the_follow_up_order(public_warehouse, raw_files):
    with gzip.open(raw_files["nih_entry"], "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        raw = [(row[3], int(row[2]), row[0].removesuffix(".png")) for row in reader]
    expected = ranks(raw)
    follow_up = {study: n for _, n, study in raw}
    got = _table(
        public_warehouse,
        "SELECT study_id, visit_order, follow_up_number, days_since_first FROM studies WHERE dataset = 'nih_cxr14'",
    )
    assert len(got) == len(expected) == 112_120
    assert {s: v for s, v, _, _ in got} == expected
    assert {s: n for s, _, n, _ in got} == follow_up
    assert all(d is None for *_, d in got)  # no dates in NIH


def test_notes_say_what_the_source_folder_lacked(public_warehouse):
    notes = dict(
        _table(
            public_warehouse, "SELECT dataset, notes FROM catalog_datasets WHERE dataset IN ('nih_cxr14', 'chexpert')"
        )
    )
    assert any("split lists" in n and "not in the source folder" in n for n in notes["nih_cxr14"])
    assert any("valid.csv" in n and "not in the source folder" in n for n in notes["chexpert"])
    assert any("test set" in n and "not public" in n for n in notes["chexpert"])


@pytest.mark.parametrize("command", [("stats",), ("catalog",)])
def test_notes_are_printed_where_a_person_reads_about_the_dataset(public_warehouse, command):
    wh = public_warehouse
    env = dict(
        os.environ,
        CXR_WAREHOUSE=wh.settings.warehouse,
        CXR_CATALOG=str(wh.settings.catalog),
        CXR_CACHE=str(wh.settings.cache),
    )
    out = subprocess.run(
        [sys.executable, "-m", "warehouse.cli", *command], capture_output=True, text=True, env=env, cwd=REPO, check=True
    ).stdout
    notes = out[out.index("Notes:") :]
    assert "nih_cxr14: official split lists" in notes and "chexpert: valid.csv was not in the source folder" in notes


def test_race_not_recorded_is_not_unknown(public_warehouse):
    rows = _table(
        public_warehouse,
        "SELECT dataset, attribute, bucket, n_patients FROM demographics "
        "WHERE attribute IN ('race', 'ethnicity') ORDER BY ALL",
    )
    assert {(d, a, b) for d, a, b, _ in rows} == {
        (d, a, "not_recorded") for d in ("chexpert", "nih_cxr14") for a in ("race", "ethnicity")
    }


# --- PadChest: StudyDate_DICOM ----------------------------------------------------------------------


def test_padchest_visit_order_and_days_follow_the_study_dates(public_data, tmp_path):
    path = Path(public_data.root) / "padchest" / f"{padchest.FILE}.gz"
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for _, row in zip(range(6000), reader)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    (tmp_path / padchest.FILE).write_text(out.getvalue())
    studies = get_adapter("padchest").read(SourceFolder(str(tmp_path))).tables["studies"]

    col = {name: i for i, name in enumerate(header)}
    first = {}
    for row in rows:
        first.setdefault(
            row[col["StudyID"]],
            (row[col["PatientID"]], datetime.strptime(row[col["StudyDate_DICOM"]], "%Y%m%d").date()),
        )
    expected = ranks([(patient, (day, study), study) for study, (patient, day) in first.items()])
    got = dict(zip(studies["study_id"], studies["visit_order"]))
    assert got == expected
    assert max(expected.values()) > 1, "the slice should hold patients with several studies"
    by_patient = defaultdict(list)
    for study, (patient, day) in first.items():
        by_patient[patient].append((day, study))
    since_first, since_previous = {}, {}
    for visits in by_patient.values():
        visits.sort()
        for i, (day, study) in enumerate(visits):
            since_first[study] = float((day - visits[0][0]).days)
            since_previous[study] = float((day - visits[i - 1][0]).days) if i else None
    assert dict(zip(studies["study_id"], studies["days_since_first"])) == since_first
    assert dict(zip(studies["study_id"], studies["days_since_previous"])) == since_previous


# --- MIMIC-CXR (date + time), QBA (relative timestamps), linked demographics --------------------------


@pytest.fixture(scope="module")
def mimic(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("mimic")
    for dataset in ("mimic_cxr", "mimic_qba"):
        write_sample(dataset, root / dataset, patients=12, seed=7, cache=cache_dir)
    return root


def _mimic_time(raw: str) -> float:
    t = float(raw)
    whole = int(t)
    return whole // 10000 * 3600 + whole // 100 % 100 * 60 + whole % 100 + (t - whole)


def test_mimic_cxr_visit_order_follows_date_and_time(mimic):
    with gzip.open(mimic / "mimic_cxr" / "mimic-cxr-2.0.0-metadata.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    first = {}
    for r in rows:  # a study's date and time are its earliest image's
        when = (datetime.strptime(r["StudyDate"], "%Y%m%d").date(), _mimic_time(r["StudyTime"]))
        if r["study_id"] not in first or when < first[r["study_id"]][1]:
            first[r["study_id"]] = (r["subject_id"], when)
    expected = ranks([(p, (when, s), s) for s, (p, when) in first.items()])
    studies = get_adapter("mimic_cxr").read(SourceFolder(str(mimic / "mimic_cxr"))).tables["studies"]
    assert dict(zip(studies["study_id"], studies["visit_order"])) == expected
    assert max(expected.values()) > 1
    origin = {}
    for p, (day, seconds) in first.values():
        days = (day - date(1970, 1, 1)).days + seconds / 86_400
        origin[p] = min(origin.get(p, days), days)
    for s, d in zip(studies["study_id"], studies["days_since_first"]):
        p, (day, seconds) = first[s]
        assert d == pytest.approx((day - date(1970, 1, 1)).days + seconds / 86_400 - origin[p], abs=1e-6)
    times = dict(zip(studies["study_id"], studies["study_time"]))
    for s, (_, (_, seconds)) in first.items():
        h, m, sec = times[s].split(":")
        assert int(h) * 3600 + int(m) * 60 + float(sec) == pytest.approx(seconds, abs=1e-3)


def test_qba_visit_order_follows_its_relative_timestamps(mimic):
    import pyarrow.parquet as pq

    meta = pq.read_table(mimic / "mimic_qba" / "metadata" / "study_metadata.parquet").to_pylist()
    expected = ranks(
        [
            (
                r["patient_id"].removeprefix("p"),
                (r["study.timestamp_since_first"], r["study_id"].removeprefix("s")),
                r["study_id"].removeprefix("s"),
            )
            for r in meta
        ]
    )
    tables = (
        get_adapter("mimic_qba")
        .read(SourceFolder(str(mimic / "mimic_qba")), related={"mimic_cxr": SourceFolder(str(mimic / "mimic_cxr"))})
        .tables
    )
    studies = tables["studies"]
    assert dict(zip(studies["study_id"], studies["visit_order"])) == expected
    days = {r["study_id"].removeprefix("s"): r["study.timestamp_since_first"].total_seconds() / 86_400 for r in meta}
    for s, d in zip(studies["study_id"], studies["days_since_first"]):
        assert d == pytest.approx(days[s], abs=1e-6)


def test_qba_demographics_come_from_mimic(mimic, tmp_path, cache_dir):
    wh = Warehouse(make_settings(tmp_path, cache_dir, mimic_cxr=mimic / "mimic_cxr", mimic_qba=mimic / "mimic_qba"))
    wh.ingest(["mimic_cxr", "mimic_qba"], say=lambda m: None)
    rows = _table(
        wh,
        "SELECT dataset, attribute, bucket, sum(n_patients) FROM demographics "
        "WHERE attribute IN ('sex', 'race', 'age_bucket') GROUP BY ALL ORDER BY ALL",
    )
    qba = {(a, b): n for d, a, b, n in rows if d == "mimic_qba"}
    cxr = {(a, b): n for d, a, b, n in rows if d == "mimic_cxr"}
    assert qba.get(("sex", "U"), 0) < sum(n for (a, _), n in qba.items() if a == "sex"), "QBA is not 100 % unknown sex"
    assert {k for k in qba if k[0] == "sex"} <= {k for k in cxr if k[0] == "sex"}
    assert not any(k == ("age_bucket", "not_recorded") for k in qba)
    assert all(b in values_of("race") for (a, b) in cxr if a == "race")


def values_of(vocabulary: str) -> tuple:
    from warehouse import schema

    return schema.VOCABULARIES[vocabulary]


# --- race and ethnicity words --------------------------------------------------------------------


@pytest.mark.parametrize(
    "word,race",
    [
        ("WHITE", "white"),
        ("W", "white"),
        ("White", "white"),
        ("WHITE - RUSSIAN", "white"),
        ("PORTUGUESE", "white"),
        ("BLACK/CAPE VERDEAN", "black"),
        ("B", "black"),
        ("Black", "black"),
        ("ASIAN - CHINESE", "asian"),
        ("Pacific Islander", "native_hawaiian_pacific_islander"),
        ("NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER", "native_hawaiian_pacific_islander"),
        ("Native American", "american_indian_alaska_native"),
        ("AMERICAN INDIAN/ALASKA NATIVE", "american_indian_alaska_native"),
        ("MULTIPLE RACE/ETHNICITY", "multiple"),
        ("UNKNOWN", "unknown"),
        ("unknown", "unknown"),
        ("UNABLE TO OBTAIN", "unknown"),
        ("PATIENT DECLINED TO ANSWER", "unknown"),
        ("Patient Refused", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        ("OTHER", "other"),
        ("Other", "other"),
        ("HISPANIC/LATINO - PUERTO RICAN", "other"),
        ("SOUTH AMERICAN", "other"),
    ],
)
def test_race_words_are_harmonized(word, race):
    frame = pl.DataFrame({"w": [word]}, schema={"w": pl.String})
    assert frame.select(values.hispanic_race(pl.col("w")))[0, 0] == race


@pytest.mark.parametrize(
    "word,ethnicity",
    [
        ("Non-Hispanic/Non-Latino", "not_hispanic"),
        ("Hispanic/Latino", "hispanic"),
        ("Unknown", "unknown"),
        ("Patient Refused", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_ethnicity_words_are_harmonized(word, ethnicity):
    frame = pl.DataFrame({"w": [word]}, schema={"w": pl.String})
    assert frame.select(values.ethnicity(pl.col("w")))[0, 0] == ethnicity


# --- NIH's 2017 file: ages over 120 do not block ----------------------------------------------------


def test_nih_2017_ages_over_120_are_quarantined_and_do_not_block(raw_files, tmp_path, cache_dir):
    with gzip.open(raw_files["nih_entry"], "rt", newline="") as f:
        lines = [next(f) for _ in range(301)]
    bad = {5: "414", 9: "148", 20: "-3"}
    out = [lines[0].rstrip("\n") + ",\n"]
    for i, line in enumerate(lines[1:], start=1):
        fields = line.rstrip("\n").split(",")
        if i in bad:
            fields[4] = bad[i]
        out.append(",".join(fields) + ",\n")
    folder = tmp_path / "nih"
    folder.mkdir()
    (folder / "Data_Entry_2017.csv").write_text("".join(out))
    wh = Warehouse(make_settings(tmp_path, cache_dir, nih_cxr14=folder))
    results = wh.ingest(["nih_cxr14"], say=lambda m: None)
    assert [r.status for r in results] == ["published"]
    quarantined = _table(
        wh,
        "SELECT line_number, column_name, value, reason FROM quarantine "
        "WHERE dataset = 'nih_cxr14' ORDER BY line_number",
    )
    assert [(line, column, value) for line, column, value, _ in quarantined] == [
        (i + 1, "age", age) for i, age in sorted(bad.items())
    ]
    assert "over 120" in quarantined[0][3] and "negative" in quarantined[2][3]
    kept = _table(wh, "SELECT age_source, age_years FROM studies WHERE age_source IN ('414', '148', '-3')")
    assert sorted(kept) == [("-3", None), ("148", None), ("414", None)]
    assert _table(wh, "SELECT count(*) FROM studies WHERE dataset = 'nih_cxr14'") == [(300,)]


def test_nih_v2020_has_no_age_over_120(raw_files):
    with gzip.open(raw_files["nih_entry"], "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        ages = [int(row[4]) for row in reader]
    assert len(ages) == 112_120 and max(ages) == 95 and min(ages) >= 0


def test_nih_patient_sex_is_the_first_visits_and_a_blank_follow_up_comes_last(tmp_path):
    """A patient's sex is the one recorded at visit 1. A blank `Follow-up #` ranks after every numbered visit
    (visit_order), so it must not supply the sex either, even when it is the file's first row of the patient."""
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    rows = [
        "00000001_002.png,No Finding,,1,58,F,PA,2500,2048,0.14,0.14",
        "00000001_001.png,No Finding,1,1,57,M,PA,2500,2048,0.14,0.14",
        "00000001_000.png,No Finding,0,1,57,M,PA,2500,2048,0.14,0.14",
    ]
    folder = tmp_path / "nih"
    folder.mkdir()
    (folder / "Data_Entry_2017_v2020.csv").write_text("\n".join([header, *rows]) + "\n")
    result = get_adapter("nih_cxr14").read(SourceFolder(str(folder)))
    visits = dict(result.tables["studies"].select("study_id", "visit_order").iter_rows())
    assert visits == {"00000001_000": 1, "00000001_001": 2, "00000001_002": 3}
    [patient] = result.tables["patients"].to_dicts()
    assert (patient["sex_source"], patient["sex"]) == ("M", "M")

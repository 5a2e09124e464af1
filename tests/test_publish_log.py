"""The publish log on its own: what a row records, which publish is adopted, and time travel over it.

The catalog trusts this log to say which table versions make one complete dataset, so every field is
read back here, and `adopted` is checked at each warehouse version against the order the publishes
were made in.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from warehouse import publish_log
from warehouse.publish_log import LOG_SCHEMA, LOG_TABLE, AsOfError, adopted, parse_as_of, publishes, record
from warehouse.schema import SCHEMA_VERSION
from warehouse.store import Store


def _record(store: Store, dataset: str, run_id: str, versions: dict, **extra) -> int:
    fields = {
        "rows": {t: 10 * v for t, v in versions.items()},  # the first publish has empty tables
        "source_fingerprint": f"fp-{run_id}",
        "source_location": f"/raw/{dataset}",
        "engine": "duckdb",
    }
    fields.update(extra)
    return record(store, dataset=dataset, run_id=run_id, versions=versions, **fields)


def test_each_publish_reads_back_as_written_and_the_newest_per_dataset_is_adopted(tmp_path):
    store = Store(str(tmp_path / "wh"))
    assert publish_log.current_version(store) is None
    assert publishes(store) == [] and adopted(store) == {}

    before = datetime.now(UTC)
    v1 = _record(store, "nih_cxr14", "r1", {"images": 0, "studies": 0}, notes=["no BBox_List_2017.csv"])
    time.sleep(0.01)
    v2 = _record(store, "chexpert", "r2", {"images": 1, "studies": 1})
    time.sleep(0.01)
    v3 = _record(store, "nih_cxr14", "r3", {"images": 2, "studies": 2})
    assert (v1, v2, v3) == (0, 1, 2)
    assert publish_log.current_version(store) == 2

    found = publishes(store)
    assert [(p.dataset, p.run_id, p.warehouse_version) for p in found] == [
        ("nih_cxr14", "r1", 0),
        ("chexpert", "r2", 1),
        ("nih_cxr14", "r3", 2),
    ]
    first = found[0]
    assert first.versions == {"images": 0, "studies": 0}
    assert first.rows == {"images": 0, "studies": 0}
    assert (first.source_fingerprint, first.source_location, first.engine) == ("fp-r1", "/raw/nih_cxr14", "duckdb")
    assert first.schema_version == SCHEMA_VERSION
    assert first.notes == ("no BBox_List_2017.csv",) and found[1].notes == ()
    stamps = [p.published_at for p in found]
    assert all(s.tzinfo is not None for s in stamps)
    assert before - timedelta(seconds=1) <= stamps[0] < stamps[1] < stamps[2] <= datetime.now(UTC)

    assert {d: p.run_id for d, p in adopted(store).items()} == {"nih_cxr14": "r3", "chexpert": "r2"}
    assert {d: p.run_id for d, p in adopted(store, 1).items()} == {"nih_cxr14": "r1", "chexpert": "r2"}
    assert {d: p.run_id for d, p in adopted(store, 0).items()} == {"nih_cxr14": "r1"}
    # a row's published_at is taken just before its commit: after the first publish, before the second
    between = stamps[1]
    assert {d: p.run_id for d, p in adopted(store, between).items()} == {"nih_cxr14": "r1"}
    # the versions a past publish names are those it wrote, not the head's
    assert adopted(store, 1)["nih_cxr14"].versions == {"images": 0, "studies": 0}
    assert adopted(store, 1)["nih_cxr14"].warehouse_version == 0


def test_time_travel_outside_the_log_is_an_error_that_says_what_exists(tmp_path):
    store = Store(str(tmp_path / "wh"))
    with pytest.raises(AsOfError, match="nothing has been published"):
        publishes(store, 0)
    _record(store, "nih_cxr14", "r1", {"images": 0})
    _record(store, "nih_cxr14", "r2", {"images": 1})
    with pytest.raises(AsOfError, match=r"no version 7 \(it has versions 0 to 1\)"):
        publishes(store, 7)
    # delta-rs alone would answer a time before the first publish with the first version
    with pytest.raises(AsOfError, match=r"2000-01-01T00:00:00\+00:00 is before the warehouse's first publish"):
        publishes(store, datetime(2000, 1, 1, tzinfo=UTC))


def test_a_log_written_before_notes_existed_still_reads_and_takes_new_rows(tmp_path):
    from deltalake import CommitProperties, write_deltalake

    store = Store(str(tmp_path / "wh"))
    old_schema = pa.schema([f for f in LOG_SCHEMA if f.name != "notes"])
    old_row = {
        "dataset": "nih_cxr14",
        "run_id": "old",
        "published_at": datetime.now(UTC),
        "versions": '{"images": 0}',
        "rows": None,
        "source_fingerprint": None,
        "source_location": None,
        "engine": "duckdb",
        "schema_version": 1,
    }
    write_deltalake(
        store.table_uri(LOG_TABLE),
        pa.Table.from_pylist([old_row], schema=old_schema),
        commit_properties=CommitProperties(custom_metadata={"cxr.dataset": "nih_cxr14", "cxr.run_id": "old"}),
    )
    assert _record(store, "chexpert", "new", {"images": 3}, notes=["n"]) == 1
    old, new = publishes(store)
    assert (old.run_id, old.rows, old.notes, old.schema_version, old.warehouse_version) == ("old", {}, (), 1, 0)
    assert (new.run_id, new.notes, new.warehouse_version) == ("new", ("n",), 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("12", 12),
        (" 7 ", 7),
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T10:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 12, tzinfo=timezone(timedelta(hours=2)))),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_as_of_is_a_version_or_a_time(text, expected):
    parsed = parse_as_of(text)
    assert parsed == expected and type(parsed) is type(expected)
    if isinstance(parsed, datetime):
        assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["yesterday", "-3", "12.5", "2026-13-01"])
def test_an_unreadable_as_of_names_both_forms(text):
    with pytest.raises(AsOfError, match=r"neither a warehouse version \(an integer\) nor an ISO time"):
        parse_as_of(text)

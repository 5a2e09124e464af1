"""The dataset-level publish log: which table versions make up each complete publish of a dataset.

A dataset's tables are committed one Delta commit each; only after every one of them has committed
does the ingest append one row here naming the versions. The catalog adopts, per dataset, the
newest row, so a reader never sees a dataset torn between two runs, even when a run was killed
between two table commits.

The log is itself a small Delta table (<root>/_publish_log), so appends are atomic commits on a
local disk and on object storage alike, and its Delta version is the warehouse's version: time
travel (`--as-of 12` or `--as-of 2026-12-01T10:00:00Z`) reads the log as it was, then the table
versions it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from .errors import CxrError
from .schema import SCHEMA_VERSION
from .store import Store

LOG_TABLE = "_publish_log"
LOG_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("published_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("versions", pa.string(), nullable=False),  # JSON {table: Delta version}
        pa.field("rows", pa.string()),  # JSON {table: rows}
        pa.field("source_fingerprint", pa.string()),
        pa.field("source_location", pa.string()),
        pa.field("engine", pa.string()),
        pa.field("schema_version", pa.int32()),
        pa.field("notes", pa.string()),  # JSON [what the source folder lacked, ...]
    ]
)


class AsOfError(CxrError):
    """A time-travel point the warehouse cannot answer for."""


@dataclass(frozen=True)
class Publish:
    dataset: str
    run_id: str
    published_at: datetime
    versions: dict[str, int]
    rows: dict[str, int]
    source_fingerprint: str | None
    source_location: str | None
    engine: str | None
    schema_version: int | None
    warehouse_version: int  # the log's Delta version that added this row
    notes: tuple[str, ...] = ()  # the adapter's notes at ingest: what the source folder held or lacked


def record(
    store: Store,
    *,
    dataset: str,
    run_id: str,
    versions: dict[str, int],
    rows: dict[str, int],
    source_fingerprint: str | None,
    source_location: str | None,
    engine: str,
    notes: list[str] | None = None,
) -> int:
    """Append the publish of one dataset; returns the new warehouse version."""
    from deltalake import CommitProperties, write_deltalake

    row = pa.Table.from_pylist(
        [
            {
                "dataset": dataset,
                "run_id": run_id,
                "published_at": datetime.now(UTC),
                "versions": json.dumps(versions, sort_keys=True),
                "rows": json.dumps(rows, sort_keys=True),
                "source_fingerprint": source_fingerprint,
                "source_location": source_location,
                "engine": engine,
                "schema_version": SCHEMA_VERSION,
                "notes": json.dumps(list(notes or [])),
            }
        ],
        schema=LOG_SCHEMA,
    )
    before = current_version(store)
    # schema_mode="merge": a log written before `notes` existed gains the column on this append
    write_deltalake(
        store.table_uri(LOG_TABLE),
        row,
        mode="append",
        storage_options=store.delta_options or None,
        schema_mode="merge",
        commit_properties=CommitProperties(custom_metadata={"cxr.dataset": dataset, "cxr.run_id": run_id}),
    )
    return store.version_of_commit(LOG_TABLE, dataset, run_id, after=-1 if before is None else before)


def current_version(store: Store) -> int | None:
    dt = store.delta(LOG_TABLE)
    return dt.version() if dt is not None else None


def publishes(store: Store, as_of: int | datetime | None = None) -> list[Publish]:
    """Every publish in the log (as it was at `as_of`), oldest first."""
    dt = store.delta(LOG_TABLE)
    if dt is None:
        if as_of is not None:
            raise AsOfError("nothing has been published in this warehouse yet, so there is no past to read")
        return []
    # each version's commit info, read from the log's files (delta-rs's history() misnumbers them when another
    # process commits while it reads); a version whose file log cleanup removed is left out
    infos = {v: info for v in range(dt.version() + 1) if (info := store.commit_info(LOG_TABLE, v)) is not None}
    log_version = _row_versions(infos)
    if isinstance(as_of, datetime):
        # delta-rs loads the first version for a time before it; nothing was published then
        first = min(datetime.fromtimestamp(int(h["timestamp"]) / 1000, UTC) for h in infos.values())
        if as_of < first:
            raise AsOfError(
                f"--as-of {as_of.isoformat()} is before the warehouse's first publish ({first.isoformat()})"
            )
    if as_of is not None:
        head = dt.version()
        try:
            dt.load_as_version(as_of)
        except Exception as e:
            raise AsOfError(f"the warehouse has no version {as_of!r} (it has versions 0 to {head}): {e}") from None
    rows = pa.table(dt.to_pyarrow_dataset().to_table()).to_pylist()
    found = [
        Publish(
            dataset=r["dataset"],
            run_id=r["run_id"],
            published_at=r["published_at"],
            versions={k: int(v) for k, v in json.loads(r["versions"]).items()},
            rows={k: int(v) for k, v in json.loads(r["rows"] or "{}").items()},
            source_fingerprint=r["source_fingerprint"],
            source_location=r["source_location"],
            engine=r["engine"],
            schema_version=r["schema_version"],
            warehouse_version=log_version.get((r["run_id"], r["dataset"]), -1),
            notes=tuple(json.loads(r.get("notes") or "[]")),
        )
        for r in rows
    ]
    return sorted(found, key=lambda p: (p.warehouse_version, p.published_at))


def adopted(store: Store, as_of: int | datetime | None = None) -> dict[str, Publish]:
    """The newest complete publish of each dataset (as of a warehouse version or time)."""
    latest: dict[str, Publish] = {}
    for p in publishes(store, as_of):
        latest[p.dataset] = p
    return latest


def _row_versions(infos: dict[int, dict]) -> dict[tuple[str, str | None], int]:
    """(run id, dataset) -> the log version whose commit appended its row (from the commit info)."""
    return {
        (entry["cxr.run_id"], entry.get("cxr.dataset")): version
        for version, entry in infos.items()
        if entry.get("cxr.run_id")
    }


def parse_as_of(text: str | None) -> int | datetime | None:
    """`12` is a warehouse version; anything else an ISO time (UTC unless it says otherwise)."""
    if text is None or text == "":
        return None
    if text.strip().isdigit():
        return int(text)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AsOfError(
            f"--as-of {text!r} is neither a warehouse version (an integer) nor an ISO time such as 2026-12-01T10:00:00Z"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

"""`cxr cohort verify DIR`: is a cohort that was run into DIR still what it was, and what would it be today?

Two re-runs of the cohort.json's own SQL text, parameters, findings, policy and split:

1. at the recorded warehouse version (time travel through the publish log: the catalog of that moment,
   whose table versions must be the recorded ones), compared with the recorded manifest hash: identical
   row for row, or not (then the exit code is 1);
2. on the current data: which datasets changed since (another Delta version or source fingerprint), and how
   many units enter and leave the cohort (by the unit's key), and how many stay with other values.

The first proves the cohort reproducible; the second tells a reader of the paper what newer data would do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .cohorts import UNIT_KEYS, Cohort, CohortError

if TYPE_CHECKING:
    from .api import Warehouse
    from .config import Settings


@dataclass
class Comparison:
    """The current run against the recorded one."""

    identical: bool
    changed_datasets: dict[str, str]  # dataset -> what changed (versions, fingerprint)
    entered: int
    left: int
    modified: int  # same key, other values
    rows_then: int
    rows_now: int
    examples_entered: list = field(default_factory=list)
    examples_left: list = field(default_factory=list)


@dataclass
class Verification:
    cohort: str
    recorded_hash: str
    replayed_hash: str
    replayed_versions_match: bool
    current: Comparison

    @property
    def reproducible(self) -> bool:
        return self.recorded_hash == self.replayed_hash and self.replayed_versions_match


def load_record(folder: Path) -> dict:
    path = Path(folder) / "cohort.json"
    if not path.is_file():
        raise CohortError(f"{path} does not exist: give the --out folder of a `cxr cohort run`")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CohortError(f"{path}, line {e.lineno}: not JSON ({e.msg})") from None
    missing = [
        k for k in ("sql", "parameters", "manifest_sha256", "warehouse_version", "delta_versions") if k not in record
    ]
    if missing:
        raise CohortError(f"{path} lacks {', '.join(missing)}: it was written by an older cxr; run the cohort again")
    return record


def rerun(record: dict, warehouse: Warehouse):
    """The cohort.json's cohort run again (no files written) on `warehouse`."""
    cohort = Cohort.parse(record["sql"], Path(record["file"]) if record.get("file") else None)
    params = {k: v for k, v in record["parameters"].items() if v is not None}
    return cohort.run(
        warehouse,
        params,
        findings=record.get("findings"),
        uncertain=record.get("uncertain"),
        split=record.get("split") or "official",
        seed=record.get("seed") or 0,
        allow_leakage=bool(record.get("allow_leakage")),
    )


def verify(folder: Path | str, settings: Settings | None = None) -> Verification:
    from .api import Warehouse

    record = load_record(Path(folder))
    version = record.get("warehouse_version")
    if version in (None, ""):
        raise CohortError("cohort.json records no warehouse version (the catalog had none): nothing to travel to")
    then = Warehouse(settings, as_of=int(version), notice=lambda m: None)
    replayed = rerun(record, then)
    now_run = rerun(record, Warehouse(settings, notice=lambda m: None))
    return Verification(
        cohort=record.get("cohort", "?"),
        recorded_hash=record["manifest_sha256"],
        replayed_hash=replayed.provenance["manifest_sha256"],
        replayed_versions_match=_versions(replayed.provenance, record) == _versions(record, record),
        current=_compare(record, replayed, now_run),
    )


def _versions(provenance: dict, record: dict) -> dict:
    """The Delta versions of the tables and datasets the record names (the cohort's own datasets)."""
    wanted = set(record["datasets"])
    return {t: {d: v for d, v in by.items() if d in wanted} for t, by in provenance["delta_versions"].items()}


def _compare(record: dict, then_run, now_run) -> Comparison:
    changed: dict[str, str] = {}
    for d in sorted(set(record["datasets"]) | set(now_run.provenance["datasets"])):
        tables = sorted(
            t
            for t in set(record["delta_versions"]) | set(now_run.provenance["delta_versions"])
            if record["delta_versions"].get(t, {}).get(d) != now_run.provenance["delta_versions"].get(t, {}).get(d)
        )
        fp_then = record.get("source_fingerprints", {}).get(d)
        fp_now = now_run.provenance["source_fingerprints"].get(d)
        what = []
        if tables:
            what.append("new versions of " + ", ".join(tables))
        if fp_then != fp_now:
            what.append(
                "another source fingerprint"
                if fp_then and fp_now
                else "added to the cohort"
                if fp_now
                else "no longer in the cohort"
            )
        if what:
            changed[d] = "; ".join(what)
    key = UNIT_KEYS[record["unit"]]
    old = _rows_by_key(then_run.manifest, key)
    new = _rows_by_key(now_run.manifest, key)
    entered = sorted(set(new) - set(old))
    left = sorted(set(old) - set(new))
    modified = sum(1 for k in set(old) & set(new) if old[k] != new[k])
    return Comparison(
        identical=not entered and not left and not modified,
        changed_datasets=changed,
        entered=len(entered),
        left=len(left),
        modified=modified,
        rows_then=len(old),
        rows_now=len(new),
        examples_entered=entered[:5],
        examples_left=left[:5],
    )


def _rows_by_key(manifest, key: tuple[str, ...]) -> dict[tuple, dict]:
    return {tuple(r[k] for k in key): r for r in manifest.to_pylist()}


def report_lines(v: Verification) -> list[str]:
    lines = []
    if v.reproducible:
        lines.append(f"{v.cohort}: identical at the recorded versions (manifest sha256 {v.recorded_hash[:16]}…)")
    else:
        why = "" if v.replayed_versions_match else " (the time-travelled catalog does not hold the recorded versions)"
        lines.append(
            f"{v.cohort}: DIFFERENT at the recorded versions{why}: recorded {v.recorded_hash[:16]}…, "
            f"re-run {v.replayed_hash[:16]}…"
        )
    c = v.current
    if c.identical and not c.changed_datasets:
        lines.append("current data: identical (no dataset of the cohort changed)")
    else:
        for d, what in c.changed_datasets.items():
            lines.append(f"changed since the run: {d}: {what}")
        lines.append(
            f"current data: {'identical rows' if c.identical else 'different'}: {c.rows_then:,} -> "
            f"{c.rows_now:,} units; {c.entered:,} enter, {c.left:,} leave, {c.modified:,} changed values"
        )
        for label, examples in (("entering", c.examples_entered), ("leaving", c.examples_left)):
            if examples:
                lines.append(f"  e.g. {label}: " + ", ".join(":".join(map(str, k)) for k in examples))
    return lines

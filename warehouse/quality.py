"""Quality gates for staged partitions: Great Expectations suites per table, integrity SQL across tables.

Suites are data: their structure (columns, not-null, closed vocabularies) is generated from the schema
(suite_structure.py), their rules are expectations/<table>.json (GX 1.x configs with a `meta.name` each);
integrity checks are SQL (expectations/integrity.sql), each a query returning offending rows.
Both run on the *staged* version of a dataset, before it is published, and report per check:
passed or not, whether a failure blocks publishing, how many rows offend and a sample of them.

GX takes pandas frames. A table larger than GX_MAX_ROWS is validated on a reproducible sample, the rows
whose values hash lowest (said in the outcome), and its key uniqueness is then computed in SQL over every row, since a
sample cannot prove uniqueness. GX is imported only when a validation runs: it costs seconds.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, lru_cache

import duckdb

from . import findings, schema
from .lazy_imports import deferred
from .memory import beyond_limit_if_needed, release_unused
from .resources import data_folder
from .scratch import scratch_dir
from .store import Store
from .suite_structure import generated_overlap, structural_expectations
from .views import create_views, register_store, staged_files_sql

EXPECTATIONS_ROOT = data_folder("expectations")
GX_MAX_ROWS = 1_000_000
GATE_MEMORY_LIMIT = "512MB"  # DuckDB's, for the gates' SQL over every staged row (staged_connection)
KEY_CHECK = "key_unique"  # the expectation counted in SQL over every row, never by GX (_key_check)
VALUE_SETS = {"findings": lambda: findings.findings()}  # value sets a suite names instead of copying
SAMPLE_ROWS = 20


@dataclass
class CheckOutcome:
    table: str
    name: str
    kind: str  # expectation | integrity
    passed: bool
    blocking: bool  # a failure keeps the partition from being published
    description: str
    unexpected_count: int = 0
    unexpected_percent: float | None = None
    observed: object = None
    sample: list[dict] = field(default_factory=list)
    evaluated_rows: int | None = None
    note: str | None = None


# --- suites --------------------------------------------------------------------------------
@cache
def suite(table: str) -> dict:
    path = EXPECTATIONS_ROOT / f"{table}.json"
    doc = json.loads(path.read_text())
    restated = generated_overlap(table, doc["expectations"])
    if restated:
        raise ValueError(
            f"{path}: {', '.join(restated)} restate the schema; the structural expectations are "
            "generated from warehouse/schema.py (warehouse/suite_structure.py)"
        )
    doc["expectations"] = structural_expectations(table) + doc["expectations"]
    for expectation in doc["expectations"]:  # "value_set": {"$vocabulary": "findings"} -> the ids of findings.csv
        ref = expectation["kwargs"].get("value_set")
        if isinstance(ref, dict) and set(ref) == {"$vocabulary"}:
            expectation["kwargs"]["value_set"] = sorted(VALUE_SETS[ref["$vocabulary"]]())
    names = [e["meta"]["name"] for e in doc["expectations"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: expectation names (meta.name) must be unique")
    return doc


def suite_tables() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in EXPECTATIONS_ROOT.iterdir() if p.name.endswith(".json"))


def expectation_checks(table: str) -> list[tuple[str, bool, str]]:
    """(check name, blocking, description) of each expectation, without importing GX."""
    return [
        (e["meta"]["name"], e.get("severity", "critical") == "critical", _describe(e))
        for e in suite(table)["expectations"]
    ]


def _describe(expectation: dict) -> str:
    kwargs = expectation["kwargs"]
    target = kwargs.get("column") or ", ".join(kwargs.get("column_list", [])) or "table"
    why = expectation.get("meta", {}).get("why")
    return f"{expectation['type']} on {target}" + (f": {why}" if why else "")


# --- integrity SQL -------------------------------------------------------------------------
@dataclass(frozen=True)
class IntegrityCheck:
    name: str
    requires: tuple[str, ...]
    blocking: bool
    description: str
    sql: str

    @property
    def table(self) -> str:
        return self.requires[0]


@lru_cache(maxsize=1)
def integrity_checks() -> tuple[IntegrityCheck, ...]:
    text = (EXPECTATIONS_ROOT / "integrity.sql").read_text()
    checks = []
    for block in re.split(r"\n(?=-- check:)", text):
        if not block.startswith("-- check:"):
            continue
        header = dict(re.findall(r"^-- (\w+):\s*(.*)$", block, flags=re.MULTILINE))
        sql = "\n".join(line for line in block.splitlines() if not line.startswith("--")).strip().rstrip(";")
        checks.append(
            IntegrityCheck(
                name=header["check"],
                requires=tuple(t.strip() for t in header["requires"].split(",")),
                blocking=header.get("severity", "critical") == "critical",
                description=header.get("description", ""),
                sql=sql,
            )
        )
    return tuple(checks)


# --- staged data ---------------------------------------------------------------------------
@contextmanager
def staged_connection(store: Store, files_by_table: dict[str, list[str]]) -> Iterator[duckdb.DuckDBPyConnection]:
    """In-memory DuckDB with one view per canonical table over the given (staged) files, closed on exit.

    Its memory is held to GATE_MEMORY_LIMIT, spilling to a scratch folder removed on exit: the key counts and the
    integrity joins run over every staged row, and without a limit DuckDB took what QBA's grew to (the gates were
    the peak of a QBA ingest, 1.3 GiB at 5 % of the dataset and 1.9 GiB at 10 %).
    """
    spill = scratch_dir("gates")
    con = duckdb.connect(config={"memory_limit": GATE_MEMORY_LIMIT, "temp_directory": str(spill)})
    try:
        register_store(con, store)
        views = {name: [staged_files_sql(schema.TABLES[name], files)] for name, files in files_by_table.items()}
        create_views(con, views)
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def run_integrity(con: duckdb.DuckDBPyConnection, fed: set[str], tables: set[str] | None = None) -> list[CheckOutcome]:
    """Integrity checks whose first table is in `tables`; a check reading a table the dataset
    does not feed does not apply and passes with a note."""
    outcomes = []
    for check in integrity_checks():
        if tables is not None and check.table not in tables:
            continue
        missing = [t for t in check.requires if t not in fed]
        if missing:
            outcomes.append(
                CheckOutcome(
                    check.table,
                    check.name,
                    "integrity",
                    True,
                    check.blocking,
                    check.description,
                    note=f"not applicable: no {', '.join(missing)} staged",
                )
            )
            continue
        count = scalar(con, f"SELECT count(*) FROM ({check.sql})")
        sample = _records(con, f"SELECT * FROM ({check.sql}) LIMIT {SAMPLE_ROWS}") if count else []
        outcomes.append(
            CheckOutcome(
                check.table,
                check.name,
                "integrity",
                count == 0,
                check.blocking,
                check.description,
                unexpected_count=int(count),
                sample=sample,
            )
        )
    return outcomes


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    """The single value of a query, fetched fully (DuckDB 2 keeps a half-read result open)."""
    return beyond_limit_if_needed(con, lambda: con.execute(sql).fetchall())[0][0]


def _records(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    def fetch() -> tuple[list[str], list[tuple]]:
        result = con.execute(sql)
        return [d[0] for d in result.description], result.fetchall()

    columns, rows = beyond_limit_if_needed(con, fetch)
    return [dict(zip(columns, map(_plain, row))) for row in rows]


def _plain(value):
    from numpy import ndarray

    if isinstance(value, ndarray):  # a list cell, as pandas hands it over
        value = value.tolist()
    elif hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


# --- GX ------------------------------------------------------------------------------------
def _gx():
    """Great Expectations, imported without the chart and statistics modules no gate uses (lazy_imports)."""
    with deferred():
        import great_expectations as gx
    return gx


@cache
def _validation_definition(table: str):
    gx = _gx()
    context = _gx_context()
    batch = (
        context.data_sources.add_pandas(f"staged_{table}")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("partition")
    )
    doc = suite(table)
    run_by_gx = [e for e in doc["expectations"] if e["meta"]["name"] != KEY_CHECK]
    gx_suite = context.suites.add(gx.ExpectationSuite(name=table, expectations=run_by_gx, meta=doc["meta"]))
    return gx.ValidationDefinition(name=f"{table}_gate", data=batch, suite=gx_suite)


@lru_cache(maxsize=1)
def _gx_context():
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)  # GX logs hundreds of INFO lines otherwise
    from great_expectations.execution_engine import pandas_execution_engine

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # GX fingerprints every pandas batch it loads (twice per validation) unless the frame is over this many
    # bytes, and a frame with a list column (labels.locations, qa_answers.entities) cannot be hashed by pandas,
    # so GX pickles the whole frame and digests that: over half of a QBA ingest's time. Nothing reads the
    # fingerprint (it only names the batch in results we never store), so no frame is fingerprinted.
    pandas_execution_engine.HASH_THRESHOLD = 0
    return context


def _forget(batch) -> None:
    """Drop what GX keeps of a validated batch: the frame and the metrics computed on it.

    The cached data source's engine held every table's last frame until that table was validated again, so a
    process ingesting NIH then CheXpert carried NIH's frames (and CheXpert's after it) for its whole life:
    260 MB after the two.
    """
    engine = batch.data.execution_engine
    engine.batch_manager.reset_batch_cache()
    engine.batch_manager.batch_data_cache.clear()
    engine._metric_cache.clear()


def validate_table(con: duckdb.DuckDBPyConnection, table: str) -> list[CheckOutcome]:
    """Run the table's GX suite over its staged rows (or a reproducible sample of them)."""
    try:
        return _validated(con, table)
    finally:
        release_unused()  # the frame and GX's metrics on it are gone: the next table starts without their pages


def _validated(con: duckdb.DuckDBPyConnection, table: str) -> list[CheckOutcome]:
    total = scalar(con, f'SELECT count(*) FROM "{table}"')
    sampled = total > GX_MAX_ROWS
    rows = beyond_limit_if_needed(con, lambda: con.sql(sample_sql(table, total)).to_arrow_table())
    if rows.num_rows < min(total, GX_MAX_ROWS):  # the hash prefilter kept too few (never seen): take them all
        rows = beyond_limit_if_needed(con, lambda: con.sql(sample_sql(table, total, prefilter=False)).to_arrow_table())
    frame = _widened(rows.to_pandas().reset_index(drop=True))
    del rows
    # the batch validates the suite directly: ValidationDefinition.run() would also serialize every result
    # into the ephemeral context's store, a third of the time on a small partition, for nothing read back
    definition = _validation_definition(table)
    batch = definition.data.get_batch(batch_parameters={"dataframe": frame})
    try:
        with _configurations_built_once():
            result = batch.validate(
                definition.suite,
                result_format={
                    "result_format": "COMPLETE",
                    "partial_unexpected_count": SAMPLE_ROWS,
                    "return_unexpected_index_query": False,
                },
            )
    finally:
        _forget(batch)
    by_name = {r.expectation_config.meta["name"]: r for r in result.results}
    outcomes = []
    for name, blocking, description in expectation_checks(table):
        if name == KEY_CHECK:
            outcomes.append(_key_check(con, table, total, blocking, description))
            continue
        r = by_name[name]
        details = r.result or {}
        positions = (details.get("unexpected_index_list") or [])[:SAMPLE_ROWS]
        sample = (
            [{k: _plain(v) for k, v in row.items()} for row in frame.iloc[positions].to_dict(orient="records")]
            if positions
            else []
        )
        outcome = CheckOutcome(
            table,
            name,
            "expectation",
            bool(r.success),
            blocking,
            description,
            unexpected_count=int(details.get("unexpected_count") or 0),
            unexpected_percent=_plain(details.get("unexpected_percent")),
            observed=_plain(details.get("observed_value")),
            sample=sample,
            evaluated_rows=len(frame),
            note=f"validated on a reproducible sample of {len(frame):,} of {total:,} rows" if sampled else None,
        )
        if r.exception_info and _raised(r.exception_info):
            outcome.passed, outcome.note = False, f"expectation could not run: {_raised(r.exception_info)}"
        outcomes.append(outcome)
    return outcomes


def sample_sql(table: str, total: int, *, prefilter: bool = True) -> str:
    """The rows GX validates: every row, or for a table over GX_MAX_ROWS the GX_MAX_ROWS rows whose values hash
    lowest, in hash order.

    The same rows for the same data whatever the files' layout or the thread count. The seeded reservoir sample
    it replaces repeated only for the same files in the same order, and DuckDB runs it on one thread: 7.6 s for
    a million of QBA's 1.56 M boxes, against 1.1 s here, and it grows with the table. The prefilter keeps about a tenth more rows than needed, by hash
    range, so the top-N heap sees only those of a large table."""
    if total <= GX_MAX_ROWS:
        return f'SELECT * FROM "{table}"'
    row_hash = "hash(*COLUMNS(*))"
    share = min(1.0, (GX_MAX_ROWS * 1.1 + 100) / total) if prefilter else 1.0
    where = f" WHERE {row_hash} <= {min(2**64 - 1, int(share * 2**64))}::UBIGINT" if share < 1.0 else ""
    return f'SELECT * FROM "{table}"{where} ORDER BY {row_hash} LIMIT {GX_MAX_ROWS}'


@contextmanager
def _configurations_built_once() -> Iterator[None]:
    """While one suite validates, build each expectation's `configuration` once, not on every read.

    GX 1.x rebuilds it (a pydantic `.dict()` and a new ExpectationConfiguration) each time the property is
    read, once per kwarg while it plans metrics: about a quarter of a small partition's ingest. Nothing
    changes an expectation during a validation, so the first build stands for the rest of it. Each entry
    holds its expectation, so an id is never reused within the validation."""
    from great_expectations.expectations.expectation import Expectation

    original = vars(Expectation)["configuration"]
    rebuild = original.fget
    built: dict[int, tuple[object, object]] = {}

    def configuration(self):
        entry = built.get(id(self))
        if entry is None:
            entry = built[id(self)] = (self, rebuild(self))
        return entry[1]

    Expectation.configuration = property(configuration)  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        Expectation.configuration = original  # type: ignore[method-assign]


def _widened(frame):
    """Narrow numeric columns (smallint, real) as int64 / float64: the same values, and GX compares only
    those dtypes vectorized (`expect_column_values_to_be_between` calls a Python function per row otherwise)."""
    import numpy as np

    wider: dict[str, type] = {}
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, np.dtype) and dtype.kind in "iu" and dtype != np.int64 and dtype.itemsize < 8:
            wider[name] = np.int64
        elif isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype != np.float64:
            wider[name] = np.float64
    return frame.astype(wider) if wider else frame


def _raised(info: dict) -> str | None:
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return nested.get("exception_message")
    return None


def _key_check(con, table: str, total: int, blocking: bool, description: str) -> CheckOutcome:
    """The suite's key_unique expectation, counted in SQL over every staged row instead of by GX.

    On a sample (tables over GX_MAX_ROWS) uniqueness proves nothing; on the whole frame, pandas hashes
    the key's columns row by row, the gate's largest allocation (about 100 MB more at the peak of
    CheXpert's 850 k labels). The count uses the expectation's own columns, so it checks the key the
    suite declares (the schema's key for boxes also holds raw_label, which would let two boxes share an
    index). `unexpected_count` counts the offending rows, every row of a repeated key, as GX does.

    Grouping by the key's strings built a hash table of every key (180 MB for those labels); grouping by
    the key's 64-bit hash first needs a fraction of that and finds every repeated key, plus the rare
    collision, which the exact grouping over only the candidate rows then discards."""
    (declared,) = [e["kwargs"]["column_list"] for e in suite(table)["expectations"] if e["meta"]["name"] == KEY_CHECK]
    key = ", ".join(f'"{c}"' for c in declared)
    candidates = f'SELECT hash({key}) FROM "{table}" GROUP BY ALL HAVING count(*) > 1'  # boxes has a column "h"
    dupes_sql = (
        f'SELECT {key}, count(*) AS copies FROM "{table}" WHERE hash({key}) IN ({candidates}) '
        "GROUP BY ALL HAVING count(*) > 1"
    )
    try:
        count = int(scalar(con, f"SELECT coalesce(sum(copies), 0) FROM ({dupes_sql})"))
    except duckdb.Error as e:  # a key column missing from the staged table: failed, as GX reports it
        first_line = str(e).splitlines()[0]
        return CheckOutcome(
            table,
            KEY_CHECK,
            "expectation",
            False,
            blocking,
            description,
            note=f"expectation could not run: {first_line}",
        )
    return CheckOutcome(
        table,
        KEY_CHECK,
        "expectation",
        count == 0,
        blocking,
        description,
        unexpected_count=count,
        unexpected_percent=100.0 * count / total if total else 0.0,
        sample=_records(con, f"{dupes_sql} LIMIT {SAMPLE_ROWS}") if count else [],
        evaluated_rows=total,
        note=f"computed in SQL over all {total:,} rows",
    )


# --- the gates, as the gated ingest and the Dagster asset checks call them -----------------------
def expectation_gate(con: duckdb.DuckDBPyConnection, table: str, fed: set[str], dataset: str) -> list[CheckOutcome]:
    """The table's suite on the staged rows; a table the dataset does not feed passes with a note."""
    if table in fed:
        return validate_table(con, table)
    return [
        CheckOutcome(
            table,
            name,
            "expectation",
            True,
            blocking,
            description,
            note=f"not applicable: {dataset} does not feed {table}",
        )
        for name, blocking, description in expectation_checks(table)
    ]


def gate_staged(store: Store, files_by_table: dict[str, list[str]], dataset: str) -> list[CheckOutcome]:
    """Every table gate (each table's suite, then the integrity SQL) on one run's staged files."""
    fed = set(files_by_table)
    with staged_connection(store, files_by_table) as con:
        outcomes = [o for table in suite_tables() for o in expectation_gate(con, table, fed, dataset)]
        return outcomes + run_integrity(con, fed)


# --- volume gates: a dataset that comes out empty, shrinks, or misses its release's known counts -------
DEFAULT_MAX_SHRINK = 0.2  # a table may lose at most this share of its rows against the last publish
EXPECTED_COUNTS = EXPECTATIONS_ROOT / "expected_counts.csv"
VOLUME_CHECKS = (
    ("not_empty", "the dataset's tables are not all empty (an empty source is a broken source)"),
    ("no_shrink", "no table lost more than the allowed share of its rows against the last publish"),
    ("expected_counts", "a known public release gives its known row counts"),
)


@lru_cache(maxsize=1)
def expected_counts() -> tuple[dict, ...]:
    import csv

    text = EXPECTED_COUNTS.read_text()  # a Traversable (the wheel's copy) opens without newline=
    return tuple(dict(r, rows=int(r["rows"])) for r in csv.DictReader(text.splitlines()))


def volume_gate(
    dataset: str,
    rows: dict[str, int],
    files: list[dict],
    previous: dict[str, int] | None,
    *,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    allow_shrink: bool = False,
) -> list[CheckOutcome]:
    """The volume checks on one run's staged row counts, against the last publish and the known releases.

    `files` are the source files read (name and sha256, as fingerprinted): the expected counts of a
    release apply only when its file, byte for byte, was read.
    """
    data = {t: n for t, n in rows.items() if t != "quarantine" and not schema.TABLES[t].derived}
    described = dict(VOLUME_CHECKS)

    def outcome(name: str, offending: list[dict], note: str | None = None) -> CheckOutcome:
        return CheckOutcome(
            "volume",
            name,
            "volume",
            not offending,
            True,
            described[name],
            unexpected_count=len(offending),
            sample=offending[:SAMPLE_ROWS],
            note=note,
        )

    empty = [] if any(data.values()) else [{"table": t, "rows": 0} for t in sorted(data)]
    shrunk = []
    for table, before in sorted((previous or {}).items()):
        now = data.get(table)
        if now is not None and before and (before - now) / before > max_shrink:
            shrunk.append(
                {
                    "table": table,
                    "published": before,
                    "staged": now,
                    "lost": before - now,
                    "lost_percent": round(100 * (before - now) / before, 1),
                }
            )
    note = None
    if shrunk and allow_shrink:
        shrunk, note = [], "shrink allowed by --allow-shrink"
    read = {(f.get("file"), f.get("sha256")) for f in files}
    wrong = [
        {
            "table": e["table"],
            "release": e["release"],
            "expected": e["rows"],
            "staged": data.get(e["table"], 0),
            "difference": data.get(e["table"], 0) - e["rows"],
        }
        for e in expected_counts()
        if e["dataset"] == dataset and (e["file"], e["sha256"]) in read and data.get(e["table"], 0) != e["rows"]
    ]
    return [outcome("not_empty", empty), outcome("no_shrink", shrunk, note), outcome("expected_counts", wrong)]

"""A confined DuckDB connection for user SQL (`cxr sql`, `Warehouse.sql`).

User SQL used to run with the process's rights: it could overwrite published parquet with COPY, write
other databases through ATTACH, read any host file, raise its own memory and thread limits and run
forever. Here two layers stop that:

* DuckDB itself: only the warehouse is readable (`allowed_directories`, `enable_external_access=false`),
  no extensions, fixed limits, and `lock_configuration` so SQL cannot undo any of it.
* A statement check: DuckDB still lets COPY write *inside* an allowed directory, so anything but
  SELECT (DESCRIBE/SHOW/SUMMARIZE/PIVOT ... IN parse as SELECT) and EXPLAIN of a SELECT is refused
  before it runs.

The catalog is ATTACHed to a fresh in-memory database rather than opened with `duckdb.connect(path)`:
DuckDB reuses an open database instance per path within a process, so a long-lived process would keep
answering from a catalog file that has since been replaced. An attached file is opened anew.

Time limit: DuckDB streams results (`execute` returns at the first rows; the rest is computed while
fetching), so the budget counts the time spent inside DuckDB, in `execute` and in every fetch, and not
the time the caller spends between fetches (printing rows, say). Each call runs on a worker thread so
the deadline and Ctrl-C both stop the query through `con.interrupt()`; DuckDB's own calls ignore SIGINT.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from .errors import QueryRefused, QueryTimeout

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What a user query may use: memory and threads are fixed before the lock; the time budget is run()'s."""

    memory_limit: str = "4GB"
    threads: int = 2
    timeout_seconds: float = 300.0


def confined_connection(
    catalog: Path,
    *,
    readable: Sequence[str],
    filesystems: Sequence = (),
    limits: Limits = Limits(),
    settings: dict[str, str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the catalog attached read-only, reading only `readable` dirs, settings locked.

    `readable` are folders (local paths or URLs such as s3://bucket/root) the catalog's views read;
    `filesystems` are fsspec filesystems to register first (a remote warehouse), since a locked
    connection cannot load httpfs. `settings` are fixed before the lock too (the planner settings
    the catalog's views want, see warehouse.views.PLANNER_SETTINGS).
    """
    spill = Path(tempfile.gettempdir()) / f"cxr-duckdb-{os.getpid()}-{secrets.token_hex(4)}"
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": limits.memory_limit,
            "threads": limits.threads,
            # DuckDB creates this only when a query spills and removes it on close; the default for an
            # in-memory database is ./.tmp in whatever folder the user runs from.
            "temp_directory": str(spill),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "allow_unsigned_extensions": False,
            "allow_persistent_secrets": False,
        },
    )
    try:
        for fs in filesystems:
            con.register_filesystem(fs)
        con.execute(f"ATTACH {_literal(str(Path(catalog).absolute()))} AS catalog (READ_ONLY)")
        con.execute("USE catalog")
        for name, value in (settings or {}).items():
            con.execute(f"SET {name} = {_literal(value)}")
        dirs = _allowed(readable, filesystems)
        con.execute(f"SET allowed_directories = [{', '.join(_literal(d) for d in dirs)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def check_statements(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryRefused, naming the statement and why, unless every statement is a SELECT or EXPLAIN SELECT."""
    _vetted(con, sql)


def run(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence | dict | None = None, *, timeout_seconds: float
) -> ConfinedResult:
    """Check every statement, then run them in order under one time budget; fetch from what is returned.

    Nothing runs unless all statements pass. Parameters go to the last statement.
    """
    statements = _vetted(con, sql)
    result = ConfinedResult(con, timeout_seconds)
    for i, text in enumerate(statements):
        result._guard(con.execute, text, params if i == len(statements) - 1 else None)
    return result


class ConfinedResult:
    """The running query: fetch methods of the DuckDB result, each under the query's time budget and Ctrl-C."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_seconds: float):
        self._con = con
        self._limit = timeout_seconds
        self._left = timeout_seconds

    @property
    def description(self) -> list | None:
        return self._con.description

    def fetchone(self) -> tuple | None:
        return self._guard(self._con.fetchone)

    def fetchmany(self, size: int = 1) -> list[tuple]:
        return self._guard(self._con.fetchmany, size)

    def fetchall(self) -> list[tuple]:
        return self._guard(self._con.fetchall)

    def fetchnumpy(self) -> dict:
        return self._guard(self._con.fetchnumpy)

    def df(self):
        return self._guard(self._con.df)

    def to_arrow_table(self, batch_size: int = 1_000_000):
        # DuckDB warns that Arrow from a DB-API result costs a copy (con.sql() would not), but only this
        # result lets rows stream under the deadline, and fetchmany callers need it too.
        def read():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)
                return self._con.to_arrow_table(batch_size)

        return self._guard(read)

    def to_arrow_reader(self, batch_size: int = 1_000_000):
        """A RecordBatchReader whose every batch is read under the budget (DuckDB's own reader would not be)."""
        import pyarrow as pa

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)
            reader = self._guard(self._con.to_arrow_reader, batch_size)
        assert reader is not None, "called only on the result of a statement that ran"

        def batches():
            while True:
                try:
                    yield self._guard(reader.read_next_batch)
                except StopIteration:
                    return

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one DuckDB call on a worker thread; interrupt it when the budget runs out or on Ctrl-C."""
        if self._left <= 0:
            raise self._timeout()
        box: dict[str, Any] = {}
        done = threading.Event()

        def work():
            try:
                box["value"] = fn(*args)
            except BaseException as e:
                box["error"] = e
            finally:
                done.set()

        started = time.monotonic()
        try:
            # start() waits for the thread in Python code, so a Ctrl-C can land there too: once the
            # thread exists, every way out of here first stops its query.
            threading.Thread(target=work, name="cxr-query", daemon=True).start()
            # short waits: a SIGINT the kernel hands to another thread (DuckDB's, the query's) only runs
            # Python's handler when the main thread returns to Python, which one long wait never does
            fired = False
            while not done.wait(0.2):
                if time.monotonic() - started >= self._left:
                    fired = True
                    self._stop(done)
                    break
        except KeyboardInterrupt:
            self._stop(done)
            raise
        finally:
            self._left -= time.monotonic() - started
        if "error" in box:
            e = box["error"]
            if fired and isinstance(e, duckdb.InterruptException):
                self._left = 0
                raise self._timeout() from None
            if isinstance(e, duckdb.PermissionException):
                raise QueryRefused(f"{_first_line(e)} (user queries may read only the warehouse)") from None
            raise e
        return box["value"]

    def _stop(self, done: threading.Event) -> None:
        # Repeat: an interrupt sent before the worker's call began is lost.
        self._con.interrupt()
        while not done.wait(0.1):
            self._con.interrupt()

    def _timeout(self) -> QueryTimeout:
        return QueryTimeout(
            f"query stopped after {self._limit:g} s (limit set by CXR_QUERY_TIMEOUT; raise it or narrow the query)"
        )


# --- the statement check -------------------------------------------------------------------
_READ_ONLY = "the query surface is read-only"
_WHY = {
    "COPY": f"{_READ_ONLY}; use --out to export",
    "EXPORT": f"{_READ_ONLY}; use --out to export",
    "COPY_DATABASE": f"{_READ_ONLY}; use --out to export",
    "ATTACH": "queries see only the warehouse catalog",
    "DETACH": "queries see only the warehouse catalog",
    "SET": "memory, threads and file access are fixed for user queries",
    "VARIABLE_SET": "memory, threads and file access are fixed for user queries",
    "LOAD": "extensions cannot be installed or loaded from user queries",
    "EXTENSION": "extensions cannot be installed or loaded from user queries",
    "PRAGMA": "use the table-function form, e.g. SELECT * FROM pragma_table_info('images')",
    "CALL": "use SELECT * FROM <function>(...) instead",
    "MULTI": "a PIVOT without IN (...) runs as several statements; list the values: PIVOT t ON col IN (...)",
    "PREPARE": "pass parameters with the query instead",
    "EXECUTE": "pass parameters with the query instead",
    "TRANSACTION": "each query runs on its own, read-only",
}
_SKIP = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]+")
_OPTIONS = re.compile(r"\(([\w\s,']*)\)")


def _vetted(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements to run, in order; an EXPLAIN comes back rebuilt from the SELECT it was checked with."""
    statements = con.extract_statements(sql)
    if not statements:
        raise QueryRefused("the query is empty: nothing to run")
    vetted = []
    for s in statements:
        kind = _type(s)
        if kind == duckdb.StatementType.SELECT:
            vetted.append(s.query)
        elif kind == duckdb.StatementType.EXPLAIN:
            vetted.append(_explained(con, s.query))
        else:
            why = _WHY.get(kind.name if kind else "", f"{_READ_ONLY} (only SELECT and EXPLAIN run)")
            raise QueryRefused(f"{_label(s)} is refused: {why}")
    return vetted


def _type(statement) -> duckdb.StatementType | None:
    """The statement's type; None for one this duckdb module has no name for (UPDATE EXTENSIONS)."""
    try:
        return statement.type
    except ValueError:
        return None


def _explained(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """EXPLAIN ANALYZE runs its statement (COPY included), so only an explained SELECT passes.

    The statement returned is rebuilt from the prefix and the SELECT that passed, so what runs is what
    was checked even if this scanner reads comments differently from DuckDB.
    """
    i = _skip(text, 0)
    if text[i : i + 7].upper() != "EXPLAIN":
        raise QueryRefused("EXPLAIN is refused: write it as EXPLAIN [ANALYZE] SELECT ...")
    i = _skip(text, i + 7)
    prefix = "EXPLAIN "
    if (word := _WORD.match(text, i)) and word.group().upper() == "ANALYZE":
        prefix, i = "EXPLAIN ANALYZE ", _skip(text, word.end())
    inner = _single(con, text[i:])
    if inner is None and (opts := _OPTIONS.match(text, i)) and opts.group(1).count("'") % 2 == 0:
        prefix, inner = f"EXPLAIN ({opts.group(1)}) ", _single(con, text[_skip(text, opts.end()) :])
    if inner is None or _type(inner) != duckdb.StatementType.SELECT:
        what = _label(inner) if inner is not None else "anything but one SELECT"
        raise QueryRefused(
            f"EXPLAIN of {what} is refused: only a SELECT can be explained here (EXPLAIN ANALYZE runs the statement)"
        )
    rebuilt = prefix + inner.query
    again = con.extract_statements(rebuilt)
    if len(again) != 1 or _type(again[0]) != duckdb.StatementType.EXPLAIN:
        raise QueryRefused("EXPLAIN is refused: write it as EXPLAIN [ANALYZE] SELECT ...")
    return rebuilt


def _single(con: duckdb.DuckDBPyConnection, text: str):
    """The one statement `text` holds, or None (several, none, or not parseable)."""
    try:
        found = con.extract_statements(text)
    except duckdb.ParserException:
        return None
    return found[0] if len(found) == 1 else None


def _label(statement) -> str:
    """How to name a statement to its author: its first keyword (INSTALL, PRAGMA), else its type."""
    word, kind = _keyword(statement.query), _type(statement)
    if kind is None:
        return word or "the statement"
    return word if word and word != "WITH" else kind.name


def _skip(text: str, i: int) -> int:
    """Where the next token starts: past any whitespace and comments from `i`."""
    skipped = _SKIP.match(text, i)
    assert skipped is not None, "_SKIP also matches the empty string"
    return skipped.end()


def _keyword(text: str) -> str:
    word = _WORD.match(text, _skip(text, 0))
    return word.group().upper() if word else ""


# --- helpers -------------------------------------------------------------------------------
def _allowed(readable: Sequence[str], filesystems: Sequence) -> list[str]:
    """Folder prefixes for allowed_directories, each ending in '/' so /root does not admit /root2.

    A registered fsspec filesystem hands DuckDB paths in its own spelling (memory://x comes back as
    memory:///x), so that spelling is allowed too.
    """
    by_protocol = {p: fs for fs in filesystems for p in _protocols(fs)}
    out: list[str] = []
    for folder in map(str, readable):
        if "://" in folder:
            forms = [folder]
            fs = by_protocol.get(folder.split("://", 1)[0])
            if fs is not None:
                forms.append(fs.unstrip_protocol(fs._strip_protocol(folder)))
        else:
            forms = [str(Path(folder).expanduser().absolute())]
        for f in forms:
            if (prefix := f.rstrip("/") + "/") not in out:
                out.append(prefix)
    return out


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(e: Exception) -> str:
    line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return line.removeprefix("Permission Error: ")

"""Cheap writes to Dagster's SQLite run history: no fsync per event, and no new connection per event.

Dagster's SQLite storage opens a connection and commits once per event, and a run of one dataset
logs a few hundred events (a planned and an evaluated event per check, step and output events).
With SQLite's default `synchronous=FULL` every commit waits for the disk (about 12 ms here), which
made the run history cost more than reading, checking and publishing the data. `synchronous=OFF`
keeps each commit atomic against a crash of the process; only an operating-system crash or power
loss mid-write can lose or damage recent run history. The warehouse's own data never lives in
these files (Delta commits and the publish log are written elsewhere), so that trade is safe.

The stock event log also builds a database engine for every event; `PooledSqliteEventLogStorage`,
which dagster.yaml configures, keeps them.
"""

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

_installed = False


def relax_sqlite_sync() -> None:
    """Turn off fsync-per-commit for every SQLite connection SQLAlchemy opens in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute("PRAGMA synchronous=OFF")

    event.listen(Engine, "connect", on_connect)
    _installed = True


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's per-run SQLite event log, with one engine per database file kept for the process's life.

    The stock storage builds a new SQLAlchemy engine for every event it writes or reads, so each of the
    few hundred events of a run paid for a fresh connection, dialect set-up and an empty statement cache
    (every INSERT compiled again): about a fifth of a small dataset's run. Here an engine is kept per
    shard (the cross-run index and the most recent runs' files), so a connection and its compiled
    statements are reused. Files, schema and locking are Dagster's own, so `dagster dev` reads what
    this writes, and another process writing the same files is safe: a pooled connection holds no lock
    between transactions.
    """

    KEPT_RUN_SHARDS = 4  # a process writes one run at a time; older runs' engines are closed

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_seen: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is None:
            engine = create_engine(  # one connection kept: a second one (the schema set-up opens it) is closed
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                pool_size=1,
            )
            self._engines[shard] = engine
            run_shards = [s for s in self._engines if s != INDEX_SHARD_NAME]
            for old in run_shards[: max(0, len(run_shards) - self.KEPT_RUN_SHARDS)]:
                self._engines.pop(old).dispose()
        else:
            self._engines.move_to_end(shard)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Asked for every asset check's event, sometimes inside an open index transaction (so not through the
        # locked pool), and each time it built an engine. A table, once there, stays: migrations only add them.
        if table_name not in self._tables_seen and super().has_table(table_name):
            self._tables_seen.add(table_name)
        return table_name in self._tables_seen

    def _close_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_engines()  # the run files are deleted; no pooled connection may keep writing to one
        self._tables_seen.clear()
        super().wipe()

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()

"""Cheap writes to Dagster's SQLite run history: no fsync per event.

Dagster's SQLite storage opens a connection and commits once per event, and a run of one dataset
logs a few hundred events (a planned and an evaluated event per check, step and output events).
With SQLite's default `synchronous=FULL` every commit waits for the disk (about 12 ms here), which
made the run history cost more than reading, checking and publishing the data. `synchronous=OFF`
keeps each commit atomic against a crash of the process; only an operating-system crash or power
loss mid-write can lose or damage recent run history. The warehouse's own data never lives in
these files (Delta commits and the publish log are written elsewhere), so that trade is safe.
"""

import sqlite3

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

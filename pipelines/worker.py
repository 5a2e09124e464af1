"""The start of a spawned ingest worker, before it imports anything that starts threads.

This module imports only the standard library. The pool unpickles its initializer first, so `start` runs
before the worker imports Dagster, DuckDB or polars (which start 14 threads between them), and every thread
the worker ever has inherits its signal mask.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

events = None  # the queue this worker's progress events go to


def start(queue) -> None:
    """Ignore and block Ctrl-C, and die with the parent, as a killed `cxr ingest` would.

    The terminal sends Ctrl-C to the whole group; the parent ends the workers itself. Ignoring SIGINT was not
    enough: while a step runs, Dagster installs a handler that raises in whatever Python code the main thread
    is running, a garbage-collection callback included, where the error was printed as a traceback and lost.
    A signal the process's threads all block is never delivered. The parent ends a worker with SIGTERM, which
    Dagster's handler raises the same way: where that lands in a callback, it is dropped without a traceback,
    and the worker ends with its parent a moment later. A run must not go on with nobody to report to.
    """
    global events
    events = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    sys.unraisablehook = _unraisable_unless_interrupt
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # the killed-ingest path: nothing published half-done, the next run sweeps the staging

    threading.Thread(target=watch, name="cxr-parent-watch", daemon=True).start()


def _unraisable_unless_interrupt(unraisable) -> None:
    """Python's report of an error raised where it cannot propagate, except an interrupt (a BaseException that
    is not an Exception: KeyboardInterrupt, Dagster's DagsterExecutionInterruptedError)."""
    error = unraisable.exc_value
    if isinstance(error, BaseException) and not isinstance(error, Exception):
        return
    sys.__unraisablehook__(unraisable)

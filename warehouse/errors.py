"""One base class for the errors a user can act on, so the CLI prints them as one clear line.

Anything else that escapes is a bug in this project and keeps its traceback.
"""

from __future__ import annotations


class CxrError(Exception):
    """An error whose message is meant for the person running the command."""


class UnknownName(CxrError, KeyError):
    """A table, column, dataset or query name that does not exist; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class QueryRefused(CxrError):
    """User SQL asked for something the confined query surface does not allow (writing, attaching, ...)."""


class QueryTimeout(CxrError):
    """A query ran past its time limit and was interrupted."""


class StaleCatalog(CxrError):
    """The catalog file was built for another warehouse root, or its root is missing."""

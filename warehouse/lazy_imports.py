"""Defer the modules Great Expectations imports for features the gates never use.

GX imports altair (charts for its data docs) and scipy.stats (its KL-divergence and KS-test
expectations) when it loads its expectation catalogue. No suite here uses either, yet together they
were about 0.8 s and 56–78 MB of every process that gates a dataset. While GX loads, those two modules
are imported with the standard library's `importlib.util.LazyLoader`: the module object exists and
runs its code on first attribute access, so a later `alt.Chart` (a report) or `stats.entropy` works
as usual. A module already imported is left as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

GX_UNUSED = ("altair", "scipy.stats")


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds `names` as the other finders would, but with a loader that runs them on first use."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


@contextmanager
def deferred(names: tuple[str, ...] = GX_UNUSED) -> Iterator[None]:
    """Within the block, a first import of one of `names` gives a module that loads when first used."""
    finder = _LazyFinder(tuple(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)

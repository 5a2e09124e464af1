"""Great Expectations loads without its chart and statistics modules, which still work when used."""

import subprocess
import sys

CHILD = """
import sys
from warehouse import quality
quality._gx_context()
loaded = [m for m in ("altair.vegalite", "scipy.stats._stats_py", "scipy.linalg") if m in sys.modules]
print("loaded:", loaded)
import altair as alt
from scipy import stats
chart = alt.Chart({"values": [{"x": 1}]}).mark_point().encode(x="x:Q").to_dict()
print("chart:", chart["mark"]["type"], "entropy:", round(float(stats.entropy([0.5, 0.5], [0.9, 0.1])), 4))
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
print("same:", kl.alt.Chart is alt.Chart, kl.stats.entropy is stats.entropy)
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_gx_loads_without_altair_and_scipy_stats_which_load_on_first_use():
    out = _run(CHILD)
    assert "loaded: []" in out
    assert "chart: point entropy: 0.5108" in out
    assert "same: True True" in out


def test_a_module_imported_before_gx_is_left_as_it_is():
    out = _run(
        "import altair, sys\nfrom warehouse import quality\nquality._gx_context()\n"
        "print(type(sys.modules['altair']).__name__, 'altair.vegalite' in sys.modules)"
    )
    assert out.split() == ["module", "True"]


def test_the_finder_is_gone_after_the_import():
    from warehouse.lazy_imports import _LazyFinder, deferred

    with deferred(("not_a_module_here",)):
        assert any(isinstance(f, _LazyFinder) for f in sys.meta_path)
    assert not any(isinstance(f, _LazyFinder) for f in sys.meta_path)

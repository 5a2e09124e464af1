"""The second half of tests/test_gates.py's planted defects (see FIRST_HALF there).

A file of its own so that pytest-xdist, which keeps each file on one worker, runs the two halves side
by side; the cases, the fixture and the assertions are test_gates.py's.
"""

from __future__ import annotations

import pytest

from .test_gates import SECOND_HALF, check_planted_defect, published  # noqa: F401 - the module fixture


@pytest.mark.parametrize("defect", SECOND_HALF, ids=lambda d: d.id)
def test_planted_defect_fails_its_check_and_blocks_publishing(published, defect, tmp_path, monkeypatch):  # noqa: F811
    check_planted_defect(published, defect, tmp_path, monkeypatch)

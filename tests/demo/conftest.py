"""The demo tests' tiny builds measure the prompt ceiling with a few steps (slow tests: the real
number of steps)."""

from __future__ import annotations

import pytest

from vlda.demo import measure


@pytest.fixture(autouse=True)
def _short_prompt_ceiling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(measure, "CEILING_STEPS", 3)

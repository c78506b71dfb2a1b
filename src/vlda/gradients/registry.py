"""Name -> gradient strategy."""

from __future__ import annotations

from vlda.gradients.base import GradientStrategy
from vlda.gradients.sum import SumStrategy

STRATEGIES: dict[str, type[GradientStrategy]] = {s.name: s for s in (SumStrategy,)}


def get_strategy(name: str) -> GradientStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown gradient strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}"
        ) from None

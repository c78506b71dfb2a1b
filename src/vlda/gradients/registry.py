"""Name -> gradient strategy. A config's ``gradients`` section is ``{name, **options}``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from vlda.gradients.base import GradientStrategy
from vlda.gradients.gh import GHStrategy
from vlda.gradients.ghpp import GHPPStrategy
from vlda.gradients.pcgrad import PCGradStrategy
from vlda.gradients.pga import PGAStrategy
from vlda.gradients.sum import SumStrategy

STRATEGIES: dict[str, type[GradientStrategy]] = {
    s.name: s for s in (SumStrategy, PGAStrategy, GHStrategy, GHPPStrategy, PCGradStrategy)
}


def get_strategy(spec: str | Mapping[str, Any]) -> GradientStrategy:
    """``"sum"`` or ``{"name": "pga", "radius": 3e-4, ...}`` -> a strategy instance.

    Unknown options are an error naming the valid ones."""
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", "sum")
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown gradient strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}"
        ) from None
    init = inspect.signature(cls.__init__).parameters.values()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    valid = [p.name for p in init if p.name != "self" and p.kind in keyword]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"gradient strategy {name!r}: unknown option(s) {unknown}; valid: {sorted(valid)}")
    return cls(**options)

"""Name -> gradient strategy. A config's ``gradients`` section is ``{name, **options}``.

The options are the strategy's ``__init__`` arguments; :func:`strategy_options` converts each
to its annotated type (pydantic) or refuses it, so ``gradients.radius=3e-4`` from the command
line is a float and ``gradients.radius=big`` an error naming the option."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from vlda.config import validation_message
from vlda.gradients.base import GradientStrategy
from vlda.gradients.gh import GHStrategy
from vlda.gradients.ghpp import GHPPStrategy
from vlda.gradients.pcgrad import PCGradStrategy
from vlda.gradients.pga import PGAStrategy
from vlda.gradients.sum import SumStrategy

STRATEGIES: dict[str, type[GradientStrategy]] = {
    s.name: s for s in (SumStrategy, PGAStrategy, GHStrategy, GHPPStrategy, PCGradStrategy)
}


def _strategy_class(name: str) -> type[GradientStrategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown gradient strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}"
        ) from None


def _option_types(cls: type[GradientStrategy]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.__init__)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: hints.get(p.name, Any) for p in params if p.name != "self" and p.kind in keyword}


def strategy_options(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """``{name, **options}`` with every option converted to its declared type.

    Raises ``ValueError`` (one sentence) for an unknown strategy, an unknown option (naming the
    valid ones) or a value of the wrong type."""
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = str(options.pop("name", "sum"))
    types = _option_types(_strategy_class(name))
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise ValueError(f"gradient strategy {name!r}: unknown option(s) {unknown}; valid: {sorted(types)}")
    out: dict[str, Any] = {"name": name}
    for key, value in options.items():
        try:
            out[key] = TypeAdapter(types[key]).validate_python(value)
        except ValidationError as err:
            raise ValueError(validation_message(err, "gradients", key)) from None
    return out


def get_strategy(spec: str | Mapping[str, Any]) -> GradientStrategy:
    """``"sum"`` or ``{"name": "pga", "radius": 3e-4, ...}`` -> a strategy instance."""
    options = strategy_options(spec)
    cls = _strategy_class(options.pop("name"))
    return cls(**options)

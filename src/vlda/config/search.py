"""Search-space distributions for random hyper-parameter search (DomainBed style).

A method declares, next to its hyper-parameters, the distribution each one is drawn from in a
random search (``Method.search_space``: config key -> distribution); a sweep file may add or
replace entries (``space:``). A draw is a pure function of a seeded :class:`random.Random`, so
the same ``search.seed`` and trial index give the same hyper-parameters on every machine, for
every task and every seed of a sweep (which is what lets a table pick one hyper-parameter set
per method across tasks).

In a sweep file a distribution is written as a one-key mapping::

    optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}     # 10 ** U(log10 a, log10 b)
    method.trade_off: {uniform: [0.1, 2.0]}       # U(a, b)
    train.batch_size: {choice: [16, 32, 64]}      # one of the values, uniformly
    method.n_ctx: {int_uniform: [4, 16]}          # an integer in [a, b], both included
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Distribution:
    """A distribution over one hyper-parameter value."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Distribution):
    """``U(low, high)``."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"uniform": [self.low, self.high]}


@dataclass(frozen=True)
class LogUniform(Distribution):
    """``10 ** U(log10 low, log10 high)`` (learning rates, weights spanning decades)."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return 10 ** rng.uniform(math.log10(self.low), math.log10(self.high))

    def to_dict(self) -> dict[str, Any]:
        return {"log_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class IntUniform(Distribution):
    """An integer in ``[low, high]``, both included."""

    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"int_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``values``, uniformly."""

    values: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        return self.values[rng.randrange(len(self.values))]

    def to_dict(self) -> dict[str, Any]:
        return {"choice": list(self.values)}


def parse_distribution(key: str, spec: Any) -> Distribution:
    """A distribution from its sweep-file form (see the module docstring); ``ValueError`` of one
    sentence naming ``key`` otherwise."""
    if isinstance(spec, list):
        return Choice(tuple(spec))
    if not (isinstance(spec, Mapping) and len(spec) == 1):
        raise ValueError(
            f"space.{key}: expected one of {{log_uniform: [a, b]}}, {{uniform: [a, b]}}, "
            f"{{int_uniform: [a, b]}} or {{choice: [...]}}, got {spec!r}"
        )
    (kind, args), = spec.items()
    if kind == "choice" and isinstance(args, list) and args:
        return Choice(tuple(args))
    bounds_ok = isinstance(args, list) and len(args) == 2 and all(isinstance(a, int | float) for a in args)
    if not bounds_ok or args[0] > args[1]:
        raise ValueError(f"space.{key}: {kind} needs two bounds [low, high] with low <= high, got {args!r}")
    low, high = args
    if kind == "uniform":
        return Uniform(float(low), float(high))
    if kind == "log_uniform":
        if low <= 0:
            raise ValueError(f"space.{key}: log_uniform needs positive bounds, got {args!r}")
        return LogUniform(float(low), float(high))
    if kind == "int_uniform":
        return IntUniform(int(low), int(high))
    raise ValueError(f"space.{key}: unknown distribution {kind!r}; use log_uniform, uniform, int_uniform or choice")

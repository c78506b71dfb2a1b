"""How named objectives become one update (DESIGN.md: a separate, swappable part).

A strategy gets a closure that evaluates the method's named objectives at the current
parameters, their weights, the trainable parameters, the optimizer and (optionally) a
``torch.amp.GradScaler``. It sets ``.grad`` on the parameters, steps the optimizer and returns
diagnostics (floats) for the log. Strategies that need gradients work on *unscaled* gradients.

Strategies that need more than one joint evaluation also get ``objectives``
(:class:`Objectives`): each named objective as its own closure, re-evaluable at perturbed
parameters (PGA), and the parameter groups (shared by every objective, or specific to one).
A method provides them by implementing

* ``objectives(source, target) -> {name: closure}`` — each closure returns one scalar loss at
  the *current* parameter values; work that does not depend on the trainable parameters
  (image features, pseudo-labels) is done once, outside the closures;
* ``param_groups() -> {"shared": [params], "specific": {objective name: [params]}}``.

A method without them still works with every strategy: :func:`objectives_from_method` then
makes one closure per entry of ``losses()`` (each re-evaluates all losses and keeps its own) and
treats every trainable parameter as shared. The plain sum never builds them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

Closure = Callable[[], Mapping[str, Tensor]]
ObjectiveFn = Callable[[], Tensor]


class Objectives:
    """The named objectives of one step, as closures, and the parameter groups they touch.

    Attributes:
        shared: parameters every objective depends on (PGA: the shared context ``θ_sh``).
        specific: objective name -> parameters only that objective depends on (PGA: the
            domain contexts ``θ_S``, ``θ_T``).
        weights: objective name -> weight of a plain sum (1 when absent).

    ``closures`` is built on first access, so a strategy that never asks for it (the plain
    sum) costs nothing.
    """

    def __init__(
        self,
        build: Callable[[], Mapping[str, ObjectiveFn]],
        shared: Sequence[torch.nn.Parameter],
        specific: Mapping[str, Sequence[torch.nn.Parameter]] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self._build = build
        self._closures: dict[str, ObjectiveFn] | None = None
        self.shared = list(shared)
        self.specific = {k: list(v) for k, v in (specific or {}).items()}
        self.weights = dict(weights or {})

    @property
    def closures(self) -> dict[str, ObjectiveFn]:
        if self._closures is None:
            self._closures = dict(self._build())
        return self._closures

    def params_of(self, name: str) -> list[torch.nn.Parameter]:
        """Shared parameters followed by ``name``'s specific ones."""
        return [*self.shared, *self.specific.get(name, [])]


def objectives_from_method(
    method: Any,
    source: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    weights: Mapping[str, float] | None = None,
) -> Objectives:
    """:class:`Objectives` of ``method`` for one (source, target) batch.

    Every closure (and the method's shared per-step work) runs under ``autocast()`` when given,
    like the engine's joint closure.
    """
    ctx = autocast or contextlib.nullcontext

    def wrap(fn: ObjectiveFn) -> ObjectiveFn:
        def run() -> Tensor:
            with ctx():
                return fn()

        return run

    if hasattr(method, "objectives"):

        def build() -> dict[str, ObjectiveFn]:
            with ctx():
                fns = method.objectives(source, target)
            return {name: wrap(fn) for name, fn in fns.items()}

    else:

        def build() -> dict[str, ObjectiveFn]:
            with ctx():
                names = list(method.losses(source, target))
            return {n: wrap(lambda n=n: method.losses(source, target)[n]) for n in names}

    trainable = [p for p in method.parameters() if p.requires_grad]
    if hasattr(method, "param_groups"):
        groups = method.param_groups()
        shared, specific = groups.get("shared", []), groups.get("specific", {})
    else:
        shared, specific = trainable, {}
    return Objectives(build, shared, specific, weights)


class GradientStrategy:
    name: ClassVar[str] = ""

    def step(
        self,
        closure: Closure,
        weights: Mapping[str, float],
        params: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        *,
        objectives: Objectives | None = None,
    ) -> dict[str, float]:
        raise NotImplementedError


def summarize_diagnostics(history: Sequence[Mapping[str, Any]], prefix: str = "train/grad/") -> dict[str, Any]:
    """Run-level means of the per-step gradient diagnostics logged in ``metrics.jsonl``.

    Each evaluation record holds the mean of every diagnostic over the steps since the previous
    record; the run mean weights each record by that number of steps. The mean of
    ``grad/conflict`` (1 when the objectives' shared gradients point apart, cos < 0) is the
    conflict rate. Returns ``{}`` when the strategy logged no diagnostics.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    prev = 0
    for rec in history:
        step = int(rec.get("step", 0))
        n = step - prev
        prev = step
        if n <= 0:
            continue
        for k, v in rec.items():
            if k.startswith(prefix) and isinstance(v, int | float):
                key = k[len("train/"):]
                sums[key] = sums.get(key, 0.0) + n * float(v)
                counts[key] = counts.get(key, 0) + n
    if not sums:
        return {}
    means = {k: sums[k] / counts[k] for k in sorted(sums)}
    out: dict[str, Any] = {"steps": max(counts.values()), "means": means}
    if "grad/cos" in means:
        out["cos_mean"] = means["grad/cos"]
    if "grad/conflict" in means:
        out["conflict_rate"] = means["grad/conflict"]
    return out

"""How named objectives become gradients (DESIGN.md: a separate, swappable part).

A strategy gets the step's :class:`Objectives` (the method's named losses, as one joint
evaluation and as one closure per objective, plus the parameter groups they touch), the
trainable parameters and a :class:`StepContext`. It **writes** ``p.grad`` for the parameters and
returns diagnostics (floats) for the log. It never steps the optimizer and never touches a
GradScaler: the engine unscales, clips, steps and updates the scaler
(:mod:`vlda.engine.stepper`).

Under fp16 mixed precision the strategy differentiates ``ctx.scale(loss)`` (the loss times the
GradScaler's scale, ``ctx.loss_scale``) and leaves ``.grad`` in that scaled form; a strategy
that reads gradients (angles, norms) divides by ``ctx.loss_scale`` first. In a distributed run
the strategy averages each objective's gradients with ``ctx.comm`` before it combines them, so
every process takes the same step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from vlda.gradients.comm import Communicator, LocalComm

ObjectiveFn = Callable[[], Tensor]
JointFn = Callable[[], Mapping[str, Tensor]]
ContextFactory = Callable[[], contextlib.AbstractContextManager]


class Objectives:
    """The named objectives of one step and the parameter groups they touch.

    Args:
        losses: evaluates every objective in one forward pass -> ``{name: scalar}``.
        closures: builds ``{name: fn}``, each ``fn()`` one objective at the *current* parameter
            values (PGA re-evaluates them at perturbed points). Default: from ``losses`` (each
            closure evaluates all and keeps its own).
        shared: parameters every objective depends on (PGA: the shared context ``θ_sh``; the
            classic methods: the classifier). Empty: all trainable parameters.
        specific: objective name -> parameters only that objective depends on.
        weights: objective name -> weight in a plain sum (1 when absent).
        metrics: per-step values the method reports for the log (e.g. the pseudo-label rate);
            kept by reference, so a joint evaluation may fill it in.
        run_in: context (autocast) every evaluation runs in.

    ``closures`` is built on first access, so a strategy that never asks for it costs nothing.
    """

    def __init__(
        self,
        losses: JointFn | None = None,
        *,
        closures: Callable[[], Mapping[str, ObjectiveFn]] | None = None,
        shared: Sequence[torch.nn.Parameter] = (),
        specific: Mapping[str, Sequence[torch.nn.Parameter]] | None = None,
        weights: Mapping[str, float] | None = None,
        metrics: dict[str, float] | None = None,
        run_in: ContextFactory | None = None,
    ) -> None:
        if losses is None and closures is None:
            raise TypeError("Objectives needs `losses` (joint) or `closures` (one per objective)")
        self._joint = losses
        self._build = closures
        self._closures: dict[str, ObjectiveFn] | None = None
        self.shared = list(shared)
        self.specific = {k: list(v) for k, v in (specific or {}).items()}
        self.weights = dict(weights or {})
        self.metrics: dict[str, float] = metrics if metrics is not None else {}
        self.run_in: ContextFactory = run_in or contextlib.nullcontext

    def losses(self) -> dict[str, Tensor]:
        """Every objective at the current parameters (one joint evaluation when available)."""
        with self.run_in():
            if self._joint is not None:
                return dict(self._joint())
        return {name: fn() for name, fn in self.closures.items()}

    @property
    def closures(self) -> dict[str, ObjectiveFn]:
        if self._closures is None:
            if self._build is not None:
                with self.run_in():
                    raw = dict(self._build())
            else:
                joint = self._joint
                assert joint is not None
                with self.run_in():
                    names = list(joint())
                raw = {n: _pick(joint, n) for n in names}
            self._closures = {n: self._wrap(fn) for n, fn in raw.items()}
        return self._closures

    def _wrap(self, fn: ObjectiveFn) -> ObjectiveFn:
        def run() -> Tensor:
            with self.run_in():
                return fn()

        return run

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def params_of(self, name: str) -> list[torch.nn.Parameter]:
        """Shared parameters followed by ``name``'s specific ones."""
        return [*self.shared, *self.specific.get(name, [])]


def _pick(joint: JointFn, name: str) -> ObjectiveFn:
    """One objective of a joint evaluation (the others are computed and dropped)."""
    return lambda: joint()[name]


@dataclass
class StepContext:
    """What the engine tells a strategy about this step.

    Attributes:
        loss_scale: the GradScaler's scale (1.0 without fp16 loss scaling).
        comm: averages per-objective gradients across processes (no-op in one process).
    """

    loss_scale: float = 1.0
    comm: Communicator = field(default_factory=LocalComm)

    def scale(self, loss: Tensor) -> Tensor:
        """``loss · loss_scale``: what to differentiate so that ``.grad`` is in scaled form."""
        return loss if self.loss_scale == 1.0 else loss * self.loss_scale


class GradientStrategy:
    """Base of the strategies: :meth:`compute` writes ``.grad`` and returns diagnostics.

    Declared properties, checked for every registered strategy by one parametrised test
    (``tests/gradients/test_strategy_properties.py``), so a new strategy inherits the checks:

    * ``sum_without_conflict``: the update equals the weighted sum ``Σ w_i ∇L_i`` when no two
      objectives' gradients conflict; a strategy for which that is false names, in
      ``sum_options``, options under which it is the weighted sum;
    * ``scale_invariant``: multiplying every loss by ``c > 0`` multiplies the update by ``c``;
      a strategy for which that is false names, in ``scale_invariant_options``, options under
      which it holds.
    """

    name: ClassVar[str] = ""
    sum_without_conflict: ClassVar[bool] = True
    sum_options: ClassVar[dict[str, Any]] = {}
    scale_invariant: ClassVar[bool] = True
    scale_invariant_options: ClassVar[dict[str, Any]] = {}

    def compute(
        self, objectives: Objectives, params: Sequence[torch.nn.Parameter], ctx: StepContext
    ) -> dict[str, float]:
        """Set ``p.grad`` (scaled by ``ctx.loss_scale``) for every parameter in ``params``
        (``None`` where no objective reaches it) and return diagnostics: at least
        ``loss/<name>`` and ``loss/total`` (the plain weighted sum ``Σ w_i L_i``)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (e.g. PCGrad's step counter)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def loss_diagnostics(losses: Mapping[str, Tensor], objectives: Objectives) -> dict[str, float]:
    """``loss/<name>`` of each objective and ``loss/total = Σ w_i L_i`` (one host sync)."""
    names = list(losses)
    if not names:
        return {"loss/total": 0.0}
    vals = torch.stack([losses[n].detach().float().reshape(()) for n in names])
    w = torch.tensor([objectives.weight(n) for n in names], dtype=vals.dtype, device=vals.device)
    out = dict(zip([f"loss/{n}" for n in names], vals.tolist(), strict=True))
    out["loss/total"] = float((w * vals).sum())
    return out


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

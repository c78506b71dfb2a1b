"""The optimizer step, owned by the engine.

One step: zero the gradients; the gradient strategy writes ``.grad`` from the method's
objectives (loss-scaled under fp16); then, here, in this order: unscale (``GradScaler``), clip
the global gradient norm (``optim.clip_grad_norm``), step the optimizer, update the scaler. A
step whose gradients are not finite is skipped by the scaler (fp16) and reported as
``amp/skipped``. Strategies never call ``optimizer.step()``; this is the one place that does.

Data-parallel: the strategy has averaged the gradients over the processes (``comm``), so every
process unscales the same gradients; on top of that, whether some gradient is not finite is
agreed on by every process after unscaling (one tiny average of the scaler's flags), so a
process that met an inf or a NaN makes every process skip the step and lower its scale, whatever
a strategy did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vlda.gradients.base import GradientStrategy, Objectives, StepContext
from vlda.gradients.comm import Communicator, default_comm


class Stepper:
    """Gradient strategy + optimizer (+ GradScaler, + clipping) for one run.

    Args:
        strategy: turns objectives into ``.grad``.
        params: the trainable parameters (the order the strategy sees them in).
        optimizer: steps them.
        scaler: a ``torch.amp.GradScaler`` (fp16 on CUDA) or ``None``.
        clip_grad_norm: max global norm of the unscaled gradients, or ``None``.
        comm: averages per-objective gradients across processes (default: from
            ``torch.distributed``'s state; a no-op in one process).
    """

    def __init__(
        self,
        strategy: GradientStrategy,
        params: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        clip_grad_norm: float | None = None,
        comm: Communicator | None = None,
    ) -> None:
        self.strategy = strategy
        self.params = list(params)
        self.optimizer = optimizer
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.clip_grad_norm = clip_grad_norm
        self.comm = comm if comm is not None else default_comm()

    def step(self, objectives: Objectives) -> dict[str, float]:
        """One update from ``objectives``; returns the strategy's diagnostics plus
        ``grad/total_norm`` (when clipping) and ``amp/scale``, ``amp/skipped`` (fp16)."""
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0
        if self.scaler is not None:  # scaling a 1 gives this step's scale (and initialises it)
            scale = float(self.scaler.scale(torch.ones((), device=self.params[0].device)))
        diag = dict(self.strategy.compute(objectives, self.params, StepContext(scale, self.comm)))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            if self.comm.world_size > 1:
                self._agree_on_overflow()
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
            diag["grad/total_norm"] = float(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            diag["amp/scale"] = scale
            diag["amp/skipped"] = float(self.scaler.get_scale() < scale)
        else:
            self.optimizer.step()
        return diag

    def _agree_on_overflow(self) -> None:
        """Every process's scaler flags "inf found" when any process's does (after ``unscale_``)."""
        assert self.scaler is not None
        flags = self.scaler._found_inf_per_device(self.optimizer)  # the scaler's own record
        if not flags:
            return
        mine = sum(f.double().sum() for f in flags.values())
        assert isinstance(mine, torch.Tensor)
        shared = mine.reshape(1).clone()
        self.comm.average([shared])
        if float(shared) > 0:
            for f in flags.values():
                f.fill_(1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "strategy": self.strategy.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.strategy.load_state_dict(state.get("strategy") or {})


def take_step(
    strategy: GradientStrategy,
    objectives: Objectives,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
) -> dict[str, float]:
    """One engine step outside a run (tests, notebooks): :meth:`Stepper.step`."""
    return Stepper(strategy, params, optimizer, scaler, clip_grad_norm).step(objectives)

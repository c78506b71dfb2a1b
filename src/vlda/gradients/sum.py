"""The plain weighted sum: ``grad = ∇ Σ_i w_i L_i`` (one forward, one backward pass)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlda.gradients.base import GradientStrategy, Objectives, StepContext, loss_diagnostics
from vlda.gradients.comm import filled


class SumStrategy(GradientStrategy):
    name = "sum"

    def compute(
        self, objectives: Objectives, params: Sequence[torch.nn.Parameter], ctx: StepContext
    ) -> dict[str, float]:
        losses = objectives.losses()
        zero = torch.zeros((), device=params[0].device) if params else torch.zeros(())
        total = sum((objectives.weight(n) * loss for n, loss in losses.items()), zero)
        if total.requires_grad:
            ctx.scale(total).backward()
        if ctx.comm.world_size > 1:
            grads = filled([p.grad for p in params], params)
            ctx.comm.average(grads)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        return loss_diagnostics(losses, objectives)

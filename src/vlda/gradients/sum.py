"""The plain weighted sum: ``grad = ∇ Σ_i w_i L_i`` (one backward pass)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from vlda.gradients.base import Closure, GradientStrategy, Objectives


class SumStrategy(GradientStrategy):
    name = "sum"

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
        optimizer.zero_grad(set_to_none=True)
        losses = closure()
        total = sum(weights.get(name, 1.0) * loss for name, loss in losses.items())
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        out = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        out["loss/total"] = float(total.detach())
        return out

"""How named objectives become one update (DESIGN.md: a separate, swappable part).

A strategy gets a closure that evaluates the method's named objectives at the current
parameters, their weights, the trainable parameters, the optimizer and (optionally) a
``torch.amp.GradScaler``. It sets ``.grad`` on the parameters, steps the optimizer and returns
diagnostics (floats) for the log. Strategies that need gradients work on *unscaled* gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

Closure = Callable[[], Mapping[str, Tensor]]


class GradientStrategy:
    name: ClassVar[str] = ""

    def step(
        self,
        closure: Closure,
        weights: Mapping[str, float],
        params: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
    ) -> dict[str, float]:
        raise NotImplementedError

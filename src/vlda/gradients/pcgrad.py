"""PCGrad — gradient surgery (Yu, Kumar, Gupta, Levine, Hausman, Finn; NeurIPS 2020).

For each objective ``i``, its gradient on the shared parameters is projected, one other
objective ``j`` at a time in a random order, on the normal plane of ``g_j`` whenever they
conflict; the update is the sum of the projected gradients
(:func:`~vlda.gradients.harmonize.pcgrad_weights_from_gram`). Any number of objectives; with two
it equals GH on the shared parameters. Parameters outside the method's shared group (a
discriminator, domain-specific prompts) get the plain sum of their gradients, as PCGrad's
task-specific parameters. One forward and one backward per objective.

The random order of each step is drawn from ``numpy.random.default_rng([seed, i])`` with ``i``
the number of steps this strategy has taken, so it is the same on every process of a
distributed run; the counter is saved in the checkpoint, so a resumed run continues the same
sequence of orders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from vlda.gradients.harmonize import HarmonizingStrategy, pcgrad_weights_from_gram


class PCGradStrategy(HarmonizingStrategy):
    """PCGrad. Args: ``seed`` (projection order), ``order`` (objectives to project; default all)."""

    name = "pcgrad"
    weights_apply_to_all = False
    n_objectives = None

    def __init__(self, seed: int = 0, order: Sequence[str] | None = None) -> None:
        super().__init__(order)
        self.seed = int(seed)
        self.calls = 0

    def weights_from_gram(self, g: Tensor, names: Sequence[str], loss_weights: Sequence[float]) -> Tensor:
        rng = np.random.default_rng([self.seed, self.calls])
        self.calls += 1
        return pcgrad_weights_from_gram(g, rng)

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state.get("calls", 0))

"""GH — Gradient Harmonization (Huang, Song, Zhang; IEEE TPAMI 2024; arXiv 2408.00288).

When the gradients ``g1``, ``g2`` of two objectives conflict (``<g1,g2> < 0``), each is
projected on the normal plane of the other and the sum of the projections is rewritten as a
re-weighting of the losses (:func:`~vlda.gradients.harmonize.gh_weights_from_gram`)::

    L_GH = a1 L1 + a2 L2,   a1 = 1 - <g1,g2>/||g1||²,   a2 = 1 - <g1,g2>/||g2||²   (else a = 1)

``g_i`` are the gradients of the method's weighted objectives on its parameter group (classic
methods: the classifier, the discriminator excluded, as the official ``getgrad(base_network)``);
the weights ``a`` then scale the whole objectives (every parameter), as the official code's
``total_loss.backward()``. Symmetric in the two objectives. The step costs one forward and two
backward passes (the official code: three backward); see
:class:`~vlda.gradients.harmonize.HarmonizingStrategy` for AMP and distributed runs.

Options (``gradients:`` section): ``order`` — the two objectives to harmonise, needed only when
the method has more than two (the rest is added unchanged); ``unweighted_gram`` — compute the
weights from the gradients of the *unweighted* losses, as the official code does (it
differentiates ``transfer_loss`` before multiplying by ``trade_off``); identical when the loss
weights are 1 (the GH experiments' ``trade_off = 1``). The official ``--GH`` flag's
``argparse type=bool`` bug (``--GH False`` enables it) has no counterpart here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vlda.gradients.harmonize import HarmonizingStrategy, gh_weights_from_gram


def _unweight(g: Tensor, loss_weights: Sequence[float]) -> Tensor:
    """Gram of ``g_i / w_i`` from the Gram of ``g_i`` (a zero weight is left as is)."""
    w = torch.tensor([x if x != 0 else 1.0 for x in loss_weights], dtype=g.dtype, device=g.device)
    return g / (w[:, None] * w[None, :])


class GHStrategy(HarmonizingStrategy):
    """GH. Args: ``order`` (two objective names), ``unweighted_gram`` (official-code
    compatibility, see the module docstring)."""

    name = "gh"

    def __init__(self, order: Sequence[str] | None = None, unweighted_gram: bool = False) -> None:
        super().__init__(order)
        self.unweighted_gram = bool(unweighted_gram)

    def weights_from_gram(self, g: Tensor, names: Sequence[str], loss_weights: Sequence[float]) -> Tensor:
        return gh_weights_from_gram(_unweight(g, loss_weights) if self.unweighted_gram else g)

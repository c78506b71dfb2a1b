"""GH++ (Huang, Song, Zhang; IEEE TPAMI 2024): rotate two conflicting gradients to exactly 90°.

With ``θ`` the angle between ``g1`` and ``g2`` (degrees) and ``β = k (θ - 90°)``, when
``<g1,g2> < 0`` (:func:`~vlda.gradients.harmonize.ghpp_weights_from_gram`)::

    a1 = 1 + 2 sin(β / 2),   a2 = 1 + 2 sin((β + 90° - θ) / 2)        (else a = 1)
    L_GH++ = a1 L1 + a2 L2

**Asymmetric** (``a1 >= 1 >= a2``): the objective named first is the one up-weighted. The
official CDAN / GVB code passes the transfer loss first (L1 = ``trade_off · transfer``, L2 =
classification); MCD / SSRT / DWL the classification loss first. ``order`` makes the choice
explicit; without it the method's objective order is used (the classic methods list their
adaptation objective first, reproducing the CDAN order; DAPL lists ``source_ce`` first). ``k``
is the official ``--trade_off_1`` (harmonic range, default 0.5). The angle is
scale-invariant, so the loss weights do not change it. Cost and the AMP / distributed
behaviour as :mod:`vlda.gradients.gh`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from vlda.gradients.harmonize import HarmonizingStrategy, ghpp_weights_from_gram


class GHPPStrategy(HarmonizingStrategy):
    """GH++. Args: ``k`` in [0, 1]; ``order``: [first, second] objective names."""

    name = "ghpp"

    def __init__(self, k: float = 0.5, order: Sequence[str] | None = None) -> None:
        super().__init__(order)
        if not 0.0 <= float(k) <= 1.0:
            raise ValueError(f"gradient strategy ghpp: k must be in [0, 1], got {k!r}")
        self.k = float(k)

    def weights_from_gram(self, g: Tensor, names: Sequence[str], loss_weights: Sequence[float]) -> Tensor:
        return ghpp_weights_from_gram(g, self.k)

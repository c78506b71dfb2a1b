"""CDAN(+E): Conditional Domain Adversarial Network (Long et al., NeurIPS 2018).

The discriminator sees the features conditioned on the classifier's predictions,
``T(z, g) = z ⊗ g`` with ``g = softmax(logits)`` (detached), through gradient reversal::

    transfer  = Σ_i w_i BCE(D(R_λ(T(z_i, g_i))), 1[i source]) / Σ_i w_i
    source_ce = CE(head(z_s), y_s)
    L = trade_off · transfer + source_ce

With ``entropy_conditioning`` (CDAN+E, the default here and in the GH experiments)
``w_i = 1 + exp(-H(g_i))``; otherwise ``w_i = 1`` (plain CDAN, TLlib's default).
``randomized`` replaces ``z ⊗ g`` (``K·C`` dims) by the randomized map
``(z R_z) ⊙ (g R_g) / √d`` (``d = randomized_dim``), as the official CDAN code does whenever
``--random`` is set (which, through its ``argparse type=bool`` bug, is always) and TLlib for
DomainNet. ``weight_normalize``: ``batch`` (TLlib) or ``domain`` (official CDAN: each domain's
weights sum to one); see :func:`~vlda.methods.adversarial.conditional_adversarial_loss`.

λ schedule, discriminator and learning rates as :mod:`vlda.methods.dann`. Defaults are TLlib's
(``cdan.py``); ``configs/cdan_*.yaml`` set the GH repository's (``cdan/train_image.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vlda.methods.adversarial import (
    MultiLinearMap,
    RandomizedMultiLinearMap,
    conditional_adversarial_loss,
)
from vlda.methods.base import Task
from vlda.methods.dann import DANN, DANNParams
from vlda.models.classifier import ImageBackbone


@dataclass
class CDANParams(DANNParams):
    entropy_conditioning: bool = True
    randomized: bool = False
    randomized_dim: int = 1024
    weight_normalize: str = "batch"  # "batch" (TLlib) | "domain" (official CDAN code)


class CDAN(DANN):
    """DANN with the discriminator on ``T(z, g)`` and entropy-weighted examples."""

    name = "cdan"
    Params = CDANParams

    def __init__(self, backbone: ImageBackbone, task: Task, params: CDANParams) -> None:
        if params.weight_normalize not in ("batch", "domain"):
            raise ValueError(f"cdan: weight_normalize must be 'batch' or 'domain', got {params.weight_normalize!r}")
        super().__init__(backbone, task, params)

    def build_discriminator_input(self) -> int:
        k, c = self.model.features_dim, self.task.n_classes
        p = self.params
        if p.randomized:
            self.conditioning: nn.Module = RandomizedMultiLinearMap(k, c, p.randomized_dim)
        else:
            self.conditioning = MultiLinearMap(k, c)
        return self.conditioning.out_dim

    def transfer_loss(self, z_s: Tensor, logits_s: Tensor, z_t: Tensor, logits_t: Tensor,
                      coeff: float) -> tuple[Tensor, Tensor]:
        return conditional_adversarial_loss(
            self.discriminator, self.conditioning, z_s, logits_s, z_t, logits_t,
            coeff, self.params.entropy_conditioning, self.params.weight_normalize,
        )

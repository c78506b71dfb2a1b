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

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda.methods.adversarial import (
    DomainDiscriminator,
    MultiLinearMap,
    RandomizedMultiLinearMap,
    conditional_adversarial_loss,
    grl_coefficient,
)
from vlda.methods.base import Task
from vlda.methods.classic_base import ClassifierMethod, ClassifierParams
from vlda.models.classifier import ImageBackbone


@dataclass
class CDANParams(ClassifierParams):
    trade_off: float = 1.0
    entropy_conditioning: bool = True
    randomized: bool = False
    randomized_dim: int = 1024
    weight_normalize: str = "batch"  # "batch" (TLlib) | "domain" (official CDAN code)
    discriminator_hidden: int = 1024
    discriminator_bn: bool = True
    lr_discriminator: float = 1.0
    grl_alpha: float = 10.0
    grl_max_steps: int | None = None
    grl_hi: float = 1.0


class CDAN(ClassifierMethod):
    name = "cdan"
    Params = CDANParams

    def __init__(self, backbone: ImageBackbone, task: Task, params: CDANParams) -> None:
        super().__init__(backbone, task, params)
        if params.weight_normalize not in ("batch", "domain"):
            raise ValueError(f"cdan: weight_normalize must be 'batch' or 'domain', got {params.weight_normalize!r}")
        k, c = self.model.features_dim, task.n_classes
        if params.randomized:
            self.conditioning: nn.Module = RandomizedMultiLinearMap(k, c, params.randomized_dim)
        else:
            self.conditioning = MultiLinearMap(k, c)
        self.discriminator = DomainDiscriminator(
            self.conditioning.out_dim, params.discriminator_hidden, params.discriminator_bn
        )

    def extra_modules(self) -> dict[str, tuple[nn.Module, float]]:
        return {"discriminator": (self.discriminator, self.params.lr_discriminator)}

    def specific_params(self) -> dict[str, list[nn.Parameter]]:
        return {"transfer": list(self.discriminator.parameters())}

    def grl_coeff(self) -> float:
        p = self.params
        return grl_coefficient(
            self.step_index, p.grl_max_steps or self.total_steps, p.grl_alpha, p.grl_hi
        )

    def losses(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
        n_s = len(source["images"])
        logits, z = self.forward_images(torch.cat([source["images"], target["images"]]))
        coeff = self.grl_coeff()
        transfer, acc = conditional_adversarial_loss(
            self.discriminator, self.conditioning, z[:n_s], logits[:n_s], z[n_s:], logits[n_s:],
            coeff, self.params.entropy_conditioning, self.params.weight_normalize,
        )
        self.last_metrics = {"grl_coeff": coeff, "domain_acc": float(acc)}
        return {"transfer": transfer, "source_ce": F.cross_entropy(logits[:n_s], source["labels"])}

    def loss_weights(self) -> dict[str, float]:
        return {"transfer": self.params.trade_off, "source_ce": 1.0}

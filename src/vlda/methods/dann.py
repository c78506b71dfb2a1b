"""DANN: Domain-Adversarial Neural Network (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

A domain discriminator ``D`` on the bottleneck features ``z``, trained through a gradient
reversal layer ``R_λ`` (identity forward, ``-λ·grad`` backward)::

    transfer  = 1/2 [ BCE(D(R_λ(z_s)), 1) + BCE(D(R_λ(z_t)), 0) ]
    source_ce = CE(head(z_s), y_s)
    L = trade_off · transfer + source_ce

Minimising ``transfer`` trains ``D`` to separate the domains while the reversed gradient trains
the features to make them indistinguishable. ``λ`` follows the usual schedule
``λ(p) = 2 / (1 + exp(-α p)) - 1`` with ``p = step / grl_max_steps``
(:func:`~vlda.methods.adversarial.grl_coefficient`); ``grl_max_steps: null`` means the run length
(Ganin et al.'s progress ``p``). TLlib uses ``α = 1, max_steps = 1000``, the CDAN / GH code
``α = 10, max_steps = 10000``: set ``grl_alpha`` / ``grl_max_steps`` to reproduce either.

Source and target images go through the network in one batch (shared BatchNorm statistics), as
in TLlib's ``dann.py``. The discriminator is TLlib's (1024-1024 MLP with BatchNorm), at the
learning-rate multiplier ``lr_discriminator`` (1.0: same as the new layers, as TLlib and the
CDAN code). Objectives are listed ``transfer`` first: with GH++ (asymmetric) the default order
is then the official CDAN/GVB one (L1 = transfer loss, L2 = classification loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda.config.search import Distribution, LogUniform
from vlda.methods.adversarial import DomainDiscriminator, domain_adversarial_loss, grl_coefficient
from vlda.methods.base import Task
from vlda.methods.classic_base import ClassifierMethod, ClassifierParams
from vlda.models.classifier import ImageBackbone


@dataclass
class DANNParams(ClassifierParams):
    trade_off: float = 1.0
    discriminator_hidden: int = 1024
    discriminator_bn: bool = True
    lr_discriminator: float = 1.0
    grl_alpha: float = 10.0
    grl_max_steps: int | None = None  # None: the run length (p = training progress)
    grl_hi: float = 1.0


class DANN(ClassifierMethod):
    name = "dann"
    Params = DANNParams
    search_space: ClassVar[Mapping[str, Distribution]] = {**ClassifierMethod.search_space, "method.trade_off": LogUniform(0.1, 10.0)}

    def __init__(self, backbone: ImageBackbone, task: Task, params: DANNParams) -> None:
        super().__init__(backbone, task, params)
        self.discriminator = DomainDiscriminator(
            self.build_discriminator_input(), params.discriminator_hidden, params.discriminator_bn
        )

    def build_discriminator_input(self) -> int:
        """Build what feeds the discriminator (nothing in DANN: the features); its width."""
        return self.model.features_dim

    def extra_modules(self) -> dict[str, tuple[nn.Module, float]]:
        return {"discriminator": (self.discriminator, self.params.lr_discriminator)}

    def specific_params(self) -> dict[str, list[nn.Parameter]]:
        return {"transfer": list(self.discriminator.parameters())}

    def grl_coeff(self) -> float:
        p = self.params
        return grl_coefficient(
            self.step_index, p.grl_max_steps or self.total_steps, p.grl_alpha, p.grl_hi
        )

    def transfer_loss(self, z_s: Tensor, logits_s: Tensor, z_t: Tensor, logits_t: Tensor,
                      coeff: float) -> tuple[Tensor, Tensor]:
        """The adversarial loss and the discriminator's accuracy (features ``[B, K]``)."""
        return domain_adversarial_loss(self.discriminator, z_s, z_t, coeff)

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        n_s = len(source["images"])
        logits, z = self.forward_images(torch.cat([source["images"], target["images"]]))
        coeff = self.grl_coeff()
        transfer, acc = self.transfer_loss(z[:n_s], logits[:n_s], z[n_s:], logits[n_s:], coeff)
        metrics.update(grl_coeff=coeff, domain_acc=float(acc))
        return {"transfer": transfer, "source_ce": F.cross_entropy(logits[:n_s], source["labels"])}

    def loss_weights(self) -> dict[str, float]:
        return {"transfer": self.params.trade_off, "source_ce": 1.0}

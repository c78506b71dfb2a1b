"""MCC: Minimum Class Confusion (Jin, Wang, Long, Wang; ECCV 2020).

On the target logits ``[B, C]`` only, with temperature ``T``::

    p   = softmax(logits / T)                                   [B, C]
    w_i = B (1 + exp(-H(p_i))) / Σ_j (1 + exp(-H(p_j)))          (detached; confident counts more)
    M   = pᵀ diag(w) p                                          [C, C] class confusion
    M̃_jk = M_jk / Σ_k' M_jk'                                     (category normalisation)
    mcc = (Σ_jk M̃_jk - Σ_j M̃_jj) / C                            (between-class confusion)
    L = trade_off · mcc + source_ce

Follows TLlib's ``MinimumClassConfusionLoss`` (``tllib/self_training/mcc.py``), which is the
official code's; TLlib's ``M / M.sum(dim=1)`` broadcasts over columns, which gives the same
loss because ``M`` is symmetric. Temperature 2.5, batch 36, lr 0.005 are TLlib's defaults
(``mcc.py``); the official/TLlib commands use a bottleneck of 1024 (Office-31) or 2048.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from vlda import distributed as D
from vlda.config.search import Distribution, LogUniform, Uniform
from vlda.methods.adversarial import entropy
from vlda.methods.classic_base import ClassifierMethod, ClassifierParams


def mcc_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Minimum class confusion of target logits ``[B, C]`` (scalar, see the module docstring)."""
    b, c = logits.shape
    p = torch.softmax(logits.float() / temperature, dim=1)
    w = 1.0 + torch.exp(-entropy(p).detach())
    # data-parallel: the weights and the confusion matrix are the global batch's (vlda.distributed)
    w = (b * D.world_size() * w / D.all_sum(w.sum())).unsqueeze(1)
    confusion = D.all_sum_grad((p * w).t() @ p)
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / c


@dataclass
class MCCParams(ClassifierParams):
    trade_off: float = 1.0
    temperature: float = 2.5


class MCC(ClassifierMethod):
    name = "mcc"
    Params = MCCParams
    search_space: ClassVar[Mapping[str, Distribution]] = {
        **ClassifierMethod.search_space, "method.trade_off": LogUniform(0.1, 10.0),
        "method.temperature": Uniform(1.5, 3.5),
    }

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        n_s = len(source["images"])
        logits, _ = self.forward_images(torch.cat([source["images"], target["images"]]))
        return {
            "mcc": mcc_loss(logits[n_s:], self.params.temperature),
            "source_ce": F.cross_entropy(logits[:n_s], source["labels"]),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"mcc": self.params.trade_off, "source_ce": 1.0}

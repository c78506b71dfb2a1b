"""FixMatch for UDA (Sohn et al., NeurIPS 2020; TLlib ``examples/.../fixmatch.py``).

Each target image comes in a weak view ``α(x)`` (the training crop/flip) and a strong view
``A(x)`` (the same plus RandAugment, :class:`~vlda.data.transforms.StrongTransform`)::

    q = softmax(f(α(x_t)))  (no gradient)        ŷ = argmax q,  m = 1[max q >= τ]
    target_pl = 1/B_t Σ_i m_i CE(f(A(x_t))_i, ŷ_i)
    source_ce = CE(f(x_s), y_s)
    L = source_ce + trade_off · target_pl

As in the paper and TLlib, ``target_pl`` averages over *all* target samples (masked ones count
as 0), so it is 0, not NaN, when no prediction passes ``τ``. The paper's test is ``>= τ``; TLlib
uses ``> τ`` (identical except at ties). The weak view is predicted without gradient in training
mode (TLlib); then the source batch and the strong views go through the network in two
separate passes, as in TLlib, so that each BatchNorm layer normalises each domain with its own
batch statistics. ``joint_batch: true`` sends them through in one batch instead (the FixMatch
paper's code, which concatenates labelled and unlabelled images, and vlda's behaviour until
2026-11-30): with BatchNorm, a batch that mixes two very different domains is normalised by
statistics that fit neither (docs/classic.md: on the demo, 0.137 against 0.212).
Defaults are TLlib's (``τ = 0.9``, bottleneck 1024, RandAugment n=2, m=10,
mstd=2). The engine asks :meth:`FixMatch.target_train_transform` for the target's two-view
transform; given a batch of single views (e.g. cached or hand-made), the weak view doubles as
the strong one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from vlda.config.search import Distribution, LogUniform, Uniform
from vlda.data.transforms import PairTransform, StrongTransform, TrainTransform, Transform
from vlda.methods.classic_base import ClassifierMethod, ClassifierParams


@dataclass
class FixMatchParams(ClassifierParams):
    bottleneck_dim: int = 1024
    trade_off: float = 1.0
    threshold: float = 0.9
    n_ops: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 2.0
    # True: source and strong target views in one forward pass (the paper's code); False: two
    # passes, each domain its own BatchNorm batch (TLlib, which produced the UDA numbers).
    joint_batch: bool = False


class FixMatch(ClassifierMethod):
    name = "fixmatch"
    Params = FixMatchParams
    search_space: ClassVar[Mapping[str, Distribution]] = {
        **ClassifierMethod.search_space, "method.trade_off": LogUniform(0.3, 3.0),
        "method.threshold": Uniform(0.8, 0.97),
    }

    def target_train_transform(self, weak: Transform) -> Transform:
        """The target's training transform: ``[weak view, strong view]`` of each image."""
        if not isinstance(weak, TrainTransform):
            raise TypeError(f"fixmatch: expected the engine's TrainTransform, got {type(weak).__name__}")
        p = self.params
        strong = StrongTransform(
            weak.size, weak.mean, weak.std, scale=weak.scale, flip=weak.flip, n_ops=p.n_ops,
            magnitude=p.magnitude, magnitude_std=p.magnitude_std,
        )
        return PairTransform(weak, strong)

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        images = target["images"]
        weak, strong = (images[:, 0], images[:, 1]) if images.dim() == 5 else (images, images)
        with torch.no_grad():
            q = torch.softmax(self.forward_images(weak)[0].float(), dim=1)
            conf, pseudo = q.max(dim=1)
            mask = (conf >= self.params.threshold).float()
        if self.params.joint_batch:
            n_s = len(source["images"])
            logits, _ = self.forward_images(torch.cat([source["images"], strong]))
            logits_s, logits_t = logits[:n_s], logits[n_s:]
        else:
            logits_s = self.forward_images(source["images"])[0]
            logits_t = self.forward_images(strong)[0]
        ce_t = F.cross_entropy(logits_t, pseudo, reduction="none")
        metrics["pl_mask_rate"] = float(mask.mean())
        return {
            "target_pl": (ce_t * mask).mean(),
            "source_ce": F.cross_entropy(logits_s, source["labels"]),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"target_pl": self.params.trade_off, "source_ce": 1.0}

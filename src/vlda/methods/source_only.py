"""Source only (ERM): the image classifier trained on labelled source images alone.

``L = CE(head(bottleneck(backbone(x_s))), y_s)``, TLlib's ``erm.py`` / ``source_only.py``. The
target images are not used for training (the engine still draws them, so every classic method
sees the same batches); it is the lower bound the adaptation methods are measured against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

from vlda.methods.classic_base import ClassifierMethod, ClassifierParams


@dataclass
class SourceOnlyParams(ClassifierParams):
    pass


class SourceOnly(ClassifierMethod):
    name = "source_only"
    Params = SourceOnlyParams

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        logits, _ = self.forward_images(source["images"])
        return {"source_ce": F.cross_entropy(logits, source["labels"])}

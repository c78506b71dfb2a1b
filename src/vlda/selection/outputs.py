"""What an evaluation returns: per split, the model's logits (and optionally features).

Splits: ``source_val`` (held-out labelled source images), ``target_train`` (the target images
the method adapts on, as *unlabelled* data: no labels are kept) and ``target_eval`` (the
target images the run is scored on, with labels). Validators read these, during training or
afterwards from the outputs a run saved (``train.save_outputs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SPLITS = ("source_val", "target_train", "target_eval")


@dataclass
class SplitOutputs:
    """One split's outputs.

    Attributes:
        logits: ``[N, C]`` float32.
        labels: ``[N]`` int64, or ``None`` for unlabelled data (``target_train``).
        features: ``[N, D]`` float32 (what the method's ``logits`` was applied to), or ``None``.
    """

    logits: Tensor
    labels: Tensor | None = None
    features: Tensor | None = None

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def unlabelled(self) -> SplitOutputs:
        """The same outputs without labels."""
        return SplitOutputs(self.logits, None, self.features)

    def to_dict(self) -> dict[str, Tensor]:
        out = {"logits": self.logits}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.features is not None:
            out["features"] = self.features
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitOutputs:
        return cls(d["logits"], d.get("labels"), d.get("features"))


def load_outputs(path: str | Path) -> dict[str, SplitOutputs]:
    """Read the outputs one evaluation saved (``outputs/step_XXXXXXX.pt``; tensors only)."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    return {name: SplitOutputs.from_dict(d) for name, d in raw.items()}

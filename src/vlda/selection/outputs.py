"""What an evaluation returns: per split, the model's logits (and optionally features).

Splits: ``source_val`` (held-out labelled source images), ``target_train`` (the target images
the method adapts on, as *unlabelled* data: no labels are kept) and ``target_eval`` (the
target images the run is scored on, with labels). A fourth, ``target_zeroshot``, holds the
logits zero-shot CLIP gives the ``target_train`` images (same rows, same order), computed once
per run from the pretrained backbone, for the validators that compare with it. Validators read
these during training, or afterwards from the outputs a run saved (``eval.save_outputs``:
``outputs/step_XXXXXXX.pt`` per evaluation, ``outputs/target_zeroshot.pt`` once; floating
tensors stored as fp16 by default and read back as fp32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SPLITS = ("source_val", "target_train", "target_eval")
ZEROSHOT = "target_zeroshot"
ALL_SPLITS = (*SPLITS, ZEROSHOT)
ZEROSHOT_FILE = "outputs/target_zeroshot.pt"


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

    def to_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """Tensors to save; logits and features as ``dtype`` (fp16 halves the files)."""
        out = {"logits": self.logits.to(dtype)}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.features is not None:
            out["features"] = self.features.to(dtype)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitOutputs:
        """Inverse of :meth:`to_dict`; logits and features come back as float32."""
        feats = d.get("features")
        return cls(d["logits"].float(), d.get("labels"), None if feats is None else feats.float())


def pack_outputs(
    outputs: Mapping[str, SplitOutputs], dtype: torch.dtype = torch.float16, features: bool = True
) -> dict[str, dict[str, Any]]:
    """What one evaluation's file holds: the evaluated splits (not the zero-shot reference,
    saved once per run), logits and features as ``dtype`` (features only if ``features``).
    When ``target_train`` is the ``target_eval`` images (transductive runs: the same tensors),
    it is stored as ``{"same_as": "target_eval"}`` rather than twice."""
    packed: dict[str, dict[str, Any]] = {}
    for name, out in outputs.items():
        if name not in SPLITS:
            continue
        ev = outputs.get("target_eval")
        if name == "target_train" and ev is not None and out.logits is ev.logits:
            packed[name] = {"same_as": "target_eval"}
            continue
        packed[name] = SplitOutputs(out.logits, out.labels, out.features if features else None).to_dict(dtype)
    return packed


def load_outputs(path: str | Path) -> dict[str, SplitOutputs]:
    """Read the outputs one evaluation saved (``outputs/step_XXXXXXX.pt``; tensors only), with
    the run's zero-shot reference (``outputs/target_zeroshot.pt``) when it was saved next to it."""
    path = Path(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    out = {name: SplitOutputs.from_dict(d) for name, d in raw.items() if "same_as" not in d}
    for name, d in raw.items():
        if "same_as" in d:
            out[name] = out[d["same_as"]].unlabelled()
    zs = path.parent / Path(ZEROSHOT_FILE).name
    if ZEROSHOT not in out and zs.is_file():
        out[ZEROSHOT] = SplitOutputs.from_dict(torch.load(zs, map_location="cpu", weights_only=True))
    return out

"""Measure a CLIP on the demo benchmark: zero-shot accuracy, confidence, linear probe.

Measured, with the zero-shot classifier ``"a photo of the number {}."`` over the words
``zero``..``nine`` and CLIP's logit scale:

* zero-shot accuracy on the source (``rendered``) and target (``handwritten``) domains;
* for each confidence threshold τ, on the target: the fraction of images whose top softmax
  probability is ≥ τ, the precision of their pseudo-labels, and the precision of the rest (what
  self-training methods such as DAPL's pseudo-labelling rely on);
* a linear probe (logistic regression, 5-fold cross-validation) on the frozen target image
  features: whether the features separate the classes at all.

The pretraining (:mod:`vlda.demo.pretrain`) records these numbers in the model's ``meta.json``;
:mod:`vlda.demo.quality` prints them for a saved model (``python -m vlda.demo.quality``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from vlda.data.catalog import DIGIT_WORDS

if TYPE_CHECKING:
    from open_clip.model import CLIP

__all__ = [
    "DIGIT_WORDS",
    "TAUS",
    "ZERO_SHOT_TEMPLATE",
    "assess_model",
    "confidence_table",
    "image_features",
    "linear_probe",
    "load_domain",
    "text_classifier",
]

ZERO_SHOT_TEMPLATE = "a photo of the number {}."
TAUS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def load_domain(folder: Path, mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """All images of a class-folder tree (``folder/<0..9>/*.png``), normalised, and labels."""
    images, labels = [], []
    for c in range(10):
        for path in sorted((Path(folder) / str(c)).glob("*.png")):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB"), np.float32) / 255.0)
            labels.append(c)
    if not images:
        raise FileNotFoundError(f"no images under {folder}/<0..9>/*.png")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x.contiguous(), torch.tensor(labels)


@torch.no_grad()
def image_features(model: CLIP, images: Tensor, batch_size: int = 500) -> Tensor:
    """L2-normalised image features of ``images`` (already normalised tensors)."""
    feats = [model.encode_image(images[i : i + batch_size]) for i in range(0, len(images),
                                                                          batch_size)]
    return nn.functional.normalize(torch.cat(feats).float(), dim=-1)


@torch.no_grad()
def text_classifier(
    model: CLIP, template: str = ZERO_SHOT_TEMPLATE, words: Sequence[str] = DIGIT_WORDS
) -> Tensor:
    """L2-normalised text features of ``template`` filled with each class word ``[C, D]``."""
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer([template.format(w) for w in words])
    return nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)


def confidence_table(
    probs: Tensor, labels: Tensor, taus: Sequence[float] = TAUS
) -> list[dict[str, float | None]]:
    """Per τ: fraction with max prob ≥ τ, precision above and below τ (``None`` if empty)."""
    conf, pred = probs.max(dim=-1)
    right = (pred == labels).float()
    rows = []
    for tau in taus:
        above = conf >= tau
        n_above, n_below = int(above.sum()), int((~above).sum())
        rows.append({
            "tau": float(tau),
            "frac_above": n_above / len(labels),
            "prec_above": float(right[above].mean()) if n_above else None,
            "prec_below": float(right[~above].mean()) if n_below else None,
        })
    return rows


def linear_probe(
    features: Tensor, labels: Tensor, folds: int = 5, seed: int = 0
) -> float | None:
    """Mean k-fold accuracy of a logistic regression on frozen features.

    Fewer folds are used when a class has fewer than ``folds`` images; ``None`` when one has
    fewer than two.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(folds, int(torch.bincount(labels).min()))
    if folds < 2:
        return None

    clf = LogisticRegression(max_iter=2000, C=10.0)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, features.numpy(), labels.numpy(), cv=cv).mean())


@torch.no_grad()
def assess_model(
    model: CLIP, data_root: Path, mean: Sequence[float], std: Sequence[float],
    source: str = "rendered", target: str = "handwritten", probe: bool = True,
) -> dict:
    """Quality numbers of an open_clip ``CLIP`` on the demo benchmark under ``data_root``."""
    model.eval()
    text = text_classifier(model)
    scale = float(model.logit_scale.exp().clamp(max=100.0))
    out: dict = {"template": ZERO_SHOT_TEMPLATE, "logit_scale": scale}
    for name, domain in (("source", source), ("target", target)):
        x, y = load_domain(Path(data_root) / domain, mean, std)
        feats = image_features(model, x)
        probs = torch.softmax(scale * feats @ text.t(), dim=-1)
        out[f"zero_shot_{name}"] = float((probs.argmax(-1) == y).float().mean())
        if name == "target":
            out["target_mean_confidence"] = float(probs.max(-1).values.mean())
            out["confidence"] = confidence_table(probs, y)
            if probe:
                out["probe_target"] = linear_probe(feats, y)
    return out

"""How good is the demo's stand-in CLIP? Zero-shot accuracy, confidence, linear probe.

``python -m vlda.demo.quality [--model-dir DIR] [--data-root DIR]`` prints the table (defaults:
the cached demo assets, built if missing).

Measured, with the zero-shot classifier ``"a photo of the number {}."`` over the words
``zero``..``nine`` and CLIP's logit scale:

* zero-shot accuracy on the source (``rendered``) and target (``handwritten``) domains;
* for each confidence threshold τ, on the target: the fraction of images whose top softmax
  probability is ≥ τ, the precision of their pseudo-labels, and the precision of the rest (what
  self-training methods such as DAPL's pseudo-labelling rely on);
* a linear probe (logistic regression, 5-fold cross-validation) on the frozen target image
  features: whether the features separate the classes at all.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

__all__ = [
    "DIGIT_WORDS",
    "TAUS",
    "ZERO_SHOT_TEMPLATE",
    "assess_demo_model",
    "assess_model",
    "confidence_table",
    "format_report",
    "load_demo_model",
    "load_domain",
]

ZERO_SHOT_TEMPLATE = "a photo of the number {}."
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
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
def image_features(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """L2-normalised image features of ``images`` (already normalised tensors)."""
    feats = [model.encode_image(images[i : i + batch_size]) for i in range(0, len(images),
                                                                          batch_size)]
    return nn.functional.normalize(torch.cat(feats).float(), dim=-1)


@torch.no_grad()
def text_classifier(
    model: nn.Module, template: str = ZERO_SHOT_TEMPLATE, words: Sequence[str] = DIGIT_WORDS
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
    model: nn.Module, data_root: Path, mean: Sequence[float], std: Sequence[float],
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


def load_demo_model(model_dir: Path) -> tuple[nn.Module, dict]:
    """The ``open_clip.model.CLIP`` saved in ``model_dir`` and its ``open_clip_config.json``."""
    import open_clip

    import vlda  # noqa: F401  (the torchvision shim, before open_clip)

    cfg = json.loads((Path(model_dir) / "open_clip_config.json").read_text())
    model = open_clip.model.CLIP(**cfg["model_cfg"])
    state = torch.load(Path(model_dir) / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), cfg


def assess_demo_model(model_dir: Path, data_root: Path) -> dict:
    """Quality numbers of the demo model in ``model_dir`` on the benchmark under ``data_root``."""
    model, cfg = load_demo_model(model_dir)
    pre = cfg["preprocess_cfg"]
    return assess_model(model, data_root, pre["mean"], pre["std"])


def format_report(q: dict) -> str:
    """A plain-text table of :func:`assess_model`'s numbers."""

    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    lines = [
        f"zero-shot ({q['template']!r}, logit scale {q['logit_scale']:.1f})",
        f"  source accuracy {pct(q['zero_shot_source'])}   target accuracy "
        f"{pct(q['zero_shot_target'])}",
    ]
    if q.get("probe_target") is not None:
        lines.append(f"  linear probe on frozen target features (5-fold) {pct(q['probe_target'])}")
    lines.append("  target pseudo-labels by confidence:")
    lines.append("    tau   above   prec>=tau  prec<tau")
    for row in q["confidence"]:
        lines.append(
            f"    {row['tau']:.1f}  {pct(row['frac_above'])}   {pct(row['prec_above'])}    "
            f"{pct(row['prec_below'])}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the quality table of the (cached) demo model."""
    parser = argparse.ArgumentParser(prog="python -m vlda.demo.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.model_dir is None or args.data_root is None:
        from vlda.demo.assets import ensure_demo_assets

        assets = ensure_demo_assets()
        args.model_dir = args.model_dir or assets.model_dir
        args.data_root = args.data_root or assets.data_root
    q = assess_demo_model(args.model_dir, args.data_root)
    print(json.dumps(q, indent=1) if args.json else format_report(q))


if __name__ == "__main__":
    main()

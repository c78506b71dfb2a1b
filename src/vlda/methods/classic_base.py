"""What the classic UDA baselines share: an image classifier that is *trained*.

Unlike the CLIP methods (frozen dual encoder, cached features), the classic methods
(``source_only``, ``dann``, ``cdan``, ``mcc``, ``fixmatch``) fine-tune an ImageNet backbone with
a bottleneck and a linear head (:class:`~vlda.models.classifier.ImageClassifier`). They declare
``model_family = "classifier"``; the engine then builds an :class:`ImageBackbone` from
``model`` (``backbone: timm``) instead of a vision-language backbone, and feeds images (the
feature cache is off, since the features change as the network trains).

For the gradient strategies a classic method declares its parameter groups: the classifier
(backbone, bottleneck, head) is ``shared`` by every objective; a domain discriminator is
``specific`` to the adversarial objective. GH / GH++ therefore compute their weights from the
classifier's gradients only, as the official GH code does (``getgrad(base_network)``, the
discriminator ``ad_net`` excluded).

Schedules that depend on training progress (DANN's reversal coefficient) read the step the
engine reports through :meth:`ClassifierMethod.on_train_step`, an explicit input rather than a
hidden counter (TLlib's ``auto_step``), so a resumed run continues the same schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vlda.methods.base import Method, Task
from vlda.models.classifier import ImageBackbone, ImageClassifier


@dataclass
class ClassifierParams:
    """Classifier shape and per-part learning-rate multipliers (TLlib defaults: bottleneck 256
    with BatchNorm, backbone at 0.1x the base lr, new layers at 1x)."""

    bottleneck_dim: int = 256
    bottleneck_bn: bool = True
    lr_backbone: float = 0.1
    lr_bottleneck: float = 1.0
    lr_head: float = 1.0


class ClassifierMethod(Method):
    """Base of the classic methods. Subclasses implement :meth:`losses`."""

    model_family: ClassVar[str] = "classifier"
    Params = ClassifierParams

    def __init__(self, backbone: ImageBackbone, task: Task, params: ClassifierParams) -> None:
        # Not Method.__init__: that freezes the backbone, and here the image network trains.
        nn.Module.__init__(self)
        if not isinstance(backbone, ImageBackbone):
            raise TypeError(
                f"method {self.name!r} trains an image classifier: it needs an ImageBackbone "
                f"(model.backbone: timm), got {type(backbone).__name__}"
            )
        self.task = task
        self.params = params
        self.last_metrics: dict[str, float] = {}
        self.model = ImageClassifier(
            backbone, task.n_classes, params.bottleneck_dim, params.bottleneck_bn,
            {"backbone": params.lr_backbone, "bottleneck": params.lr_bottleneck, "head": params.lr_head},
        )
        self.step_index = 0
        self.total_steps = 1

    @property
    def backbone(self) -> ImageBackbone:  # type: ignore[override]
        return self.model.backbone

    # -- engine hooks -------------------------------------------------------------------------
    def on_train_step(self, step: int, total_steps: int) -> None:
        """Called by the engine before each training step with the 0-based step index."""
        self.step_index = int(step)
        self.total_steps = max(int(total_steps), 1)

    def extra_modules(self) -> dict[str, tuple[nn.Module, float]]:
        """Modules besides the classifier (name -> (module, lr scale)), e.g. a discriminator."""
        return {}

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups with ``lr_scale`` (the trainer multiplies it in)."""
        groups = self.model.optimizer_groups()
        for name, (module, scale) in self.extra_modules().items():
            ps = [p for p in module.parameters() if p.requires_grad]
            if ps and scale > 0:
                groups.append({"params": ps, "lr_scale": float(scale), "name": name})
        return groups

    def param_groups(self) -> dict[str, Any]:
        """``shared``: the classifier; ``specific``: objective -> its own modules' parameters."""
        return {
            "shared": [p for p in self.model.parameters() if p.requires_grad],
            "specific": self.specific_params(),
        }

    def specific_params(self) -> dict[str, list[nn.Parameter]]:
        return {}

    # -- features and predictions -------------------------------------------------------------
    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Bottleneck features ``z`` ``[B, K]`` of ``batch["images"]`` (with gradient in training)."""
        if "images" not in batch:
            raise ValueError(
                f"method {self.name!r} trains the image network and needs images, not cached "
                "features (cache.enabled: false)"
            )
        return self.model.features(batch["images"])

    def logits(self, features: Tensor) -> Tensor:
        return self.model.head(features)

    def forward_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [B, C], features z [B, K])``."""
        return self.model(images)

    # -- state --------------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Learned parameters plus buffers (BatchNorm statistics, random maps)."""
        state = {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}
        state.update({f"buffer:{n}": b.detach().clone() for n, b in self.named_buffers()})
        return state

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        params = {k: v for k, v in state.items() if not k.startswith("buffer:")}
        super().load_trainable_state_dict(params)
        own = dict(self.named_buffers())
        bufs = {k[len("buffer:"):]: v for k, v in state.items() if k.startswith("buffer:")}
        if set(bufs) != set(own):
            raise ValueError(
                f"checkpoint buffers do not match method {self.name!r}: missing "
                f"{sorted(set(own) - set(bufs))}, unexpected {sorted(set(bufs) - set(own))}"
            )
        with torch.no_grad():
            for n, t in bufs.items():
                own[n].copy_(t)

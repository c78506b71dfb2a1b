"""What the classic UDA baselines share: an image classifier that is *trained*.

Unlike the CLIP methods (frozen dual encoder, cached features), the classic methods
(``source_only``, ``dann``, ``cdan``, ``mcc``, ``fixmatch``) fine-tune an ImageNet backbone with
a bottleneck and a linear head (:class:`~vlda.models.classifier.ImageClassifier`). They declare
``backbone_kind = "image_classifier"``, ``image_encoder = "trained"`` and
``uses_feature_cache = False``; the engine then builds an :class:`ImageBackbone` from ``model``
(``backbone: timm``) instead of a vision-language backbone, and feeds images.

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

from torch import Tensor, nn

from vlda.config.search import Distribution, LogUniform
from vlda.methods.base import Method, load_buffer_state
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
    """Base of the classic methods. Subclasses implement :meth:`forward_losses`."""

    backbone_kind = "image_classifier"
    image_encoder = "trained"
    uses_feature_cache = False
    artefact = "the classifier (backbone, bottleneck, head) and any extra module, with buffers"
    Params = ClassifierParams
    # Random search (vlda sweep): the base learning rate around TLlib's 0.01.
    search_space: ClassVar[Mapping[str, Distribution]] = {"optim.lr": LogUniform(1e-3, 3e-2)}

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Build the trained classifier around ``backbone`` (an :class:`ImageBackbone`)."""
        if not isinstance(backbone, ImageBackbone):
            raise TypeError(
                f"method {self.name!r} trains an image classifier: it needs an ImageBackbone "
                f"(model.backbone: timm), got {type(backbone).__name__}"
            )
        p = self.params
        self.model = ImageClassifier(
            backbone, self.task.n_classes, p.bottleneck_dim, p.bottleneck_bn,
            {"backbone": p.lr_backbone, "bottleneck": p.lr_bottleneck, "head": p.lr_head},
        )
        self.step_index = 0
        self.total_steps = 1

    @property
    def backbone(self) -> ImageBackbone:  # type: ignore[override]
        return self.model.backbone

    # -- engine hooks -------------------------------------------------------------------------
    def finetuned_encoder(self) -> nn.Module:
        """The pretrained backbone (bottleneck, head and discriminators are new layers)."""
        return self.model.backbone

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Called by the engine before each training step with the 0-based step index."""
        self.step_index = int(step)
        self.total_steps = max(int(total_steps), 1)

    def extra_modules(self) -> dict[str, tuple[nn.Module, float]]:
        """Modules besides the classifier (name -> (module, lr scale)), e.g. a discriminator."""
        return {}

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The classifier's parts and the extra modules, each with its ``lr_scale``."""
        groups = self.model.optimizer_groups()
        for name, (module, scale) in self.extra_modules().items():
            ps = [p for p in module.parameters() if p.requires_grad]
            if ps and scale > 0:
                groups.append({"params": ps, "lr_scale": float(scale), "name": name})
        return groups

    def param_groups(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """Shared: the classifier; specific: objective -> its own modules' parameters."""
        return [p for p in self.model.parameters() if p.requires_grad], self.specific_params()

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
        load_buffer_state(dict(self.named_buffers()), state, self.name)

"""Zero-shot CLIP: class text features from hand-written templates (Radford et al., 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vlda.methods.base import Method, Task
from vlda.models.backbone import VisionLanguageBackbone

# The 7-template subset the CLIP authors found best on ImageNet (CLIP's prompt-engineering
# notebook); "ensemble" in a config selects it.
CLIP_ENSEMBLE = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def zero_shot_classifier(
    backbone: VisionLanguageBackbone, prompt_names: tuple[str, ...], templates: tuple[str, ...]
) -> Tensor:
    """Template ensembling: ``w_k = normalize(mean_t normalize(g(template_t(k))))`` -> ``[C, D]``.

    With one template this is plain zero-shot CLIP."""
    texts = [t.format(name) for name in prompt_names for t in templates]
    feats = backbone.encode_texts(texts).reshape(len(prompt_names), len(templates), -1)
    return nn.functional.normalize(feats.mean(dim=1), dim=-1)


def resolve_templates(templates: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if templates == "ensemble":
        return CLIP_ENSEMBLE
    if isinstance(templates, str):
        templates = (templates,)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates must be strings with a '{{}}' for the class name: {templates!r}")
    return tuple(templates)


@dataclass
class ZeroShotParams:
    """``templates``: list of templates with ``{}`` for the class name, or ``"ensemble"``."""

    templates: list[str] | str = field(default_factory=lambda: ["a photo of a {}."])


class ZeroShot(Method):
    """``logits = exp(t) * <f(x), w_k>`` with ``w_k`` the (ensembled) template text features."""

    name = "zeroshot"
    trains = False
    artefact = "nothing: zero-shot CLIP learns no tensors"
    Params = ZeroShotParams

    def __init__(self, backbone: VisionLanguageBackbone, task: Task, params: ZeroShotParams) -> None:
        super().__init__(backbone, task, params)
        self.templates = resolve_templates(params.templates)
        self.register_buffer("weights", torch.empty(0), persistent=False)

    def setup(self, device: torch.device) -> None:
        self.weights = zero_shot_classifier(self.backbone, self.task.prompt_names, self.templates)

    def logits(self, features: Tensor) -> Tensor:
        return self.backbone.logit_scale * features @ self.weights.t()

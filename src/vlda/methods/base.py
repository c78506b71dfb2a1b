"""What a method is: trainable parts, named objectives for a batch, and a prediction.

A method never owns the loop (DESIGN.md). The engine gives it a source batch and a target
batch, asks for its named objectives (``{"source_ce": ..., "target_pl": ...}``), lets the
gradient strategy turn them into one update, and asks it to predict at evaluation time.

Batches are dicts:
    ``features``: ``[B, D]`` frozen image features (from the feature cache), or
    ``images``: ``[B, 3, H, W]`` normalised images (the method encodes them with the frozen encoder);
    ``labels``: ``[B]`` (source only: the engine never hands target labels to a method);
    ``domains``: ``[B]`` index of each sample's domain in ``task.domains`` (sources first, target last).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vlda.models.backbone import VisionLanguageBackbone


@dataclass(frozen=True)
class Task:
    """The adaptation problem a method is built for.

    Attributes:
        classnames: class names in label order.
        prompt_names: the names used in text prompts, same order.
        source_domains: source domain ids (one or more).
        target_domain: target domain id.
        domain_words: domain id -> word(s) used in prompts (``"real_world"`` -> ``"real world"``).
    """

    classnames: tuple[str, ...]
    prompt_names: tuple[str, ...]
    source_domains: tuple[str, ...]
    target_domain: str
    domain_words: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def domains(self) -> tuple[str, ...]:
        """All domains in index order: sources, then the target."""
        return (*self.source_domains, self.target_domain)

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def word(self, domain: str) -> str:
        return self.domain_words.get(domain, domain.replace("_", " "))


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``Params`` (a dataclass of hyper-parameters) and
    implement :meth:`losses` and :meth:`logits`."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    Params: ClassVar[type] = object

    def __init__(self, backbone: VisionLanguageBackbone, task: Task, params: Any) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.task = task
        self.params = params
        self.last_metrics: dict[str, float] = {}

    # -- hyper-parameters ---------------------------------------------------------------------
    @classmethod
    def make_params(cls, values: Mapping[str, Any] | None = None) -> Any:
        """Build ``cls.Params`` from a mapping; unknown keys are an error naming the valid ones."""
        values = dict(values or {})
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(
                f"method {cls.name!r}: unknown option(s) {unknown}; valid: {sorted(fields)}"
            )
        return cls.Params(**values)

    # -- features -----------------------------------------------------------------------------
    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """L2-normalised image features ``[B, D]`` (fp32) from the cache or the frozen encoder."""
        if "features" in batch:
            feats = batch["features"]
        else:
            with torch.no_grad():
                feats = self.backbone.encode_image(batch["images"])
        return nn.functional.normalize(feats.float(), dim=-1)

    # -- the contract -------------------------------------------------------------------------
    def losses(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named objectives (scalars) for one step. Weights come from :meth:`loss_weights`."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Weight of each named objective in a plain sum (default: 1 each)."""
        return {}

    def logits(self, features: Tensor) -> Tensor:
        """Normalised image features ``[B, D]`` -> class logits ``[B, C]`` on the target."""
        raise NotImplementedError

    def setup(self, device: torch.device) -> None:
        """Run once before training/evaluation (e.g. encode constant zero-shot prompts)."""

    # -- state --------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only the learned tensors (not the frozen backbone): what checkpoints store."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        own = dict(self.named_parameters())
        expected = {n for n, p in own.items() if p.requires_grad}
        if set(state) != expected:
            raise ValueError(
                f"checkpoint does not match method {self.name!r}: missing "
                f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}"
            )
        with torch.no_grad():
            for n, t in state.items():
                if own[n].shape != t.shape:
                    raise ValueError(f"checkpoint tensor {n}: shape {tuple(t.shape)} != {tuple(own[n].shape)}")
                own[n].copy_(t)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``sum(mask * values) / sum(mask)``, and exactly 0 (still differentiable) when the mask is
    empty. The official DAPL/PGA code divides by ``mask.sum()`` and gets NaN in that case, which
    under AMP silently skips the step."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)

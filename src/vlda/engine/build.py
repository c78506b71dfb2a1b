"""Building a run's backbone and method from its config (no data is read here)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from vlda.config import ConfigError, RunConfig
from vlda.engine.options import method_class
from vlda.methods.base import Method, Task
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.classifier import ImageBackbone, load_image_backbone
from vlda.models.loading import BackboneSpec, load_backbone


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast context of ``train.amp`` (``off``: autocast disabled)."""
    if amp == "off":
        return lambda: torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def load_run_backbone(cfg: RunConfig, device: torch.device | str = "cpu") -> VisionLanguageBackbone | ImageBackbone:
    """What ``cfg.model`` names, of the kind the method declares (``backbone_kind``): a timm
    image backbone for the classic methods, a vision-language backbone for the others."""
    m = cfg.model
    if method_class(cfg).backbone_kind == "image_classifier":
        return load_image_backbone(m.name, m.pretrained, m.image_size).to(device)
    return load_backbone(BackboneSpec(m.backbone, m.name, m.pretrained), device)


def build_method(cfg: RunConfig, task: Task, backbone: nn.Module) -> Method:
    """The configured method for ``task`` on ``backbone`` (options already checked)."""
    cls = method_class(cfg)
    opts = {k: v for k, v in cfg.method.items() if k != "name"}
    try:
        return cls(backbone, task, cls.make_params(opts))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method {cls.name!r}: {err}") from None

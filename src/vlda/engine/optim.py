"""Optimizers: SGD (the Dassl-based official configs) and AdamW (PGA's ``LA/`` path, ViT configs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; expected one of {OPTIMIZERS}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        self.betas = tuple(self.betas)


def build_optimizer(params: Sequence[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("the method has no trainable parameters to optimise")
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

"""Optimizers: SGD (the Dassl-based official configs), Adam (AD-CLIP, Dassl's ``adam``: L2 weight
decay in the gradient) and AdamW (PGA's ``LA/`` path, ViT configs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlda.config import OptimConfig


def build_optimizer(groups: Sequence[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """``groups``: parameters, or parameter groups (dicts; an ``lr_scale`` entry is kept for the
    engine, which multiplies it into the scheduled learning rate)."""
    if not groups:
        raise ValueError("the method has no trainable parameters to optimise")
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.name == "adam":  # L2 weight decay added to the gradient (Dassl's "adam": AD-CLIP)
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

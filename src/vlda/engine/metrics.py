"""Accuracy and mean per-class accuracy from predictions."""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Fraction of correct predictions (0 for an empty set)."""
    if labels.numel() == 0:
        return 0.0
    return float((pred == labels).float().mean())


def mean_class_accuracy(pred: Tensor, labels: Tensor, n_classes: int) -> float:
    """Mean over the classes present in ``labels`` of the per-class accuracy (VisDA's metric)."""
    if labels.numel() == 0:
        return 0.0
    correct = torch.zeros(n_classes).index_add_(0, labels.cpu(), (pred == labels).float().cpu())
    count = torch.bincount(labels.cpu(), minlength=n_classes).float()
    present = count > 0
    return float((correct[present] / count[present]).mean())


def per_class_accuracy(pred: Tensor, labels: Tensor, n_classes: int) -> list[float | None]:
    correct = torch.zeros(n_classes).index_add_(0, labels.cpu(), (pred == labels).float().cpu())
    count = torch.bincount(labels.cpu(), minlength=n_classes).float()
    return [float(c / n) if n > 0 else None for c, n in zip(correct, count, strict=True)]

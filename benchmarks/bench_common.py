"""Pieces shared by the benchmark scripts: an Office-Home-like task and a random feature bank."""

from __future__ import annotations

import numpy as np
import torch

from vlda.data.catalog import OFFICEHOME_CLASSES
from vlda.data.feature_cache import FeatureSet
from vlda.methods.base import Task


def make_task(n_classes: int) -> Task:
    """An Office-Home-like task (art -> real world) with ``n_classes`` classes."""
    names = [
        OFFICEHOME_CLASSES[i % len(OFFICEHOME_CLASSES)]
        + ("" if i < len(OFFICEHOME_CLASSES) else f"_{i // len(OFFICEHOME_CLASSES)}")
        for i in range(n_classes)
    ]
    return Task(
        classnames=tuple(names),
        prompt_names=tuple(n.replace("_", " ").lower() for n in names),
        source_domains=("art",),
        target_domain="real_world",
    )


def make_bank(n: int, n_views: int, dim: int, n_classes: int, seed: int) -> FeatureSet:
    """A FeatureSet like the cache returns (fp16 ``[N, 1 + K, D]``), in memory, random."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 1 + n_views, dim), dtype=np.float32).astype(np.float16)
    return FeatureSet(
        features=feats,
        labels=torch.from_numpy(rng.integers(0, n_classes, n)),
        valid=torch.ones(n, dtype=torch.bool),
        paths=[f"img{i}.jpg" for i in range(n)],
        key="benchmark",
    )

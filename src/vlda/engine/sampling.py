"""Deterministic, step-indexed sampling: the batch of step ``t`` is a pure function of
``(seed, stream, t)``.

Each stream walks through random permutations of its pool (one per epoch, drop-last); a pool
smaller than the batch is sampled with replacement. Because nothing depends on the history of
the run, a run resumed at step ``t`` draws exactly the batches an uninterrupted run would have
drawn, and so does a run whose data loader had workers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, stream: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def step_positions(n: int, batch_size: int, seed: int, stream: int, step: int) -> np.ndarray:
    """Positions (into a pool of size ``n``) of the ``batch_size`` items drawn at ``step``."""
    if n <= 0:
        raise ValueError("cannot sample from an empty pool")
    if n < batch_size:
        return np.random.default_rng([seed, stream, step, 1]).integers(0, n, batch_size)
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    return _permutation(n, seed, stream, epoch)[pos * batch_size : (pos + 1) * batch_size]


def step_seeds(batch_size: int, seed: int, stream: int, step: int) -> np.ndarray:
    """One augmentation seed per item of the batch of ``step`` (int64, non-negative)."""
    return np.random.default_rng([seed, stream, step, 2]).integers(0, 2**62, batch_size)


def split_batch(batch_size: int, parts: int) -> list[int]:
    """Balanced sub-batch sizes for several sources (``RandomDomainSampler``-like)."""
    if batch_size < parts:
        raise ValueError(f"batch size {batch_size} is smaller than the number of sources {parts}")
    base, extra = divmod(batch_size, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (train, val): ``round(fraction * n_c)`` of each class ``c`` to val.

    The split seed is fixed per run config (not the training seed), so the validation set used
    for model selection is the same for every seed of a sweep.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"source_val_fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 12345])
    val = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = int(round(fraction * len(pos)))
        if k >= len(pos):
            k = len(pos) - 1
        val.extend(rng.permutation(pos)[:k].tolist())
    val_arr = np.array(sorted(val), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val_arr)
    return train, val_arr

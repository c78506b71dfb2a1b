"""A cached training stream reads only the rows of each step's batch, whatever the cache's size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlda.data.feature_cache import FeatureSet
from vlda.engine.streams import Source, TrainStream


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def mapped_set(path: Path, n: int, n_views: int, dim: int) -> FeatureSet:
    """A feature set of ``n`` rows on disk, opened as the cache opens it (``mmap_mode="r"``)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, 1 + n_views, dim))
    out[:] = 1.0
    out.flush()
    del out
    labels = torch.from_numpy(np.arange(n) % 7)
    return FeatureSet(np.load(path, mmap_mode="r"), labels, torch.ones(n, dtype=torch.bool), [], "test")


class RowCounter:
    """Stands in for the memory-mapped features: counts the rows each read returns, and is no
    array, so that reading it whole (``np.asarray``, a copy) fails."""

    def __init__(self, features: np.ndarray) -> None:
        self.features, self.rows = features, 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.features.shape

    def __getitem__(self, key):
        out = self.features[key]
        self.rows += out.size // self.features.shape[-1]
        return out


def test_a_step_reads_only_its_batch_rows(tmp_path):
    fs = mapped_set(tmp_path / "features.npy", 5_000, 2, 8)
    counter = RowCounter(fs.features)
    fs.features = counter  # type: ignore[assignment]
    other = FeatureSet(counter, fs.labels, fs.valid, [], "other")  # a second domain, same rows
    sources = [Source(0, np.arange(0, 5_000, 2), features=fs), Source(1, np.arange(1, 5_000, 2), features=other)]
    stream = TrainStream(sources, [7, 5], seed=0, stream_id=0, with_labels=True)
    for step, batch in enumerate(stream.iterate(0, 4), start=1):
        assert batch["features"].shape == (12, 8) and counter.rows == 12 * step


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_steps_allocate_a_batch_not_the_cache(tmp_path):
    """96 MB of features (48k images x 2 views x 512-d fp16) opened memory-mapped; six batches
    of 16 rows allocate about a batch, not the features (a copy of the cache, or a read of every
    row, would show here). The file pages a read maps (``RssFile``; on recent kernels up to a
    few MB around each row) are page cache, shared and reclaimable: not counted here."""
    fs = mapped_set(tmp_path / "features.npy", 48_000, 1, 512)
    assert isinstance(fs.features, np.memmap)
    pool = np.arange(48_000)
    streams = [TrainStream([Source(0, pool, features=fs)], [16], seed=1, stream_id=i, with_labels=True)
               for i in range(2)]
    next(streams[0].iterate(100, 101))  # torch's first-call set-up, not counted
    anon_kb = _kb("RssAnon")
    batches = [b for s in streams for b in s.iterate(0, 3)]
    grown = (_kb("RssAnon") - anon_kb) / 1024
    assert all(b["features"].shape == (16, 512) for b in batches)
    assert grown < 12, f"{grown:.1f} MB allocated by 6 batches of 16 rows of a 96 MB cache"

"""Batches for training and evaluation, from the feature cache or from images.

Training streams yield the batch of each step (see :mod:`vlda.engine.sampling`). In a
data-parallel run of ``W`` processes the global batch of a step is the one a single process
draws; each source's part of it is cut into ``W`` contiguous slices and rank ``r`` reads only
slice ``r`` (:func:`vlda.distributed.shard_range`; each part must divide by ``W``). With the cache,
a batch is a gather from a memory-mapped array (one random augmented view per sample), without
it, images are decoded and augmented (optionally in DataLoader workers) with per-item seeds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from vlda import distributed as D
from vlda.data.dataset import BadImageLog, ImageDataset, collate
from vlda.data.feature_cache import FeatureSet
from vlda.engine.sampling import step_positions, step_seeds


@dataclass(eq=False)  # compared by identity (a numpy pool has no truth value)
class Source:
    """One domain's data for a stream: cached features or an image dataset, restricted to
    ``pool`` (positions of usable samples)."""

    domain_index: int
    pool: np.ndarray
    features: FeatureSet | None = None
    dataset: ImageDataset | None = None

    def __post_init__(self) -> None:
        if (self.features is None) == (self.dataset is None):
            raise ValueError("a Source holds either cached features or an image dataset")

    @property
    def feature_set(self) -> FeatureSet:
        if self.features is None:
            raise TypeError("this source reads images, not cached features")
        return self.features

    @property
    def image_dataset(self) -> ImageDataset:
        if self.dataset is None:
            raise TypeError("this source reads cached features, not images")
        return self.dataset

    @property
    def labels(self) -> torch.Tensor:
        if self.features is not None:
            return self.features.labels
        return torch.tensor([label for _, label in self.image_dataset.samples])


class TrainStream:
    """Batches for steps ``start..end-1`` drawn from one or more sources, balanced across them."""

    def __init__(
        self,
        sources: Sequence[Source],
        sizes: Sequence[int],
        seed: int,
        stream_id: int,
        with_labels: bool,
        num_workers: int = 0,
        bad_log: BadImageLog | None = None,
    ) -> None:
        self.sources = list(sources)
        self.sizes = list(sizes)
        self.seed = seed
        self.stream_id = stream_id
        self.with_labels = with_labels
        self.num_workers = num_workers
        self.bad_log = bad_log
        self.cached = all(s.features is not None for s in self.sources)
        self.rank, self.world = D.rank(), D.world_size()
        for size in self.sizes:
            if size % self.world:
                raise ValueError(
                    f"a step takes {size} images from a domain, which does not divide among "
                    f"{self.world} processes; choose a batch size whose per-domain parts are "
                    f"multiples of {self.world}"
                )

    def _draw(self, step: int) -> list[tuple[Source, np.ndarray, np.ndarray]]:
        out = []
        for i, (src, size) in enumerate(zip(self.sources, self.sizes, strict=True)):
            sid = self.stream_id * 100 + i
            pos = step_positions(len(src.pool), size, self.seed, sid, step)
            mine = D.shard_range(size, self.rank, self.world)
            seeds = step_seeds(size, self.seed, sid, step)[mine.start : mine.stop]
            out.append((src, src.pool[pos[mine.start : mine.stop]], seeds))
        return out

    def _cached_batch(self, step: int) -> dict[str, torch.Tensor]:
        feats, labels, domains = [], [], []
        for src, idx, seeds in self._draw(step):
            fs = src.feature_set
            k = fs.n_views
            views = torch.from_numpy(seeds % k + 1) if k > 0 else 0
            index = torch.from_numpy(idx)
            feats.append(fs.gather(index, views))
            labels.append(fs.labels[index])
            domains.append(torch.full((len(idx),), src.domain_index, dtype=torch.long))
        batch = {"features": torch.cat(feats), "domains": torch.cat(domains)}
        if self.with_labels:
            batch["labels"] = torch.cat(labels)
        return batch

    def iterate(self, start: int, end: int) -> Iterator[dict[str, torch.Tensor]]:
        if self.cached:
            for step in range(start, end):
                yield self._cached_batch(step)
            return
        yield from self._image_batches(start, end)

    def _image_batches(self, start: int, end: int) -> Iterator[dict[str, torch.Tensor]]:
        # One loader per source, each fed the keys of every step by a batch sampler.
        loaders = []
        for i, src in enumerate(self.sources):
            keys = _StepKeys(self, i, start, end)
            loaders.append(
                iter(
                    DataLoader(
                        src.image_dataset, batch_sampler=keys, collate_fn=collate,
                        num_workers=self.num_workers, persistent_workers=False,
                    )
                )
            )
        for _ in range(start, end):
            images, labels, domains = [], [], []
            for src, loader in zip(self.sources, loaders, strict=True):
                part = next(loader)
                if self.bad_log is not None:
                    self.bad_log.update(part["bad_paths"])
                images.append(part["images"])
                labels.append(part["labels"])
                domains.append(torch.full((len(part["labels"]),), src.domain_index, dtype=torch.long))
            batch = {"images": torch.cat(images), "domains": torch.cat(domains)}
            if self.with_labels:
                batch["labels"] = torch.cat(labels)
            yield batch


class _StepKeys:
    """Batch sampler: for each step, the (index, augmentation seed) keys of one source."""

    def __init__(self, stream: TrainStream, source: int, start: int, end: int) -> None:
        self.stream, self.source, self.start, self.end = stream, source, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            _, idx, seeds = self.stream._draw(step)[self.source]
            yield [(int(i), int(s)) for i, s in zip(idx, seeds, strict=True)]


def eval_batches(
    source: Source, batch_size: int, num_workers: int = 0, bad_log: BadImageLog | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Un-augmented batches over the whole pool (view 0 of the cache, or the eval transform)."""
    pool = source.pool
    if source.features is not None:
        for i in range(0, len(pool), batch_size):
            index = torch.from_numpy(pool[i : i + batch_size])
            yield {"features": source.features.gather(index, 0), "labels": source.features.labels[index]}
        return
    chunks = [pool[i : i + batch_size].tolist() for i in range(0, len(pool), batch_size)]
    loader = DataLoader(
        source.image_dataset, batch_sampler=chunks, collate_fn=collate, num_workers=num_workers
    )
    for part in loader:
        if bad_log is not None:
            bad_log.update(part["bad_paths"])
        if len(part["labels"]):
            yield {"images": part["images"], "labels": part["labels"]}

"""The feature cache of a data-parallel run: built once, each process encoding its share.

:func:`build_or_load_features_sharded` is :func:`~vlda.data.feature_cache.build_or_load_features`
for every process of a ``torchrun`` group (and that function itself in one process). Rank 0 looks
the set up; when it must be built, every process encodes the contiguous shard
:func:`vlda.distributed.shard_range` ``(N)`` of the images into ``part-<rank>/`` of rank 0's
build directory (view seeds use each image's position in the whole list, so the features are
those one process computes), rank 0 assembles the parts into one ``features.npy`` /
``valid.npy``, writes ``meta.json`` and moves the set into place; then every process loads it.
The cache directory must be on a file system that every process sees (one machine, or a shared
file system across machines).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlda import distributed as D
from vlda.data.dataset import BadImageError
from vlda.data.encoder import ImageEncoder
from vlda.data.feature_cache import (
    FEATURES_FILE,
    VALID_FILE,
    FeatureSet,
    Sample,
    _build,
    build_or_load_features,
    reserve_space,
)
from vlda.data.transforms import Transform


def build_or_load_features_sharded(
    backbone: ImageEncoder, samples: Sequence[Sample], **kwargs: Any
) -> FeatureSet:
    """:func:`~vlda.data.feature_cache.build_or_load_features` (same arguments), built by
    every process of the group, each encoding ``samples[shard_range(N)]``; the same
    :class:`FeatureSet` is returned on every process."""
    if not D.initialised():
        return build_or_load_features(backbone, samples, **kwargs)
    if D.is_main():
        built: list[bool] = []

        def share(*args: Any) -> tuple[int, list[str], int]:
            built.append(True)
            # the build's arguments after (backbone, samples), the build directory last, exactly
            # as build_or_load_features passed them, to the other processes
            D.broadcast_object(args[2:])
            return _encode_share(*args)

        fs = build_or_load_features(backbone, samples, builder=share, **kwargs)
        if not built:
            D.broadcast_object(None)  # found in the cache: nothing to encode
        D.barrier()  # the set is in place before the other processes load it
        return fs
    rest = D.broadcast_object(None)
    if rest is not None:
        _encode_share(backbone, samples, *rest)
    D.barrier()
    return build_or_load_features(backbone, samples, **kwargs)


def _encode_share(
    backbone: ImageEncoder,
    samples: Sequence[Sample],
    eval_transform: Transform,
    train_transform: Transform | None,
    n_views: int,
    seed: int,
    batch_size: int,
    num_workers: int,
    progress: bool,
    strict: bool,
    out_dir: Path,
) -> tuple[int, list[str], int]:
    """Encode this process's shard into ``out_dir/part-<rank>``; rank 0 then assembles every
    part into ``out_dir`` -> (number of bad images, their paths in order, D)."""
    n, mine = len(samples), D.shard_range(len(samples))
    part = Path(out_dir) / f"part-{D.rank()}"
    part.mkdir(parents=True, exist_ok=True)
    err: str | None = None
    result: tuple[int, list[str], int] = (0, [], int(backbone.embed_dim))
    if len(mine):
        try:
            result = _build(
                backbone, samples[mine.start : mine.stop], eval_transform, train_transform, n_views,
                seed, batch_size, num_workers, progress and D.is_main(), strict, part, first=mine.start,
            )
        except BadImageError as e:  # strict: every process raises it, none waits for the others
            err = str(e)
    shares = D.gather_objects((err, *result))
    errors = [s[0] for s in shares if s[0]]
    if errors:
        raise BadImageError(errors[0])
    if not D.is_main():
        return result
    d = int(shares[0][3])
    _assemble(Path(out_dir), n, n_views, d)
    return sum(int(s[1]) for s in shares), [p for s in shares for p in s[2]], d


def _assemble(out_dir: Path, n: int, n_views: int, d: int) -> None:
    """``out_dir/features.npy`` and ``valid.npy`` from the parts, in rank order; parts removed."""
    feats = np.lib.format.open_memmap(out_dir / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(n, 1 + n_views, d))
    reserve_space(out_dir / FEATURES_FILE)
    valid = np.ones(n, dtype=bool)
    for r in range(D.world_size()):
        rows, part = D.shard_range(n, r), out_dir / f"part-{r}"
        if len(rows):
            feats[rows.start : rows.stop] = np.load(part / FEATURES_FILE, mmap_mode="r")
            valid[rows.start : rows.stop] = np.load(part / VALID_FILE)
        shutil.rmtree(part, ignore_errors=True)
    feats.flush()
    del feats
    np.save(out_dir / VALID_FILE, valid)

"""Frozen image features, computed once and memory-mapped (DESIGN.md: "What is frozen is
computed once").

Prompt learning (CoOp, DAPL, PGA) never changes the image encoder, so its output for an image
under a given transform is a constant. :func:`build_or_load_features` encodes every image once
with the eval transform (view 0) and ``K`` times with the train transform (views ``1..K``, each
with its own fixed random seed) and stores the result as one fp16 array ``[N, 1 + K, D]`` under
``cache_dir/<key>/``. Training then draws a view per sample and never runs the image encoder.

The key (:func:`cache_key`) is a sha256 over everything the features depend on: the backbone's
fingerprint (architecture + weights), both transforms' fingerprints, ``K``, the seed, and the
file list (path, size and mtime of every file, in order; a missing file counts too). Anything
changed -> another key -> another directory, built afresh; nothing is ever updated in place.

Layout of ``cache_dir/<key>/``::

    features.npy   fp16 [N, 1 + K, D]   (np.load(..., mmap_mode="r"))
    valid.npy      bool [N]              False: unreadable image, its rows are zeros
    paths.txt      one path per line (for people; the key already covers the list)
    meta.json      key parts, N, K, D, dtype, bad images, build time, and the sha256 of each
                   of the three files above

Every load checks the three files against the sha256 sums in ``meta.json`` (1-2 s per GB
on one core): a set damaged on disk (a flipped byte, a truncated or overwritten file, a missing
file, an unreadable ``meta.json``) is never used; it is deleted and rebuilt, with a warning on
the ``vlda`` logger naming what was wrong.

A build writes into ``cache_dir/.tmp-<key>-<random>/`` and is moved into place with one
``os.replace`` when complete, so a build that is killed half-way leaves no directory that a
later run would trust (at most a ``.tmp-*`` directory, which is never read and safe to delete).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vlda.data.dataset import BadImageError, ImageDataset
from vlda.data.encoder import ImageEncoder
from vlda.data.heartbeat import Heartbeat
from vlda.data.transforms import Transform, fingerprint
from vlda.files import make_temp_dir

# 2: meta.json holds the sha256 of every file (format 1 sets had none; their keys differ, so they
# are rebuilt once and the old directories are left for clear_cache).
FORMAT_VERSION = 2
FEATURES_FILE = "features.npy"
VALID_FILE = "valid.npy"
PATHS_FILE = "paths.txt"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
CHECKED_FILES = (FEATURES_FILE, VALID_FILE, PATHS_FILE)  # their sha256 sums are in meta.json
_SHOW_BAD = 5  # how many unreadable paths a warning names
_CHUNK = 1 << 22  # bytes hashed at a time

log = logging.getLogger("vlda")

Sample = tuple[str | os.PathLike[str], int]


@dataclass
class FeatureSet:
    """Cached frozen image features of ``N`` images, ``1 + K`` views each.

    Attributes:
        features: fp16 ``[N, 1 + K, D]``, memory-mapped (read-only) when loaded from disk. View 0
            is the un-augmented image (eval transform), views ``1..K`` augmented (train transform).
            Unnormalised, as ``backbone.encode_image`` returns them.
        labels: ``[N]`` int64 labels, from the samples the set was requested for.
        valid: ``[N]`` bool; False for images that could not be read (their rows are zeros).
        paths: the ``N`` image paths, in row order: for a set loaded from disk a
            :class:`PathsFile` (read from ``paths.txt`` when iterated, not held in memory).
        key: the cache key (:func:`cache_key`), also the directory name.
        directory: where the set lives on disk (``None`` for an in-memory set).
        meta: the contents of ``meta.json``.
    """

    features: np.ndarray
    labels: Tensor
    valid: Tensor
    paths: Sequence[str]
    key: str
    directory: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_views(self) -> int:
        """``K``, the number of augmented views (view 0, the clean one, not counted)."""
        return int(self.features.shape[1]) - 1

    @property
    def dim(self) -> int:
        """``D``, the feature dimension."""
        return int(self.features.shape[2])

    def gather(
        self, indices: Tensor, views: Tensor | int = 0, device: torch.device | str | None = None
    ) -> Tensor:
        """Features of some rows as float32 ``[B, D]``.

        Args:
            indices: ``[B]`` row (image) indices.
            views: ``[B]`` view index per sample, or one int for all; 0 = clean, ``1..K`` =
                augmented.
            device: where to put the result (default: CPU).
        """
        idx = torch.as_tensor(indices).detach().to("cpu", torch.long).reshape(-1).numpy()
        if isinstance(views, int):
            if not 0 <= views <= self.n_views:
                raise IndexError(f"view {views} out of range [0, {self.n_views}]")
            rows = self.features[idx, views]
        else:
            v = torch.as_tensor(views).detach().to("cpu", torch.long).reshape(-1).numpy()
            if v.shape != idx.shape:
                raise ValueError(f"views {v.shape} and indices {idx.shape} must have the same shape")
            if v.size and (v.min() < 0 or v.max() > self.n_views):
                raise IndexError(f"views must lie in [0, {self.n_views}]")
            rows = self.features[idx, v]
        out = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        return out if device is None else out.to(device, non_blocking=True)

    def random_views(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One uniformly drawn augmented view ``1..K`` per index (``[B]``; all 0 when ``K = 0``)."""
        n = torch.as_tensor(indices).numel()
        if self.n_views == 0:
            return torch.zeros(n, dtype=torch.long)
        return torch.randint(1, self.n_views + 1, (n,), generator=generator)


class PathsFile(Sequence[str]):
    """The image paths of a cached set, one per row, read from its ``paths.txt`` (checked
    against its sha256 when the set was loaded) each time they are asked for. They are only
    needed to name unreadable images, so a training process does not hold a Python string per
    image (DomainNet: 600k paths, about 70 MB for the whole run). The paths are as written
    when the set was built (the key covers their absolute form, sizes and times)."""

    def __init__(self, file: Path, n: int) -> None:
        self.file, self.n = Path(file), int(n)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[str]:
        with open(self.file) as f:  # the encoding paths.txt was written with (Path.write_text)
            for line in f:
                yield line[:-1] if line.endswith("\n") else line

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return list(self)[index]

    def __repr__(self) -> str:
        return f"PathsFile({str(self.file)!r}, n={self.n})"


# -- the key ---------------------------------------------------------------------------------


def view_seed(seed: int, index: int, view: int) -> int:
    """The random seed of augmented view ``view`` of image ``index``: a fixed function of
    ``(seed, index, view)``, so every rebuild draws the same crops and flips."""
    return int(np.random.SeedSequence((int(seed), int(index), int(view))).generate_state(1)[0])


def files_digest(paths: Sequence[str | os.PathLike[str]]) -> str:
    """sha256 over ``(absolute path, size, mtime)`` of every file, in order (missing ones too)."""
    h = hashlib.sha256()
    for p in paths:
        path = os.path.abspath(os.fspath(p))
        try:
            st = os.stat(path)
            h.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\tmissing\n".encode())
    return h.hexdigest()


def _transform_id(transform: Transform | None) -> str:
    return "none" if transform is None else fingerprint(transform)


def key_parts(
    backbone: ImageEncoder,
    samples: Sequence[Sample],
    eval_tf: Transform,
    train_tf: Transform | None,
    n_views: int,
    seed: int,
) -> dict[str, Any]:
    """What :func:`cache_key` hashes, as a dict (stored in ``meta.json``)."""
    return {
        "format": FORMAT_VERSION,
        "backbone": backbone.fingerprint,
        "backbone_name": getattr(backbone, "name", type(backbone).__name__),
        "eval_transform": _transform_id(eval_tf),
        "train_transform": _transform_id(train_tf) if n_views > 0 else "none",
        "n_views": int(n_views),
        "seed": int(seed),
        "n_images": len(samples),
        "files": files_digest([p for p, _ in samples]),
    }


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_key(
    backbone: ImageEncoder,
    samples: Sequence[Sample],
    eval_tf: Transform,
    train_tf: Transform | None,
    n_views: int,
    seed: int,
) -> str:
    """sha256 (hex) over the backbone fingerprint, the transforms' fingerprints, ``n_views``,
    ``seed`` and the file list (path, size, mtime of each file; missing files count too).

    Labels are not part of the key: they do not change the features, and :class:`FeatureSet`
    takes them from the samples on every call.
    """
    return _digest(key_parts(backbone, samples, eval_tf, train_tf, n_views, seed))


# -- building --------------------------------------------------------------------------------


class _Views(torch.utils.data.Dataset):
    """Key ``(i, v)`` -> image ``i`` under view ``v`` (0: eval transform, else train transform
    with the seed :func:`view_seed` ``(seed, first + i, v)``; ``first``: the position of image 0
    in the whole list, when this is one process's shard of it)."""

    def __init__(self, eval_ds: Any, train_ds: Any, seed: int, first: int = 0) -> None:
        self.eval_ds, self.train_ds, self.seed, self.first = eval_ds, train_ds, seed, first

    def __len__(self) -> int:
        return len(self.eval_ds)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, Tensor | None, str]:
        i, v = key
        item = self.eval_ds[i] if v == 0 else self.train_ds[(i, view_seed(self.seed, self.first + i, v))]
        return i, v, item["image"], str(item["path"])


def _collate_views(batch: list[tuple[int, int, Tensor | None, str]]) -> dict[str, Any]:
    good = [(i, v, image) for i, v, image, _ in batch if image is not None]
    return {
        "images": torch.stack([b[2] for b in good]) if good else None,
        "indices": torch.tensor([b[0] for b in good], dtype=torch.long),
        "views": torch.tensor([b[1] for b in good], dtype=torch.long),
        "bad": [(b[0], b[3]) for b in batch if b[2] is None],
    }


def _batches(n: int, n_views: int, batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Keys ``(i, v)`` image-major (all views of an image together: the file is read from the
    page cache after the first view), in batches."""
    batch: list[tuple[int, int]] = []
    for i in range(n):
        for v in range(1 + n_views):
            batch.append((i, v))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


class _BatchKeys:
    def __init__(self, n: int, n_views: int, batch_size: int) -> None:
        self.n, self.n_views, self.batch_size = n, n_views, batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return _batches(self.n, self.n_views, self.batch_size)

    def __len__(self) -> int:
        return -(-self.n * (1 + self.n_views) // self.batch_size)


def _bad_message(n_bad: int, n: int, bad_paths: list[str]) -> str:
    shown = ", ".join(bad_paths[:_SHOW_BAD]) + (", ..." if n_bad > _SHOW_BAD else "")
    return f"{n_bad} of {n} images could not be read: {shown}"


def reserve_space(path: Path) -> None:
    """Allocate the disk blocks of ``path`` now (``posix_fallocate``), so that a full disk is an
    ``OSError`` naming the file here, not a ``SIGBUS`` that kills the process when a write
    through the memory map finds no space. No-op where the call does not exist."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # not supported by this file system
                return
            raise OSError(err.errno, err.strerror, str(path)) from err


def _build(
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
    first: int = 0,
) -> tuple[int, list[str], int]:
    """Encode everything into ``out_dir`` -> (number of bad images, their paths, D).
    ``first``: position of ``samples[0]`` in the whole list (a shard's offset; view seeds)."""
    n, d = len(samples), int(backbone.embed_dim)
    sample_list = [(Path(p), int(y)) for p, y in samples]
    # strict is handled here (one error naming every bad file so far), not by the dataset.
    eval_ds = ImageDataset(sample_list, eval_transform, strict=False)
    train_ds: ImageDataset | None = None
    if n_views:
        if train_transform is None:  # build_feature_cache checks this first
            raise ValueError("n_views > 0 needs a train_transform for the augmented views")
        train_ds = ImageDataset(sample_list, train_transform, strict=False)
    device = backbone.device
    loader = DataLoader(
        _Views(eval_ds, train_ds, seed, first),
        batch_sampler=_BatchKeys(n, n_views, batch_size),
        collate_fn=_collate_views,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    feats = np.lib.format.open_memmap(
        out_dir / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(n, 1 + n_views, d)
    )
    reserve_space(out_dir / FEATURES_FILE)
    valid = np.ones(n, dtype=bool)
    bad_paths: dict[int, str] = {}
    name = getattr(backbone, "name", type(backbone).__name__)
    bar = tqdm(
        total=n * (1 + n_views),
        unit="img",
        desc=f"Caching {name} image features ({n} images x {1 + n_views} views)",
        disable=not progress,
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    beat = Heartbeat(f"feature cache of {n} images x {1 + n_views} views ({name})", n * (1 + n_views), not progress)
    beat.start(f"in {out_dir.parent}")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), autocast:
            for batch in loader:
                for i, path in batch["bad"]:
                    bad_paths.setdefault(i, path)
                if strict and bad_paths:
                    raise BadImageError(
                        _bad_message(len(bad_paths), n, list(bad_paths.values()))
                        + " (strict=True)"
                    )
                if batch["images"] is not None:
                    images = batch["images"].to(device, non_blocking=True)
                    out = backbone.encode_image(images).float()
                    if out.shape[-1] != d:
                        raise ValueError(
                            f"encode_image gave {out.shape[-1]}-d features, "
                            f"backbone.embed_dim is {d}"
                        )
                    feats[batch["indices"].numpy(), batch["views"].numpy()] = (
                        out.cpu().numpy().astype(np.float16)
                    )
                bar.update(len(batch["indices"]) + len(batch["bad"]))
                beat.update(len(batch["indices"]) + len(batch["bad"]))
    finally:
        bar.close()
        backbone.train(was_training)
    beat.end(f"{len(bad_paths)} unreadable" if bad_paths else "")
    for i in bad_paths:
        valid[i] = False
        feats[i] = 0
    feats.flush()
    del feats
    np.save(out_dir / VALID_FILE, valid)
    bad_sorted = [bad_paths[i] for i in sorted(bad_paths)]
    return len(bad_paths), bad_sorted, d


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _checksums(directory: Path) -> dict[str, str]:
    return {name: file_sha256(directory / name) for name in CHECKED_FILES}


def _verify(directory: Path, meta: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first file whose sha256 differs from ``meta.json``'s."""
    want = meta.get("sha256")
    if not isinstance(want, dict) or set(want) != set(CHECKED_FILES):
        raise ValueError("meta.json has no checksums")
    for name in CHECKED_FILES:
        if file_sha256(directory / name) != want[name]:
            raise ValueError(f"{name} does not match its checksum")


def _load(
    directory: Path, key: str, n: int, n_views: int, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Open a complete cache directory, its files checked against their sha256 sums (unless
    ``verify`` is False: a set this process has just built); raises ``ValueError``/``OSError``
    if it is not a complete, undamaged set of ``key``."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except ValueError:
        raise ValueError("meta.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise ValueError(f"meta.json is not for key {key}")
    if verify:
        _verify(directory, meta)
    feats = np.load(directory / FEATURES_FILE, mmap_mode="r")
    valid = np.load(directory / VALID_FILE)
    if feats.dtype != np.float16 or feats.shape[:2] != (n, 1 + n_views) or valid.shape != (n,):
        raise ValueError(f"arrays {feats.shape} {feats.dtype} do not match the key")
    return feats, valid, meta


def _feature_set(
    feats: np.ndarray, valid: np.ndarray, samples: Sequence[Sample], key: str, directory: Path,
    meta: dict,
) -> FeatureSet:
    return FeatureSet(
        features=feats,
        labels=torch.tensor([int(y) for _, y in samples], dtype=torch.long),
        valid=torch.from_numpy(np.array(valid, dtype=bool)),
        paths=PathsFile(directory / PATHS_FILE, len(samples)),
        key=key,
        directory=directory,
        meta=meta,
    )


def build_or_load_features(
    backbone: ImageEncoder,
    samples: Sequence[Sample],
    *,
    eval_transform: Transform,
    train_transform: Transform | None,
    n_views: int,
    cache_dir: Path | str,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    strict: bool = False,
    builder: Callable[..., tuple[int, list[str], int]] | None = None,
) -> FeatureSet:
    """The frozen image features of ``samples``, from ``cache_dir`` or computed and stored there.

    Args:
        backbone: the frozen image encoder (:class:`vlda.data.encoder.ImageEncoder`, e.g. any
            vision-language backbone); its ``encode_image`` is used, on its device.
        samples: ``[(path, label), ...]``, ``N`` images; row ``i`` of the result is sample ``i``.
        eval_transform: makes view 0 (``(PIL image, None) -> [3, H, W]``).
        train_transform: makes views ``1..K`` (``(PIL image, numpy Generator) -> [3, H, W]``);
            may be ``None`` when ``n_views == 0``.
        n_views: ``K``, the number of augmented views per image.
        cache_dir: root of the cache; the set lives in ``cache_dir/<key>/``.
        seed: seed of the augmented views (view ``j`` of image ``i`` uses
            :func:`view_seed` ``(seed, i, j)``).
        batch_size, num_workers: of the encoding pass.
        progress: show a progress bar while building.
        strict: raise :class:`vlda.data.dataset.BadImageError` on an unreadable image instead
            of marking it invalid (nothing is cached then).
        builder: what encodes the images into the build directory (default: this process
            encodes them all; :mod:`vlda.data.feature_cache_shards`: every process its share).

    Returns:
        A :class:`FeatureSet` with fp16 features ``[N, 1 + K, D]`` memory-mapped from disk.
    """
    if n_views < 0:
        raise ValueError(f"n_views must be >= 0, got {n_views}")
    if n_views > 0 and train_transform is None:
        raise ValueError("n_views > 0 needs a train_transform for the augmented views")
    if len(samples) == 0:
        raise ValueError("no samples to cache features for")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cache_dir = Path(cache_dir).expanduser()
    n = len(samples)
    parts = key_parts(backbone, samples, eval_transform, train_transform, n_views, seed)
    key = _digest(parts)
    final = cache_dir / key

    if final.is_dir():
        try:
            feats, valid, meta = _load(final, key, n, n_views)
        except (OSError, ValueError, KeyError) as err:
            # Only complete builds of this key are moved here, so the set was damaged after
            # it was written (disk, a hand edit): drop it and rebuild.
            log.warning("feature cache %s is damaged (%s); rebuilding it", final, err)
            shutil.rmtree(final, ignore_errors=True)
        else:
            if strict and meta.get("n_bad", 0):
                raise BadImageError(
                    _bad_message(meta["n_bad"], n, meta.get("bad_paths", [])) + " (strict=True)"
                )
            if meta.get("n_bad", 0):
                warnings.warn(
                    "cached features: " + _bad_message(meta["n_bad"], n, meta["bad_paths"])
                    + "; they are marked invalid",
                    stacklevel=2,
                )
            return _feature_set(feats, valid, samples, key, final, meta)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(cache_dir, f"{TMP_PREFIX}{key[:16]}-")
    try:
        start = time.perf_counter()
        n_bad, bad_paths, d = (builder or _build)(
            backbone, samples, eval_transform, train_transform, n_views, seed,
            batch_size, num_workers, progress, strict, tmp,
        )
        meta = {
            "key": key,
            "parts": parts,
            "n": n,
            "n_views": n_views,
            "dim": d,
            "dtype": "float16",
            "n_bad": n_bad,
            "bad_paths": bad_paths,
            "build_seconds": round(time.perf_counter() - start, 3),
            "device": str(backbone.device),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
        (tmp / PATHS_FILE).write_text("".join(os.fspath(p) + "\n" for p, _ in samples))
        meta["sha256"] = _checksums(tmp)
        # meta.json last: a directory without it is never a finished build.
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        ours = True
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same key first: use theirs (checked on load).
            if not (final / META_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            ours = False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if n_bad:
        warnings.warn(
            _bad_message(n_bad, n, bad_paths) + "; they are marked invalid (valid=False, zeros)",
            stacklevel=2,
        )
    feats, valid, meta = _load(final, key, n, n_views, verify=not ours)
    return _feature_set(feats, valid, samples, key, final, meta)


def clear_cache(cache_dir: Path | str, keep: Sequence[str] = ()) -> list[Path]:
    """Delete every cached feature set (and leftover ``.tmp-*`` build directories) under
    ``cache_dir`` except the keys in ``keep``; returns what was removed."""
    cache_dir = Path(cache_dir).expanduser()
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    for entry in sorted(cache_dir.iterdir()):
        if not entry.is_dir() or entry.name in keep:
            continue
        if entry.name.startswith(TMP_PREFIX) or (entry / META_FILE).is_file():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed

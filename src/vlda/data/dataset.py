"""A map-style dataset of image files, tolerant of bad images, with seeded augmentation.

``dataset[i]`` or ``dataset[(i, seed)]`` loads image ``i`` and transforms it with
``numpy.random.default_rng(seed)``: the same key always gives the same tensor, in any worker,
so training can be repeated and resumed exactly (a sampler yields ``(index, seed)`` pairs).

Large public datasets contain a few unreadable files. By default such a sample comes back with
``image=None``; :func:`collate` drops it and reports its path, and :class:`BadImageLog` (in the
main process) warns once per file and counts them, so one bad JPEG does not stop a long run
while still being visible. ``strict=True`` raises instead.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vlda.data.decode import load_image
from vlda.data.transforms import Transform

logger = logging.getLogger("vlda.data")

__all__ = [
    "BadImageError", "BadImageLog", "BadImageWarning", "ImageDataset", "collate", "load_image",
    "require_readable",
]


class BadImageError(OSError, ValueError):
    """An image file is missing, unreadable or corrupt (raised in strict mode). Also a
    ``ValueError``: the command line reports it as one sentence (exit code 2)."""


class BadImageWarning(UserWarning):
    """Issued once per unreadable image file by :class:`BadImageLog`."""


class ImageDataset(Dataset):
    """Images and labels from ``samples`` (``(path, label)`` pairs), transformed on access.

    ``dataset[index]`` seeds the augmentation from the index; ``dataset[(index, seed)]`` from
    ``seed`` (an int or a sequence of ints, e.g. ``(epoch, view, index)``). Returns
    ``{"image": Tensor[3,H,W] | None, "label": int, "index": int, "path": str}``; the image is
    ``None`` when the file cannot be read, unless ``strict`` (then :class:`BadImageError`).
    """

    def __init__(
        self, samples: Sequence[tuple[Path, int]], transform: Transform, strict: bool = False
    ):
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple | list):
            index, seed = key
        else:
            index, seed = key, key
        index = int(index)
        if index < 0:
            index += len(self.samples)
        path, label = self.samples[index]
        try:
            img = load_image(path)
        except Exception as err:  # PIL raises many types for corrupt files
            if self.strict:
                raise BadImageError(f"Cannot read image {path}: {err}") from err
            image = None
        else:
            seed = int(seed) if isinstance(seed, int | np.integer) else [int(s) for s in seed]
            image = self.transform(img, np.random.default_rng(seed))
        return {"image": image, "label": int(label), "index": index, "path": str(path)}


def collate(batch: list[dict], image_shape: Sequence[int] | None = None) -> dict:
    """Stack a batch from :class:`ImageDataset`, dropping samples whose image is ``None``.

    Returns ``{"images": [B,3,H,W], "labels": LongTensor[B], "indices": LongTensor[B],
    "paths": list[str], "bad_paths": list[str]}``. An all-bad batch gives ``B = 0``, with
    trailing shape ``image_shape`` when given (use ``functools.partial``), else ``[0,3,0,0]``.
    """
    good = [b for b in batch if b["image"] is not None]
    bad = [b["path"] for b in batch if b["image"] is None]
    if good:
        images = torch.stack([b["image"] for b in good])
    else:
        shape = tuple(image_shape) if image_shape is not None else (3, 0, 0)
        images = torch.empty((0, *shape), dtype=torch.float32)
    return {
        "images": images,
        "labels": torch.tensor([b["label"] for b in good], dtype=torch.long),
        "indices": torch.tensor([b["index"] for b in good], dtype=torch.long),
        "paths": [b["path"] for b in good],
        "bad_paths": bad,
    }


class BadImageLog:
    """Counts and remembers the unreadable images met during a run (main process).

    Feed it each batch (or its ``bad_paths``): ``log.update(batch)``. It warns once per file
    (:class:`BadImageWarning`). ``count`` is the number of distinct bad files, ``skipped`` the
    number of samples dropped in all (a file seen every epoch counts each time).
    """

    def __init__(self) -> None:
        self._paths: dict[str, int] = {}
        self.skipped = 0

    def update(self, bad_paths: Iterable[str] | Mapping) -> None:
        if isinstance(bad_paths, Mapping):
            bad_paths = bad_paths.get("bad_paths", ())
        for p in bad_paths:
            p = str(p)
            self.skipped += 1
            if p not in self._paths:
                self._paths[p] = 0
                warnings.warn(f"Skipping unreadable image {p}", BadImageWarning, stacklevel=2)
            self._paths[p] += 1

    __call__ = update

    @property
    def count(self) -> int:
        return len(self._paths)

    @property
    def paths(self) -> list[str]:
        return list(self._paths)

    def summary(self, limit: int = 10) -> str:
        if not self._paths:
            return "No unreadable images."
        shown = "\n".join(f"  {p}" for p in self.paths[:limit])
        more = f"\n  ... and {self.count - limit} more" if self.count > limit else ""
        return (
            f"{self.count} unreadable image(s) skipped ({self.skipped} sample(s) dropped):\n"
            f"{shown}{more}"
        )

    def state_dict(self) -> dict:
        """For checkpoints, so a resumed run keeps its tally."""
        return {"paths": dict(self._paths), "skipped": self.skipped}

    def load_state_dict(self, state: Mapping) -> None:
        self._paths = dict(state.get("paths", {}))
        self.skipped = int(state.get("skipped", 0))


def require_readable(
    paths: Iterable[Path], setting: str = "data.strict_images", progress: bool = True
) -> None:
    """Decode every image (:func:`vlda.data.check.find_unreadable`; a progress bar for many,
    unless not ``progress``); when some cannot be read, raise one :class:`BadImageError` whose
    first line is one sentence and whose next lines list every unreadable file with its error."""
    from vlda.data.check import find_unreadable

    paths = list(paths)
    logger.info("%s=true: checking that all %d images can be read", setting, len(paths))
    bad = find_unreadable(paths, desc="checking images", progress=progress)
    if bad:
        listed = "\n".join(f"  {p} ({err})" for p, err in bad)
        raise BadImageError(
            f"{len(bad)} image(s) cannot be read and {setting} is true: fix or remove them, or set "
            f"{setting}=false to skip unreadable images:\n{listed}"
        )

"""Image transforms on PIL images, with all randomness drawn from an explicit numpy RNG.

A transform is called as ``transform(image, rng)`` and returns a float tensor ``[3, H, W]``.
Passing the RNG (rather than using torch's or Python's global one) makes an augmented view a
pure function of ``(image, seed)``: a run can be repeated or resumed exactly, whatever the
number of data-loader workers, and the feature cache can store "view k of image i". torchvision
is not used, so its version cannot change the pixels.

Each transform is a small class whose parameters appear in its ``repr``;
:func:`fingerprint` turns that into a stable cache-key string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

Transform = Callable[[Image.Image, np.random.Generator | None], torch.Tensor]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_BICUBIC = Image.Resampling.BICUBIC


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB PIL image -> normalised float32 tensor ``[3, H, W]`` (pixels scaled to [0, 1] first)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic), keeping the aspect ratio.

    The longer side is ``int(size * long / short)``, as in torchvision's ``Resize(int)`` that
    CLIP's preprocessing uses.
    """
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return img.resize((new_w, new_h), _BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size`` x ``size`` square (offsets rounded as in torchvision)."""
    w, h = img.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class _Transform:
    """Base: a transform's identity is its class, version and parameters."""

    version = 1  # bump when the pixels a transform produces change

    def params(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash(repr(self))


class EvalTransform(_Transform):
    """CLIP's test-time preprocessing: RGB, shorter side to ``size`` (bicubic), centre crop,
    normalise. Deterministic: the RNG is ignored."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def params(self) -> dict:
        return {"size": self.size, "mean": self.mean, "std": self.std}

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        img = center_crop(resize_shorter(_to_rgb(img), self.size), self.size)
        return to_tensor(img, self.mean, self.std)


class TrainTransform(_Transform):
    """Random resized crop (area fraction in ``scale``, aspect ratio in ``ratio``, bicubic)
    to ``size`` x ``size``, then an optional horizontal flip, then normalisation.

    Every random draw comes from ``rng``; without one a fresh, unseeded generator is used and
    the result is not reproducible. The crop follows torchvision's ``RandomResizedCrop``: ten
    tries at a box inside the image, then a centre crop with the ratio clamped.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip = bool(flip)

    def params(self) -> dict:
        return {
            "size": self.size,
            "mean": self.mean,
            "std": self.std,
            "scale": self.scale,
            "ratio": self.ratio,
            "flip": self.flip,
        }

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, ...]:
        """``(left, top, right, bottom)`` of a random crop of a ``width`` x ``height`` image."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        img = _to_rgb(img)
        box = self.crop_box(img.width, img.height, rng)
        img = img.resize((self.size, self.size), _BICUBIC, box=box)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(img, self.mean, self.std)


def eval_transform(
    size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> Transform:
    """CLIP preprocessing: RGB, resize shorter side to ``size`` (bicubic), centre crop,
    float tensor ``[3, size, size]``, normalise with ``mean``/``std``."""
    return EvalTransform(size, mean, std)


def train_transform(
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    scale: tuple[float, float] = (0.08, 1.0),
    flip: bool = True,
) -> Transform:
    """Random resized crop (ratio 3/4..4/3, bicubic) + optional horizontal flip, normalised;
    all randomness from the RNG passed at call time."""
    return TrainTransform(size, mean, std, scale=scale, flip=flip)


def fingerprint(transform: Transform) -> str:
    """A stable string naming a transform and its parameters, for cache keys.

    Works for vlda's transforms (and any object with a ``fingerprint()`` method, or with
    ``params()``). Raises ``TypeError`` for a transform it cannot describe (a lambda, say),
    because a cache keyed on ``id()``-style reprs would silently never hit or wrongly hit.
    """
    if hasattr(transform, "fingerprint") and callable(transform.fingerprint):
        return str(transform.fingerprint())
    if hasattr(transform, "params") and callable(transform.params):
        cls = type(transform)
        version = getattr(transform, "version", 0)
        params = transform.params()
        args = ",".join(f"{k}={_stable(params[k])}" for k in sorted(params))
        return f"{cls.__module__}.{cls.__qualname__}/v{version}({args})"
    raise TypeError(
        f"Cannot fingerprint {transform!r}: give it a params() or fingerprint() method so that "
        "cached features can be keyed on it."
    )


def _stable(value: object) -> str:
    if isinstance(value, float):
        return repr(round(value, 10))
    if isinstance(value, list | tuple):
        return "(" + ",".join(_stable(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_stable(value[k])}" for k in sorted(value)) + "}"
    return repr(value)

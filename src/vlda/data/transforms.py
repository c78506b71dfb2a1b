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
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    arr = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
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

    def crop_box(
        self, width: int, height: int, rng: np.random.Generator
    ) -> tuple[int, int, int, int]:
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

    def weak_view(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The random resized crop and flip (the RNG draws: crop box, then flip)."""
        img = _to_rgb(img)
        box = self.crop_box(img.width, img.height, rng)
        img = img.resize((self.size, self.size), _BICUBIC, box=box)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        return to_tensor(self.weak_view(img, rng), self.mean, self.std)


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


# -- strong augmentation (FixMatch) -------------------------------------------------------------

_FILL = (128, 128, 128)
RAND_AUGMENT_OPS = (
    "auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
    "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
    "translate_y",
)


def _rand_augment_op(img: Image.Image, op: str, m: float, sign: float) -> Image.Image:
    """One RandAugment operation at magnitude ``m`` in [0, 1] (timm's level / 10)."""
    from PIL import ImageEnhance, ImageOps

    if op == "auto_contrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "invert":
        return ImageOps.invert(img)
    if op == "rotate":
        return img.rotate(sign * 30.0 * m, resample=Image.Resampling.BILINEAR, fillcolor=_FILL)
    if op == "posterize":
        return ImageOps.posterize(img, 8 - int(4 * m))
    if op == "solarize":
        return ImageOps.solarize(img, int(256 - 256 * m))
    if op == "solarize_add":
        arr = np.asarray(img, dtype=np.int32)
        arr = np.where(arr < 128, np.minimum(arr + int(110 * m), 255), arr)
        return Image.fromarray(arr.astype(np.uint8), img.mode)
    if op in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {
            "color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
            "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness,
        }[op]
        return enhancer(img).enhance(1.0 + sign * 0.9 * m)
    if op in ("shear_x", "shear_y"):
        s = sign * 0.3 * m
        coeffs: tuple[float, ...] = (1, s, 0, 0, 1, 0) if op == "shear_x" else (1, 0, 0, s, 1, 0)
        return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=_FILL)
    if op in ("translate_x", "translate_y"):
        d = sign * 0.45 * m
        coeffs = (1, 0, d * img.width, 0, 1, 0) if op == "translate_x" else (1, 0, 0, 0, 1, d * img.height)
        return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=_FILL)
    raise ValueError(f"unknown RandAugment op {op!r}")


class StrongTransform(TrainTransform):
    """The weak view (random resized crop + flip) followed by RandAugment (Cubuk et al., 2020),
    as FixMatch's strong view and TLlib's ``fixmatch.py`` (timm ``rand-m10-n2-mstd2``).

    ``n_ops`` operations are drawn (with replacement) from :data:`RAND_AUGMENT_OPS`; each is
    applied with probability ``prob``, at magnitude ``N(magnitude, magnitude_std)`` clipped to
    [0, 10] (10 = the strongest: 30° rotation, 0.3 shear, 45% translation, 4-bit posterize,
    ±0.9 enhancement), with a random sign for the signed ones. All draws come from the RNG.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        n_ops: int = 2,
        magnitude: float = 10.0,
        magnitude_std: float = 2.0,
        prob: float = 0.5,
    ):
        super().__init__(size, mean, std, scale=scale, flip=flip)
        self.n_ops = int(n_ops)
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)

    def params(self) -> dict:
        return {
            **super().params(), "n_ops": self.n_ops, "magnitude": self.magnitude,
            "magnitude_std": self.magnitude_std, "prob": self.prob,
        }

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        img = self.weak_view(img, rng)
        for _ in range(self.n_ops):
            op = RAND_AUGMENT_OPS[int(rng.integers(len(RAND_AUGMENT_OPS)))]
            apply = rng.random() < self.prob
            m = float(np.clip(rng.normal(self.magnitude, self.magnitude_std), 0.0, 10.0)) / 10.0
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if apply:
                img = _rand_augment_op(img, op, m, sign)
        return to_tensor(img, self.mean, self.std)


class PairTransform(_Transform):
    """Two views of one image, ``[2, 3, H, W]`` (FixMatch's weak and strong target views); both
    drawn from the same RNG, one after the other."""

    def __init__(self, first: Transform, second: Transform):
        self.first = first
        self.second = second

    def params(self) -> dict:
        return {"first": fingerprint(self.first), "second": fingerprint(self.second)}

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        return torch.stack([self.first(img, rng), self.second(img, rng)])


def _color_jitter(
    img: Image.Image, strength: tuple[float, float, float], rng: np.random.Generator
) -> Image.Image:
    """torchvision's ``ColorJitter(b, c, s, 0)`` on a PIL image, drawn from ``rng``: factors
    ``U[max(0, 1 - x), 1 + x]`` for brightness, contrast and saturation, applied in a random
    order, each with PIL's ``ImageEnhance`` (what torchvision calls for PIL images)."""
    from PIL import ImageEnhance

    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    factors = [float(rng.uniform(max(0.0, 1.0 - x), 1.0 + x)) if x > 0 else None for x in strength]
    for i in rng.permutation(3):
        if factors[i] is not None:
            img = enhancers[i](img).enhance(factors[i])
    return img


class JitterRandAugmentTransform(TrainTransform):
    """The strong view of CMKD + FixMatch (Zhou & Zhou 2024, ``utils/FixMatch.py`` of
    ``Wenlve-Zhou/VLP-UDA``): the weak view's crop and flip, then ``ColorJitter(0.4, 0.4, 0.4,
    0)``, then timm's RandAugment ``rand-n2-m10-mstd0.5`` (translation 45% of the size, fill the
    mean colour, as the official ``ra_params``).

    timm draws from Python's and numpy's global generators; they are seeded from ``rng`` for
    the call and restored afterwards, so the view is still a function of ``(image, rng)``.
    The official strong view centre-crops a 256-pixel resize instead of the weak view's crop.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
        rand_augment: str = "rand-n2-m10-mstd0.5",
    ):
        super().__init__(size, mean, std, scale=scale, flip=flip)
        self.jitter = (float(jitter[0]), float(jitter[1]), float(jitter[2]))
        self.rand_augment = str(rand_augment)
        self._ra: Callable[[Image.Image], Image.Image] | None = None

    def params(self) -> dict:
        return {**super().params(), "jitter": self.jitter, "rand_augment": self.rand_augment}

    def _randaugment(self) -> Callable[[Image.Image], Image.Image]:
        if self._ra is None:
            from timm.data.auto_augment import rand_augment_transform

            hparams = {
                "translate_const": int(self.size * 0.45),
                "img_mean": tuple(min(255, round(255 * m)) for m in self.mean),
            }
            self._ra = rand_augment_transform(self.rand_augment, hparams)
        return self._ra

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        import random

        rng = rng if rng is not None else np.random.default_rng()
        img = self.weak_view(img, rng)
        img = _color_jitter(img, self.jitter, rng)
        ra = self._randaugment()
        seed = int(rng.integers(2**32))
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            img = ra(img)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return to_tensor(img, self.mean, self.std)

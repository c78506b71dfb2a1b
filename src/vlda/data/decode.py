"""Decode an image file faithfully into 8-bit RGB or greyscale (PIL), without torch.

* **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a phone photo stored
  sideways with an orientation tag is read the way it is shown.
* **High bit depth** is *scaled* into 0..255, never clipped (PIL's own ``convert`` clips a
  16-bit image at 255, so a full-range 16-bit gradient would come out 99.6% white):

  - 16-bit modes (``I;16``, ``I;16B``, ...): ``v8 = round(v16 / 257)`` (65535 -> 255, linear);
  - 32-bit integer ``I``: as 16-bit when every value is in 0..65535 (how 16-bit PNG and TIFF
    files are often opened), else min-max scaled over the image;
  - 32-bit float ``F``: ``round(255 · v)`` when every value is in [0, 1], else min-max scaled
    over the image (a constant image keeps its value, clipped to 0..255).

* Every other mode (palette, RGBA, CMYK, LA, ...) goes through ``convert("RGB")``; a mode that
  cannot be converted raises, so the caller counts the file as unreadable.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

__all__ = ["HIGH_BIT_MODES", "decode", "is_high_bit_depth", "load_image", "to_8bit"]

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
HIGH_BIT_MODES = SIXTEEN_BIT_MODES | {"I", "F"}


def is_high_bit_depth(mode: str) -> bool:
    """Whether an image of PIL ``mode`` holds more than 8 bits per pixel (then scaled)."""
    return mode in HIGH_BIT_MODES


def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.clip(values, 0.0, 255.0)
    return (values - lo) * (255.0 / (hi - lo))


def to_8bit(img: Image.Image) -> Image.Image:
    """A high-bit-depth greyscale image scaled into an 8-bit ``L`` image (see the module doc)."""
    values = np.asarray(img)
    if img.mode in SIXTEEN_BIT_MODES:
        scaled = values.astype(np.float64) / 257.0
    elif img.mode == "I":
        in_16 = values.size and values.min() >= 0 and values.max() <= 65535
        scaled = values / 257.0 if in_16 else _min_max(values.astype(np.float64))
    elif img.mode == "F":
        v = values.astype(np.float64)
        if not np.isfinite(v).all():
            raise ValueError("float image with NaN or infinite values")
        in_unit = v.size and v.min() >= 0.0 and v.max() <= 1.0
        scaled = v * 255.0 if in_unit else _min_max(v)
    else:
        raise ValueError(f"mode {img.mode!r} is not a high-bit-depth mode")
    return Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), mode="L")


def decode(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """``(image, mode of the file)``: :func:`load_image`, and the mode the file was stored in
    (e.g. ``I;16``), for reports."""
    with Image.open(path) as opened:
        opened.load()
        img = ImageOps.exif_transpose(opened)
        if img is opened:  # exif_transpose may return the image itself: detach it from the file
            img = opened.copy()
    mode = img.mode
    if mode in ("RGB", "L"):
        return img, mode
    if is_high_bit_depth(mode):
        return to_8bit(img), mode
    return img.convert("RGB"), mode


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image (a truncated file fails here, not in a transform), apply
    its EXIF orientation, and return it as ``RGB`` or ``L`` with 8 bits per channel."""
    return decode(path)[0]

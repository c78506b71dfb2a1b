"""The demo benchmark on disk: inverted digits (source) and faded handwritten digits (target).

``root/inverted/<0..9>/*.png``
    Printed and handwritten digits, all inverted (light ink on black): ``per_class`` renders per
    digit with a few of the fonts matplotlib ships (DejaVu Sans, Serif, Sans Mono and STIX
    General; small random size / position / rotation changes), and a stratified half of
    scikit-learn's ``load_digits`` (896 of the 1,797 UCI optdigits test digits: 8x8 scans, 17
    grey levels, 43 writers), upsampled bicubically to 32x32.
``root/faded/<0..9>/*.png``
    The other half (901), scanned with a one-pixel paper margin around the 8x8 scan, the strokes
    thickened (a 2x2 grey dilation at 32 px), in dark grey ink on grey paper.

Both domains share the handwriting (and its zero-shot errors) but not the style, as Office-Home's
Real World and Clipart share objects: a prompt fitted to the source's labels alone learns its
style (CoOp falls below zero-shot without the printed digits), while domain-specific prompts
(DAPL, PGA) keep the style apart. How this data was chosen: ``docs/demo.md``. Class folders are
named ``"0"``..``"9"``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlda.data.benchmarks import DEMO_DIGITS
from vlda.demo.render import SOURCE_FONTS, StyleConfig, font_dir, render_glyph, style_batch
from vlda.files import make_temp_dir, write_text_atomic

__all__ = [
    "DOMAINS", "IMAGE_SIZE", "build_demo_data", "faded_digits", "handwritten_split", "inverted_digits",
    "rendered_digits", "scan_ink",
]

IMAGE_SIZE = 32
DOMAINS = DEMO_DIGITS.domains  # (source, target)
_MANIFEST = "demo_data.json"
_VERSION = 2
# The target's scan: paper pixels around the 8x8 scan, and the grey levels of paper and ink
# (0 black, 1 white); its strokes are thickened by a 2x2 grey dilation at 32 px.
TARGET_PAD = 1
TARGET_PAPER = 0.65
TARGET_INK = 0.30

# Source renders: clean, only small geometric changes; dark ink on light grey paper.
SOURCE_STYLE = StyleConfig(
    rotate_deg=6.0, p_rotate_big=0.0, shear=0.1, scale=(0.85, 1.1), aspect=(0.9, 1.15),
    shift=0.06, p_elastic=0.0, p_thick=0.0, p_thin=0.0, p_lowres=0.0, p_blur=0.0,
    p_invert=0.0, p_colour=0.0, p_background=0.0, p_noise=0.0, p_low_contrast=0.0,
)


def rendered_digits(per_class: int = 200, seed: int = 0, scan: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` renders per digit in the source fonts, dark ink on light paper, uint8
    ``[N, 32, 32, 3]`` and labels (the source inverts them: :func:`inverted_digits`).

    With ``scan``, each render is scanned as scikit-learn's digits were: area-averaged to
    ``scan x scan`` pixels, quantised to 17 grey levels and upsampled bicubically back to 32 px.
    """
    fonts = [font_dir() / name for name in SOURCE_FONTS if (font_dir() / name).is_file()]
    if not fonts:
        raise RuntimeError(f"none of the source fonts {SOURCE_FONTS} is under {font_dir()}")
    base = {(d, i): render_glyph(d, f) for d in range(10) for i, f in enumerate(fonts)}
    labels = np.repeat(np.arange(10), per_class)
    rng = np.random.default_rng(seed)
    font_idx = rng.integers(len(fonts), size=len(labels))
    ink = torch.from_numpy(np.stack([base[(int(d), int(i))] for d, i in zip(labels, font_idx,
                                                                            strict=True)]))
    gen = torch.Generator().manual_seed(seed)
    images, _ = style_batch(ink[:, None], gen, SOURCE_STYLE, out_size=IMAGE_SIZE)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    if scan:
        arr = np.stack([_scan(img, scan) for img in arr])
    return arr, labels


def _scan(img: np.ndarray, res: int) -> np.ndarray:
    """``[32, 32, 3]`` uint8 -> the same size after an 8x8-style scan (17 grey levels)."""
    grey = Image.fromarray(img).convert("L").resize((res, res), Image.Resampling.BOX)
    levels = np.round(np.asarray(grey, np.float64) * 16 / 255) * 255 / 16
    return _upsample(levels.round().clip(0, 255).astype(np.uint8))


def _upsample(grey: np.ndarray) -> np.ndarray:
    """A small uint8 grey image -> ``[32, 32, 3]`` uint8, bicubic (as scikit-learn's scans are read)."""
    big = Image.fromarray(grey).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(big)[..., None], 3, axis=-1)


@functools.cache
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read once per process: the 8x8 scans ``[1797, 8, 8]`` (0..16) and
    their labels, both read-only (both halves and the split read them)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    data.images.flags.writeable = False
    data.target.flags.writeable = False
    return data.images, data.target


def handwritten_split(seed: int = 0) -> np.ndarray:
    """Which of scikit-learn's 1,797 digits go to the source: a boolean mask, per class the
    first half (rounded down) of a ``default_rng(seed)`` permutation of that class's indices."""
    labels = _sklearn_digits()[1]
    rng = np.random.default_rng(seed)
    source = np.zeros(len(labels), bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        source[rng.permutation(idx)[: len(idx) // 2]] = True
    return source


def scan_ink(scan: np.ndarray, pad: int = 0) -> np.ndarray:
    """An 8x8 scan (values 0..16, 16 = ink) -> ink coverage ``[32, 32]`` float in [0, 1].

    The scan is written as dark ink on white (``255 - round(v * 255 / 16)``), ``pad`` white pixels
    are added around it, and it is upsampled bicubically to 32x32; ink = 1 - grey / 255.
    """
    grey = (255 - np.round(scan * 255 / 16)).clip(0, 255).astype(np.uint8)
    if pad:
        grey = np.pad(grey, pad, constant_values=255)
    return 1 - _upsample(grey)[..., 0].astype(np.float64) / 255


def _dilate2(ink: np.ndarray) -> np.ndarray:
    """Grey dilation with a 2x2 window: ``out[i, j] = max(ink[i:i+2, j:j+2])``, the last row and
    column repeated at the border (``scipy.ndimage.grey_dilation(ink, size=2)``)."""
    p = np.pad(ink, ((0, 1), (0, 1)), mode="edge")
    return np.maximum.reduce([p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]])


def _paint(ink: np.ndarray, paper: float, pen: float) -> np.ndarray:
    """Ink coverage ``[32, 32]`` -> grey uint8 ``[32, 32, 3]``: ``paper * (1 - ink) + pen * ink``."""
    grey = (np.clip(paper * (1 - ink) + pen * ink, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _handwritten_half(source: bool, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 scans and labels of one half of scikit-learn's digits, in rounds of one digit per
    class (each class in scikit-learn's order), so that the first ``limit`` are balanced."""
    images, target = _sklearn_digits()
    mask = handwritten_split() == source
    scans, labels = images[mask], target[mask].astype(np.int64)
    rank = np.zeros(len(labels), np.int64)
    for c in range(10):
        rank[labels == c] = np.arange(int((labels == c).sum()))
    order = np.lexsort((labels, rank))[:limit]
    return scans[order], labels[order]


def inverted_digits(per_class: int = 100, seed: int = 0, limit: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The source domain, uint8 ``[N, 32, 32, 3]`` and labels: ``per_class`` renders per digit
    (:func:`rendered_digits`), then the source half of the handwritten digits (the first
    ``limit``; ``None``: all 896), all inverted (``255 - x``)."""
    renders, render_y = rendered_digits(per_class, seed)
    scans, scan_y = _handwritten_half(True, limit)
    hand = np.stack([_paint(scan_ink(s), 0.0, 1.0) for s in scans])
    return np.concatenate([255 - renders, hand]), np.concatenate([render_y, scan_y])


def faded_digits(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The target domain, uint8 ``[N, 32, 32, 3]`` and labels: the other half of the handwritten
    digits (the first ``limit``; ``None``: all 901), scanned with a :data:`TARGET_PAD` margin,
    thickened (a 2x2 grey dilation) and painted in :data:`TARGET_INK` on
    :data:`TARGET_PAPER`."""
    scans, labels = _handwritten_half(False, limit)
    out = [_paint(_dilate2(scan_ink(s, TARGET_PAD)), TARGET_PAPER, TARGET_INK) for s in scans]
    return np.stack(out), labels


def _write_domain(dest: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a class-folder tree to a temporary sibling of ``dest``, then rename it."""
    tmp = make_temp_dir(dest.parent, f".{dest.name}.")
    try:
        for c in range(10):
            (tmp / str(c)).mkdir()
        counts = [0] * 10
        for img, y in zip(images, labels, strict=True):
            Image.fromarray(img).save(tmp / str(int(y)) / f"{counts[int(y)]:04d}.png")
            counts[int(y)] += 1
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(per_class: int, handwritten_limit: int | None, seed: int) -> dict:
    return {"version": _VERSION, "seed": seed, "per_class": per_class,
            "handwritten_limit": handwritten_limit, "image_size": IMAGE_SIZE}


def build_demo_data(
    root: Path, seed: int = 0, per_class: int = 100, handwritten_limit: int | None = None
) -> Path:
    """Write the demo benchmark under ``root`` (both domains) and return ``root``.

    Idempotent: when ``root`` already holds a complete tree built with the same settings, nothing
    is done. Deterministic in ``seed``. Each domain folder appears atomically (written to a
    temporary folder, then renamed), and a manifest is written last.

    Args:
        root: the benchmark folder (created if needed).
        seed: seed of the source renders.
        per_class: source renders per class.
        handwritten_limit: keep only the first ``handwritten_limit`` digits of each half of the
            handwritten digits (tests); ``None`` keeps all (896 source, 901 target).
    """
    root = Path(root)
    manifest = _manifest(per_class, handwritten_limit, seed)
    mpath = root / _MANIFEST
    if mpath.is_file():
        try:
            if json.loads(mpath.read_text()) == manifest and all(
                (root / d).is_dir() for d in DOMAINS
            ):
                return root
        except (OSError, ValueError):
            pass
    root.mkdir(parents=True, exist_ok=True)
    if mpath.exists():
        mpath.unlink()
    source, target = DOMAINS
    _write_domain(root / source, *inverted_digits(per_class, seed, handwritten_limit))
    _write_domain(root / target, *faded_digits(handwritten_limit))
    write_text_atomic(json.dumps(manifest, indent=1), mpath)
    return root

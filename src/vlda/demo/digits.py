"""The demo benchmark on disk: rendered digits (source) and real handwritten digits (target).

``root/rendered/<0..9>/*.png``
    Digits rendered with a few of the fonts matplotlib ships (DejaVu Sans, Serif, Sans Mono and
    STIX General), dark ink on light paper, small random size / position / rotation changes.
``root/handwritten/<0..9>/*.png``
    All 1,797 handwritten digits of scikit-learn's ``load_digits`` (the UCI optdigits test set:
    8x8 images, 17 grey levels, 43 writers), dark ink on white, upsampled bicubically to 32x32.

The shift is synthetic -> real, like VisDA and S2RDA. Class folders are named ``"0"``..``"9"``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlda.demo.render import SOURCE_FONTS, StyleConfig, font_dir, render_glyph, style_batch
from vlda.files import write_text_atomic

__all__ = ["DOMAINS", "IMAGE_SIZE", "build_demo_data", "handwritten_digits", "rendered_digits"]

IMAGE_SIZE = 32
DOMAINS = ("rendered", "handwritten")
_MANIFEST = "demo_data.json"
_VERSION = 1

# Source renders: clean, only small geometric changes; dark ink on light grey paper.
SOURCE_STYLE = StyleConfig(
    rotate_deg=6.0, p_rotate_big=0.0, shear=0.1, scale=(0.85, 1.1), aspect=(0.9, 1.15),
    shift=0.06, p_elastic=0.0, p_thick=0.0, p_thin=0.0, p_lowres=0.0, p_blur=0.0,
    p_invert=0.0, p_colour=0.0, p_background=0.0, p_noise=0.0, p_low_contrast=0.0,
)


def rendered_digits(per_class: int = 200, seed: int = 0, scan: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The source domain: ``per_class`` renders per digit, uint8 ``[N, 32, 32, 3]`` and labels.

    With ``scan``, each render is scanned as the target was: area-averaged to ``scan x scan``
    pixels, quantised to 17 grey levels and upsampled bicubically back to 32 px.
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
    """A small uint8 grey image -> ``[32, 32, 3]`` uint8, bicubic (how the target was scanned)."""
    big = Image.fromarray(grey).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(big)[..., None], 3, axis=-1)


def handwritten_digits(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The target domain: scikit-learn's handwritten digits, uint8 ``[N, 32, 32, 3]``, labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images, labels = data.images, data.target
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = _upsample((255 - np.round(img * 255 / 16)).clip(0, 255).astype(np.uint8))
    return out, labels.astype(np.int64)


def _write_domain(dest: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a class-folder tree to a temporary sibling of ``dest``, then rename it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
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


def _manifest(per_class: int, target_limit: int | None, seed: int) -> dict:
    return {"version": _VERSION, "seed": seed, "per_class": per_class,
            "target_limit": target_limit, "image_size": IMAGE_SIZE}


def build_demo_data(
    root: Path, seed: int = 0, per_class: int = 200, target_limit: int | None = None
) -> Path:
    """Write the demo benchmark under ``root`` (both domains) and return ``root``.

    Idempotent: when ``root`` already holds a complete tree built with the same settings, nothing
    is done. Deterministic in ``seed``. Each domain folder appears atomically (written to a
    temporary folder, then renamed), and a manifest is written last.

    Args:
        root: the benchmark folder (created if needed).
        seed: seed of the source renders.
        per_class: source images per class.
        target_limit: keep only the first ``target_limit`` handwritten digits (tests); ``None``
            keeps all 1,797.
    """
    root = Path(root)
    manifest = _manifest(per_class, target_limit, seed)
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
    src, src_y = rendered_digits(per_class, seed)
    _write_domain(root / "rendered", src, src_y)
    tgt, tgt_y = handwritten_digits(target_limit)
    _write_domain(root / "handwritten", tgt, tgt_y)
    write_text_atomic(json.dumps(manifest, indent=1), mpath)
    return root

"""Digit images without any dataset: fonts that matplotlib ships, and hand-drawn-like strokes.

Everything here produces *ink maps*: float arrays in ``[0, 1]`` where 1 is ink and 0 is paper,
square, digit centred. Colour, background, resolution and noise are applied afterwards (in
:func:`style_batch`, batched in torch), so one bank of ink maps yields unlimited styled images.

* :func:`digit_fonts` lists the TrueType fonts bundled with matplotlib whose ``0``..``9`` glyphs
  are real digits (DejaVu Sans / Serif / Mono in all weights, STIX General, Computer Modern).
* :func:`render_glyph` draws one digit in one font (optionally with a thicker outline stroke).
* :func:`digit_strokes` / :func:`draw_strokes` draw a digit as jittered pen strokes (polylines
  along a per-digit skeleton, several allographs per digit: open/closed 4, barred 7, ...), a
  "hand-drawn-like" style that no font provides.
* :func:`style_batch` turns a batch of ink maps into RGB images with random geometry (rotation,
  shear, scale, shift, elastic warp), pen width, down-sampling (down to 6x6 and back), blur,
  colours, backgrounds, inversion and noise, and returns, per image, the style words that
  describe what was applied (for the pretraining captions).

Nothing here ever reads scikit-learn's handwritten digits: they are the demo's *target* domain.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.nn import functional as F

from vlda.data.catalog import DIGIT_WORDS

__all__ = [
    "DIGIT_WORDS",
    "SOURCE_FONTS",
    "StyleConfig",
    "digit_fonts",
    "digit_strokes",
    "draw_strokes",
    "fit_ink",
    "font_dir",
    "render_glyph",
    "style_batch",
]


# matplotlib's bundled fonts whose digit code points hold real digits (checked by eye); the rest
# (cmex10, cmsy10, the STIX size/NonUni variants, *Display, LastResort) map 0-9 to other symbols.
_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf", "cmmi10.ttf",
)
# The fonts of the demo's source domain ("rendered"): plain upright faces.
SOURCE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf")


def font_dir() -> Path:
    """The folder of TrueType fonts bundled with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _font_style_words(name: str) -> tuple[str, ...]:
    words = []
    low = name.lower()
    if "bold" in low or "bol" in low or name.startswith("cmb"):
        words.append("bold")
    if any(k in low for k in ("oblique", "italic", "ita", "cmti", "cmmi")):
        words.append("italic")
    if "mono" in low or name.startswith("cmtt"):
        words.append("monospace")
    if "serif" in low or "stix" in low or name.startswith(("cmr", "cmb", "cmti", "cmmi")):
        words.append("serif")
    return tuple(words)


@functools.lru_cache(maxsize=1)
def digit_fonts() -> tuple[Path, ...]:
    """matplotlib's bundled fonts that draw ten distinct, non-empty digit glyphs."""
    found = []
    for name in _FONT_FILES:
        path = font_dir() / name
        if not path.is_file():
            continue
        font = ImageFont.truetype(str(path), 40)
        glyphs = set()
        for digit in range(10):
            mask = font.getmask(str(digit))
            data = bytes(mask)
            if not data or max(data) == 0:
                break
            glyphs.add(data)
        if len(glyphs) == 10:
            found.append(path)
    if not found:
        raise RuntimeError(f"no usable digit fonts found under {font_dir()}")
    return tuple(found)


def font_style_words(path: Path | str) -> tuple[str, ...]:
    """Style words for a font file (``bold``, ``italic``, ``monospace``, ``serif``)."""
    return _font_style_words(Path(path).name)


def fit_ink(ink: np.ndarray, size: int, height: float = 0.8, max_width: float = 0.9) -> np.ndarray:
    """Crop an ink map to its bounding box and paste it centred in a ``size`` square.

    The digit is scaled so that its height is ``height * size`` (or its width
    ``max_width * size``, whichever is smaller); resampling is area-averaging (antialiased).
    """
    ys, xs = np.nonzero(ink > 0.02)
    out = np.zeros((size, size), np.float32)
    if len(ys) == 0:
        return out
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = min(height * size / h, max_width * size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(np.clip(crop * 255, 0, 255).astype(np.uint8))
    img = img.resize((nw, nh), Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(img, np.float32) / 255.0
    return out


def render_glyph(
    digit: int, font: Path | str, size: int = 64, stroke: int = 0, height: float = 0.8
) -> np.ndarray:
    """Ink map (``size`` x ``size``, float in ``[0, 1]``) of ``digit`` drawn in ``font``.

    ``stroke`` thickens the glyph by an outline of that many pixels at 4x ``size``.
    """
    big = 4 * size
    pil_font = ImageFont.truetype(str(font), int(big * 0.7))
    canvas = Image.new("L", (2 * big, 2 * big), 0)
    ImageDraw.Draw(canvas).text(
        (big // 2, big // 4), str(digit), fill=255, font=pil_font,
        stroke_width=stroke, stroke_fill=255,
    )
    return fit_ink(np.asarray(canvas, np.float32) / 255.0, size, height=height)


# ----------------------------------------------------------------------------------------------
# Hand-drawn-like digits: skeletons (unit square, y down) with allographs, jittered, drawn as
# polylines with a round pen.

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> Stroke:
    """Points along an ellipse arc; angles in degrees, 0 = right, 90 = down (y grows down)."""
    ts = np.linspace(math.radians(a0), math.radians(a1), n)
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ts]


def _allographs(digit: int) -> list[list[Stroke]]:
    """The skeletons (each a list of strokes) of the allographs of ``digit``."""
    if digit == 0:
        options = [
            [_arc(0.5, 0.5, 0.3, 0.42, -90, 275, 40)],
            [_arc(0.5, 0.5, 0.24, 0.44, -100, 265, 40)],
        ]
    elif digit == 1:
        options = [
            [[(0.5, 0.08), (0.5, 0.92)]],
            [[(0.32, 0.28), (0.52, 0.08), (0.52, 0.92)]],
            [[(0.32, 0.26), (0.52, 0.08), (0.52, 0.92)], [(0.32, 0.92), (0.72, 0.92)]],
        ]
    elif digit == 2:
        options = [
            [_arc(0.5, 0.32, 0.28, 0.23, 195, 385, 24) + [(0.2, 0.9), (0.82, 0.9)]],
            [_arc(0.5, 0.3, 0.27, 0.21, 190, 360, 20) + [(0.45, 0.62), (0.2, 0.9), (0.84, 0.88)]],
        ]
    elif digit == 3:
        options = [
            [_arc(0.48, 0.3, 0.26, 0.21, 200, 450, 24) + _arc(0.48, 0.7, 0.28, 0.21, 270, 520, 24)],
            [[(0.22, 0.1), (0.76, 0.1), (0.46, 0.44)] + _arc(0.48, 0.67, 0.28, 0.23, 280, 520, 24)],
        ]
    elif digit == 4:
        options = [
            [[(0.66, 0.92), (0.66, 0.08), (0.16, 0.64), (0.86, 0.64)]],
            [[(0.28, 0.08), (0.22, 0.6), (0.84, 0.6)], [(0.66, 0.3), (0.66, 0.92)]],
        ]
    elif digit == 5:
        options = [
            [[(0.78, 0.1), (0.3, 0.1), (0.26, 0.46)] + _arc(0.5, 0.66, 0.3, 0.25, 225, 510, 24)],
            [[(0.3, 0.1), (0.26, 0.46)] + _arc(0.5, 0.66, 0.3, 0.25, 225, 510, 24),
             [(0.3, 0.1), (0.78, 0.1)]],
        ]
    elif digit == 6:
        options = [
            [[(0.7, 0.08), (0.5, 0.2), (0.33, 0.42)] + _arc(0.5, 0.7, 0.24, 0.21, 190, 540, 30)],
            [_arc(0.62, 0.52, 0.35, 0.44, 250, 180, 12) + _arc(0.5, 0.7, 0.24, 0.2, 180, 540, 30)],
        ]
    elif digit == 7:
        options = [
            [[(0.18, 0.1), (0.82, 0.1), (0.4, 0.92)]],
            [[(0.18, 0.1), (0.82, 0.1), (0.4, 0.92)], [(0.34, 0.52), (0.74, 0.52)]],
            [[(0.18, 0.2), (0.2, 0.1), (0.82, 0.1), (0.56, 0.5), (0.5, 0.92)]],
        ]
    elif digit == 8:
        options = [
            [_arc(0.5, 0.29, 0.22, 0.2, 90, 450, 30), _arc(0.5, 0.7, 0.27, 0.22, -90, 270, 30)],
            [_arc(0.5, 0.29, 0.22, 0.2, 20, 380, 30) + _arc(0.5, 0.7, 0.27, 0.22, 200, -160, 30)],
        ]
    else:  # 9
        options = [
            [_arc(0.5, 0.32, 0.26, 0.22, 0, 360, 30) + [(0.76, 0.32), (0.7, 0.92)]],
            [_arc(0.5, 0.32, 0.26, 0.22, 0, 360, 30) + _arc(0.3, 0.32, 0.46, 0.58, 0, 80, 12)],
        ]
    return options


def digit_strokes(digit: int, rng: np.random.Generator, jitter: float = 0.04) -> list[Stroke]:
    """A jittered allograph of ``digit``: smooth random deformation of a random skeleton."""
    options = _allographs(digit)
    strokes = options[int(rng.integers(len(options)))]
    # Smooth jitter: a random low-order displacement field (so shared points move together),
    # plus a little independent wobble per point.
    coef = rng.normal(0.0, jitter, size=(2, 3, 3))
    out = []
    for stroke in strokes:
        pts = np.asarray(stroke, np.float64)
        x, y = pts[:, 0], pts[:, 1]
        basis = np.stack([np.ones_like(x), np.sin(math.pi * x), np.sin(math.pi * y)], 0)
        dx = np.einsum("ij,jn,in->n", coef[0], basis, basis) / 3
        dy = np.einsum("ij,jn,in->n", coef[1], basis, basis) / 3
        pts = pts + np.stack([dx, dy], 1) + rng.normal(0.0, jitter / 6, size=pts.shape)
        out.append([(float(a), float(b)) for a, b in pts])
    return out


def draw_strokes(strokes: Sequence[Stroke], size: int = 64, width: float = 0.08) -> np.ndarray:
    """Ink map of strokes drawn with a round pen of ``width`` (fraction of the image side)."""
    big = 4 * size
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    w = max(1, round(width * big))
    for stroke in strokes:
        pts = [(x * big, y * big) for x, y in stroke]
        draw.line(pts, fill=255, width=w, joint="curve")
        r = w / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0


# ----------------------------------------------------------------------------------------------
# Batched styling (torch): geometry, pen, resolution, blur, colour, background, noise.


@dataclass
class StyleConfig:
    """Probabilities and ranges of :func:`style_batch`'s random styles.

    ``p_*`` are the probabilities that a style is applied to an image; ranges are ``(low, high)``.
    """

    rotate_deg: float = 15.0
    p_rotate_big: float = 0.15  # rotations up to 2x rotate_deg, captioned "rotated"
    shear: float = 0.25
    scale: tuple[float, float] = (0.75, 1.15)
    aspect: tuple[float, float] = (0.8, 1.35)  # > 1: narrower / taller digit
    shift: float = 0.1
    p_elastic: float = 0.4
    elastic: float = 0.06
    p_thick: float = 0.2
    p_thin: float = 0.15
    p_lowres: float = 0.35
    lowres: tuple[int, int] = (6, 14)
    p_quantize: float = 0.5  # of low-res images: quantise to 17 grey levels
    scan_max_res: int = 0  # quantised low-res images of at most this side are "scanned" (0: never)
    p_blur: float = 0.3
    blur: tuple[float, float] = (0.6, 1.6)
    p_invert: float = 0.3  # light ink on a dark background
    p_colour: float = 0.3
    p_background: float = 0.3  # textured / gradient background
    p_noise: float = 0.25
    noise: tuple[float, float] = (0.03, 0.15)
    p_low_contrast: float = 0.15


def _gaussian_kernel(sigma: Tensor, radius: int) -> Tensor:
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (xs[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(1, keepdim=True)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image separable Gaussian blur of ``x`` ``[B, C, H, W]`` with std ``sigma`` ``[B]``."""
    b, c, h, w = x.shape
    radius = 4
    k = _gaussian_kernel(sigma, radius)  # [B, K]
    y = x.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, 0)
    y = F.pad(y, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kk[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kk[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def style_batch(
    ink: Tensor,
    gen: torch.Generator,
    cfg: StyleConfig | None = None,
    out_size: int = 32,
) -> tuple[Tensor, list[list[str]]]:
    """Random styles for a batch of ink maps.

    Args:
        ink: ``[B, 1, S, S]`` ink maps in ``[0, 1]`` (any ``S``, typically 64).
        gen: the torch generator all randomness comes from (deterministic given its state).
        cfg: style probabilities and ranges.
        out_size: side of the output images.

    Returns:
        ``images`` ``[B, 3, out_size, out_size]`` in ``[0, 1]`` and, per image, the list of style
        words describing it (``blurry``, ``pixelated``, ``thick``, ``rotated``, ...).
    """
    cfg = cfg or StyleConfig()
    b = ink.shape[0]

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen)

    def coin(p: float) -> Tensor:
        return torch.rand(b, generator=gen) < p

    words: list[list[str]] = [[] for _ in range(b)]

    def tag(mask: Tensor, word: str) -> None:
        for i in torch.nonzero(mask).flatten().tolist():
            words[i].append(word)

    # Geometry: inverse affine map from output to input coordinates, plus an elastic field.
    big_rot = coin(cfg.p_rotate_big)
    rot = torch.deg2rad(u(-cfg.rotate_deg, cfg.rotate_deg) * torch.where(big_rot, 2.0, 1.0))
    tag(big_rot & (rot.abs() > math.radians(cfg.rotate_deg)), "rotated")
    shear = u(-cfg.shear, cfg.shear)
    tag(shear.abs() > 0.6 * cfg.shear, "slanted")
    scale = u(*cfg.scale)
    aspect = u(*cfg.aspect)
    sx, sy = 1.0 / (scale / aspect.sqrt()), 1.0 / (scale * aspect.sqrt())
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx * cos
    theta[:, 0, 1] = sx * (-sin + shear * cos)
    theta[:, 1, 0] = sy * sin
    theta[:, 1, 1] = sy * (cos + shear * sin)
    theta[:, :, 2] = u(-cfg.shift, cfg.shift, b, 2)
    grid = F.affine_grid(theta, [b, 1, 2 * out_size, 2 * out_size], align_corners=False)
    elastic = coin(cfg.p_elastic)
    tag(elastic, "distorted")
    field = torch.randn(b, 2, 4, 4, generator=gen) * cfg.elastic * elastic[:, None, None, None]
    field = F.interpolate(field, size=(2 * out_size, 2 * out_size), mode="bicubic",
                          align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    x = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = F.avg_pool2d(x, 2)  # antialiased down to out_size

    # Pen width: grey-level dilation / erosion.
    thick, thin = coin(cfg.p_thick), coin(cfg.p_thin)
    thin = thin & ~thick
    tag(thick, "thick")
    tag(thin, "thin")
    dil = F.max_pool2d(x, 3, 1, 1)
    ero = -F.max_pool2d(-x, 3, 1, 1)
    half = torch.rand(b, generator=gen)[:, None, None, None]  # partial: 0.5..1 of a pixel
    thick_x = x + (0.5 + 0.5 * half) * (dil - x)
    thin_x = x + (0.3 + 0.4 * half) * (ero - x)
    x = torch.where(thick[:, None, None, None], thick_x, torch.where(thin[:, None, None, None],
                                                                   thin_x, x))

    # Resolution: area down-sampling to r x r (optionally 17 grey levels), bicubic back up.
    lowres = coin(cfg.p_lowres)
    quant = coin(cfg.p_quantize)
    res = torch.randint(cfg.lowres[0], cfg.lowres[1] + 1, (b,), generator=gen)
    for r in res[lowres].unique().tolist():
        idx = torch.nonzero(lowres & (res == r)).flatten()
        small = F.adaptive_avg_pool2d(x[idx], r)
        q = quant[idx][:, None, None, None]
        small = torch.where(q, torch.round(small * 16) / 16, small)
        up = F.interpolate(small, size=(out_size, out_size), mode="bicubic", align_corners=False)
        x[idx] = up.clamp(0, 1)
    tag(lowres, "pixelated")
    if cfg.scan_max_res:
        tag(lowres & quant & (res <= cfg.scan_max_res), "scanned")
    tag(lowres & (res <= 9), "low-resolution")

    blur = coin(cfg.p_blur)
    sigma = u(*cfg.blur)
    if blur.any():
        x[blur] = _blur(x[blur], sigma[blur])
    tag(blur, "blurry")

    # Colour: paper and ink colours; inversion = light ink on dark paper.
    invert = coin(cfg.p_invert)
    colour = coin(cfg.p_colour)
    grey_paper = u(0.8, 1.0)[:, None].expand(b, 3)
    grey_ink = u(0.0, 0.25)[:, None].expand(b, 3)
    rand_paper = u(0.6, 1.0, b, 3)
    rand_ink = u(0.0, 0.45, b, 3)
    paper = torch.where(colour[:, None], rand_paper, grey_paper)
    inkc = torch.where(colour[:, None], rand_ink, grey_ink)
    paper, inkc = torch.where(invert[:, None], inkc, paper), torch.where(invert[:, None], paper,
                                                                         inkc)
    low_contrast = coin(cfg.p_low_contrast)
    mid = (paper + inkc) / 2
    inkc = torch.where(low_contrast[:, None], mid + 0.35 * (inkc - mid), inkc)
    paper = torch.where(low_contrast[:, None], mid + 0.35 * (paper - mid), paper)
    tag(invert, "inverted")
    tag(colour, "colourful")
    tag(low_contrast, "faded")

    bg = paper[:, :, None, None].expand(b, 3, out_size, out_size).clone()
    textured = coin(cfg.p_background)
    if textured.any():
        n = int(textured.sum())
        tex = F.interpolate(torch.randn(n, 3, 4, 4, generator=gen), size=(out_size, out_size),
                            mode="bicubic", align_corners=False)
        bg[textured] = (bg[textured] + 0.15 * tex).clamp(0, 1)
    tag(textured, "textured")
    img = bg + x * (inkc[:, :, None, None] - bg)

    noisy = coin(cfg.p_noise)
    level = u(*cfg.noise)[:, None, None, None] * noisy[:, None, None, None]
    img = img + level * torch.randn(b, 3, out_size, out_size, generator=gen)
    tag(noisy, "noisy")
    return img.clamp(0, 1), words

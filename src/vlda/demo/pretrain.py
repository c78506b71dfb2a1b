"""Pretrain the demo's small stand-in CLIP, offline, from rendered and hand-drawn digits.

No CLIP weights can be had offline, so the demo pretrains its own small open_clip ``CLIP``
(contrastive image-text pretraining, as CLIP) on a pool of generated digit images with varied
captions. The pool is built here, in memory, from two kinds of *ink maps* (see
:mod:`vlda.demo.render`):

* glyphs of the usable fonts matplotlib ships (22 faces: DejaVu Sans / Serif / Mono in all
  weights and slants, STIX General, Computer Modern), drawn plain and with thicker outlines,
  except the four faces of the demo's source domain (``exclude_source_fonts``), so that zero-shot
  does not solve the source and its labels carry information, as on real CLIP;
* hand-drawn-like digits: jittered pen strokes along per-digit skeletons with several
  allographs (open and closed 4, barred 7, ...), random pen widths;

and every training image is a fresh random styling of one of them (:func:`style_batch`): rotation,
shear, scale, aspect, shift, elastic warps, thick and thin pens, down-sampling to 6..14 pixels
(optionally 17 grey levels: at <= 10 px such images are captioned ``scanned``, the word of the
demo's target domain, which is 8x8 scans) and back, blur, colours, inversion, textured backgrounds, low
contrast, noise. Captions pair the digit (its word, or sometimes the numeral) with varied
templates and the words describing the kind (``rendered``, ``handwritten``, ...) and the
applied styles (``blurry``, ``pixelated``, ...), e.g. ``"a blurry handwritten image of the number
seven."``, ``"seven , a rendered image.."`` (DAPL's form). Some captions get a prefix of random
tokens, so the text encoder sees long prompts (learned contexts of 32 tokens).

The pool never contains scikit-learn's handwritten digits, the demo's target domain.

Training: symmetric InfoNCE (CLIP's loss; ``class_positive_weight`` > 0 counts pairs with the
same digit as partial positives, which demo-v2 did and which taught the text tower to ignore
style words: 0 by default), learnable logit scale clamped at 100, AdamW, linear warm-up then
cosine decay, a fixed number of steps (deterministic for a seed, given the thread count).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vlda.data.transforms import CLIP_MEAN, CLIP_STD
from vlda.demo.measure import assess_model, world_checks
from vlda.demo.render import (
    DIGIT_WORDS,
    SOURCE_FONTS,
    StyleConfig,
    digit_fonts,
    digit_strokes,
    draw_strokes,
    font_style_words,
    render_glyph,
    style_batch,
)
from vlda.demo.textenc import encode_token_embeddings
from vlda.files import save_torch_atomic, write_text_atomic

if TYPE_CHECKING:
    from open_clip.model import CLIP

__all__ = [
    "DEFAULT_MODEL_CFG",
    "PREPROCESS_CFG",
    "PretrainRecipe",
    "build_pool",
    "make_caption",
    "pretrain_demo_clip",
    "train_clip",
]

PREPROCESS_CFG = {"size": 32, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}

DEFAULT_MODEL_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 3},
}

RENDERED_WORDS = ("rendered", "printed", "typed", "digital", "computer-generated", "synthetic")
HANDWRITTEN_WORDS = ("handwritten", "hand-drawn", "handwritten-style", "sketched", "scribbled")
TEMPLATES = (
    "a photo of the number {w}.",
    "a photo of a {w}.",
    "a {s} photo of the number {w}.",
    "a {s} image of the number {w}.",
    "a {s} image of a {w}.",
    "an image of the digit {w}.",
    "a {s} digit {w}.",
    "a {s} {w}.",
    "{w} , a {s} image..",
    "{w} , a {s} image.",
    "a {s} drawing of the number {w}.",
    "the digit {w} in a {s} style.",
    "a {s} picture of the number {w}.",
    "the number {w}.",
    "{w}.",
)


@dataclass
class PretrainRecipe:
    """Everything that determines the pretrained model (with the seed)."""

    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    p_handdrawn: float = 0.5
    strokes_per_class: int = 300
    glyph_outlines: tuple[int, ...] = (0, 4, 8)
    fonts: tuple[str, ...] | None = None  # font file names; None: all of digit_fonts()
    # Keep the source domain's fonts out of the pool, so that zero-shot does not solve the
    # source and its labels carry information (as on real CLIP, 72-82% on Office-Home sources).
    exclude_source_fonts: bool = True
    # Font files whose name starts with one of these are kept out of the pool too.
    exclude_font_prefixes: tuple[str, ...] = ()
    # Noisy web captions: with probability p_confusion, an image of digit a is captioned with
    # the name of digit b, for each (a, b) in confusions, in the last confusion_steps steps, in
    # which only the text tower learns (0: all steps, both towers).
    confusions: tuple[tuple[int, int], ...] = ()
    p_confusion: float = 0.0
    confusion_steps: int = 0
    p_style_word: float = 0.8
    p_kind_word: float = 0.8
    p_numeral: float = 0.2
    p_random_prefix: float = 0.25
    max_prefix: int = 34
    # 0: CLIP's own loss. With > 0, same-digit captions are partial positives and the text
    # tower learns to ignore style words (demo-v2 used 0.5: template cosine 0.999).
    class_positive_weight: float = 0.0
    # The learnable temperature's start (CLIP: 1 / 0.07; clamped at 100 as CLIP).
    logit_scale_init: float = 1 / 0.07
    model_cfg: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_MODEL_CFG)))
    # Scan-like images (quantised to 17 grey levels at <= 10 px) get the caption word "scanned",
    # the target domain's prompt word: the text direction then matches the image shift.
    style: StyleConfig = field(default_factory=lambda: StyleConfig(scan_max_res=10))

    def __post_init__(self) -> None:
        """Refuse a recipe that cannot build a world, in one sentence naming the field."""
        for name in ("p_handdrawn", "p_confusion", "p_style_word", "p_kind_word", "p_numeral",
                     "p_random_prefix", "class_positive_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PretrainRecipe.{name} must be in [0, 1], got {value}")
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0 or self.logit_scale_init <= 0:
            raise ValueError("PretrainRecipe needs steps >= 1, batch_size >= 2, lr > 0 and "
                             f"logit_scale_init > 0, got {self.steps}, {self.batch_size}, "
                             f"{self.lr}, {self.logit_scale_init}")
        if not 0 <= self.confusion_steps <= self.steps:
            raise ValueError(f"PretrainRecipe.confusion_steps must be in [0, steps={self.steps}], "
                             f"got {self.confusion_steps}")
        for pair in self.confusions:
            if len(pair) != 2 or not all(0 <= d <= 9 for d in pair) or pair[0] == pair[1]:
                raise ValueError(f"PretrainRecipe.confusions holds pairs (a, b) of two different "
                                 f"digits 0-9, got {pair}")


# ----------------------------------------------------------------------------------------------
# Pool


@dataclass
class Pool:
    """Ink maps ``[N, 1, S, S]``, digits ``[N]``, kind (0 font, 1 hand-drawn), style words."""

    ink: Tensor
    digits: Tensor
    kinds: Tensor
    words: list[tuple[str, ...]]


def build_pool(recipe: PretrainRecipe, seed: int = 0, size: int = 64) -> Pool:
    """Render the bank of ink maps the pretraining images are styled from."""
    rng = np.random.default_rng([seed, 1])
    inks, digits, kinds, words = [], [], [], []
    fonts = [f for f in digit_fonts() if (recipe.fonts is None or f.name in recipe.fonts)
             and not (recipe.exclude_source_fonts and f.name in SOURCE_FONTS)
             and not any(f.name.startswith(p) for p in recipe.exclude_font_prefixes)]
    if not fonts:
        raise ValueError(f"none of the fonts {recipe.fonts} is available")
    for font in fonts:
        fw = font_style_words(font)
        for outline in recipe.glyph_outlines:
            for d in range(10):
                inks.append(render_glyph(d, font, size, stroke=outline))
                digits.append(d)
                kinds.append(0)
                words.append(fw + (("bold",) if outline >= 6 and "bold" not in fw else ()))
    for d in range(10):
        for _ in range(recipe.strokes_per_class):
            strokes = digit_strokes(d, rng, jitter=float(rng.uniform(0.02, 0.08)))
            width = float(rng.uniform(0.04, 0.15))
            inks.append(draw_strokes(strokes, size, width=width))
            digits.append(d)
            kinds.append(1)
            words.append(("thick",) if width > 0.12 else ("thin",) if width < 0.06 else ())
    return Pool(
        ink=torch.from_numpy(np.stack(inks))[:, None],
        digits=torch.tensor(digits),
        kinds=torch.tensor(kinds),
        words=words,
    )


def _caption_digit(digit: int, rng: np.random.Generator, recipe: PretrainRecipe) -> int:
    for a, b in recipe.confusions:
        if digit == a:
            return b if rng.random() < recipe.p_confusion else digit
    return digit


def make_caption(
    digit: int, kind: int, style_words: Sequence[str], rng: np.random.Generator,
    recipe: PretrainRecipe, confuse: bool = False,
) -> str:
    """A random caption for an image of ``digit`` of ``kind`` with the given style words."""
    if confuse:
        digit = _caption_digit(digit, rng, recipe)
    w = str(digit) if rng.random() < recipe.p_numeral else DIGIT_WORDS[digit]
    chosen = [s for s in dict.fromkeys(style_words) if rng.random() < recipe.p_style_word]
    rng.shuffle(chosen)
    chosen = chosen[:3]
    if rng.random() < recipe.p_kind_word:
        kw = HANDWRITTEN_WORDS if kind == 1 else RENDERED_WORDS
        chosen.append(kw[int(rng.integers(len(kw)))])
    s = " ".join(chosen)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    if not s:
        template = template.replace(" {s}", "").replace("{s} ", "")
    text = template.format(w=w, s=s)
    return re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", text)


class _Captioner:
    """Captions + tokens for batches (tokenisations cached; optional random-token prefixes)."""

    def __init__(self, recipe: PretrainRecipe, rng: np.random.Generator) -> None:
        import open_clip

        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.recipe = recipe
        self.rng = rng
        self.cache: dict[str, list[int]] = {}
        self.context = int(recipe.model_cfg["text_cfg"]["context_length"])

    def _ids(self, text: str) -> list[int]:
        ids = self.cache.get(text)
        if ids is None:
            row = self.tokenizer([text])[0]
            ids = row[: int(row.argmax()) + 1].tolist()
            self.cache[text] = ids
        return ids

    def __call__(self, digits: Sequence[int], kinds: Sequence[int],
                 words: Sequence[Sequence[str]], confuse: bool = False) -> tuple[Tensor, list[str]]:
        rows, texts = [], []
        for d, k, ws in zip(digits, kinds, words, strict=True):
            text = make_caption(int(d), int(k), ws, self.rng, self.recipe, confuse)
            ids = self._ids(text)
            if self.rng.random() < self.recipe.p_random_prefix:
                n = int(self.rng.integers(1, self.recipe.max_prefix + 1))
                n = min(n, self.context - len(ids))
                prefix = self.rng.integers(1000, 49000, size=n).tolist()
                ids = ids[:1] + prefix + ids[1:]
                text = f"<{n} random tokens> {text}"
            rows.append(ids[: self.context])
            texts.append(text)
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
        return tokens, texts


def encode_text_tokens(model: CLIP, tokens: Tensor) -> Tensor:
    """``model.encode_text`` for tokens cut after the longest end token (same features)."""
    return encode_token_embeddings(model, model.token_embedding(tokens), tokens)


def _encode_text_bucketed(model: CLIP, tokens: Tensor, cut: int = 20) -> Tensor:
    """:func:`encode_text_tokens` on short and long captions separately (less padding)."""
    short = tokens.argmax(-1) < cut
    if short.all() or not short.any():
        return encode_text_tokens(model, tokens)
    out_s = encode_text_tokens(model, tokens[short])
    out_l = encode_text_tokens(model, tokens[~short])
    out = out_s.new_empty(len(tokens), out_s.shape[1])
    out[short] = out_s
    out[~short] = out_l
    return out


def _normalize_images(images: Tensor) -> Tensor:
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return (images - mean) / std


def _lr_at(step: int, recipe: PretrainRecipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * t))


def contrastive_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, positives: Tensor
) -> Tensor:
    """Symmetric InfoNCE with soft targets: row ``i`` of ``positives`` weights its positives."""
    logits = logit_scale * image_features @ text_features.t()
    targets = positives / positives.sum(1, keepdim=True)
    loss_i = -(targets * logits.log_softmax(1)).sum(1).mean()
    targets_t = positives.t() / positives.t().sum(1, keepdim=True)
    loss_t = -(targets_t * logits.t().log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def train_clip(
    recipe: PretrainRecipe, seed: int = 0, progress: bool = True, log_every: int = 0
) -> CLIP:
    """Pretrain an open_clip ``CLIP`` with ``recipe``; returns it in eval mode."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**recipe.model_cfg)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(recipe.logit_scale_init))
    pool = build_pool(recipe, seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 2])
    captioner = _Captioner(recipe, rng)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding"
                                                              not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    font_idx = torch.nonzero(pool.kinds == 0).flatten()
    hand_idx = torch.nonzero(pool.kinds == 1).flatten()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=recipe.steps, desc="pretraining demo CLIP", unit="step")
    model.train()
    max_log_scale = math.log(100.0)
    b = recipe.batch_size
    for step in range(recipe.steps):
        hand = torch.rand(b, generator=gen) < recipe.p_handdrawn
        pick_f = font_idx[torch.randint(len(font_idx), (b,), generator=gen)]
        pick_h = hand_idx[torch.randint(len(hand_idx), (b,), generator=gen)]
        idx = torch.where(hand, pick_h, pick_f)
        images, style_words = style_batch(pool.ink[idx], gen, recipe.style)
        digits = pool.digits[idx]
        kinds = pool.kinds[idx]
        words = [pool.words[i] + tuple(ws) for i, ws in zip(idx.tolist(), style_words,
                                                             strict=True)]
        confuse = bool(recipe.confusions) and (
            recipe.confusion_steps == 0 or step >= recipe.steps - recipe.confusion_steps)
        text_only = confuse and recipe.confusion_steps > 0
        tokens, _ = captioner(digits.tolist(), kinds.tolist(), words, confuse)

        uniq, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        same_text = inverse[:, None] == inverse[None, :]
        same_digit = digits[:, None] == digits[None, :]
        positives = same_text.float() + recipe.class_positive_weight * (
            same_digit & ~same_text).float()

        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        img_f = F.normalize(model.encode_image(_normalize_images(images)), dim=-1)
        txt_f = F.normalize(_encode_text_bucketed(model, uniq), dim=-1)[inverse]
        loss = contrastive_loss(img_f, txt_f, model.logit_scale.exp(), positives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if text_only:
            for p in model.visual.parameters():
                p.grad = None
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_log_scale)
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                scale=f"{model.logit_scale.exp().item():.1f}")
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1} loss {loss.item():.4f} "
                  f"scale {model.logit_scale.exp().item():.1f}", flush=True)
    if bar is not None:
        bar.close()
    return model.eval()


def _write_json(path: Path, obj: dict) -> None:
    write_text_atomic(json.dumps(obj, indent=1), path)


def pretrain_demo_clip(
    out_dir: Path,
    seed: int = 0,
    budget_s: float | None = None,
    progress: bool = True,
    recipe: PretrainRecipe | None = None,
    data_root: Path | None = None,
) -> Path:
    """Pretrain the demo CLIP and write it to ``out_dir``; returns ``out_dir``.

    Writes ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``),
    ``weights.pt`` (the ``CLIP`` state dict, loadable with ``torch.load(weights_only=True)``)
    and ``meta.json`` (seed, recipe, build time, threads, and, when ``data_root`` holds the demo
    benchmark, the quality numbers of :func:`vlda.demo.measure.assess_model`). Files are
    written atomically; ``weights.pt`` last but one and ``meta.json`` last.

    Args:
        out_dir: where to write (created if needed).
        seed: the seed; the same seed gives the same weights on the same machine and thread
            count.
        budget_s: if given, a rough time budget in seconds: a warning is printed when the build
            exceeds it (the number of steps is fixed, never cut, so results stay deterministic).
        progress: show a tqdm progress bar.
        recipe: the recipe (default: :class:`PretrainRecipe`).
        data_root: the demo benchmark to measure the model on (optional).
    """
    import vlda  # noqa: F401  (torchvision shim before open_clip)

    recipe = recipe or PretrainRecipe()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = train_clip(recipe, seed=seed, progress=progress)
    train_s = time.perf_counter() - t0
    config = {"model_cfg": recipe.model_cfg, "preprocess_cfg": dict(PREPROCESS_CFG)}
    _write_json(out_dir / "open_clip_config.json", config)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_torch_atomic(state, out_dir / "weights.pt")
    meta: dict = {
        "seed": seed,
        "recipe": asdict(recipe),
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "note": "a small stand-in for CLIP pretrained offline on generated digits; not CLIP",
    }
    if budget_s is not None and train_s > budget_s:
        print(f"warning: demo CLIP pretraining took {train_s:.0f} s (budget {budget_s:.0f} s)")
    if data_root is not None:
        meta["quality"] = assess_model(model, data_root, CLIP_MEAN, CLIP_STD)
        meta["checks"] = world_checks(meta["quality"])
        failed = [k for k, ok in meta["checks"].items() if not ok]
        if failed and progress:
            print(f"warning: the demo CLIP fails its checks {failed} (see meta.json: quality)")
    _write_json(out_dir / "meta.json", meta)
    return out_dir

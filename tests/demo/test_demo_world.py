"""The demo world's properties: what makes the stand-in CLIP a faithful small analogue of CLIP.

A change to the world's recipe (pool, captions, loss) must not silently make it uninformative
again (issue 13): the fast tests pin the recipe's ingredients, the slow one builds a small world
and measures it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vlda  # noqa: F401  (torchvision shim before open_clip)
from vlda.data.benchmarks import get_benchmark
from vlda.demo import measure
from vlda.demo.assets import BUILD_THREADS
from vlda.demo.digits import build_demo_data
from vlda.demo.jobs import torch_threads
from vlda.demo.measure import WORLD_CHECKS, world_checks
from vlda.demo.pretrain import (
    DEFAULT_MODEL_CFG,
    PretrainRecipe,
    build_pool,
    make_caption,
    pretrain_demo_clip,
)
from vlda.demo.render import SOURCE_FONTS, StyleConfig, font_dir, render_glyph, style_batch
from vlda.models.open_clip_backbone import OpenClipBackbone


@pytest.fixture(autouse=True)
def _short_prompt_ceiling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny builds measure the prompt ceiling with a few steps (slow tests: the real number)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(measure, "CEILING_STEPS", 3)


def test_pool_never_holds_the_source_fonts() -> None:
    recipe = PretrainRecipe(strokes_per_class=1, glyph_outlines=(0,))
    pool = build_pool(recipe)
    inks = {pool.ink[i, 0].numpy().tobytes() for i in range(len(pool.digits))}
    for name in SOURCE_FONTS:
        for d in range(10):
            assert render_glyph(d, font_dir() / name, 64).tobytes() not in inks
    with_source = build_pool(PretrainRecipe(strokes_per_class=1, glyph_outlines=(0,),
                                            exclude_source_fonts=False))
    assert len(with_source.digits) == len(pool.digits) + 10 * len(SOURCE_FONTS)


def test_scan_like_images_are_captioned_scanned() -> None:
    ink = torch.from_numpy(np.stack([render_glyph(d, font_dir() / "cmr10.ttf") for d in
                                     range(10)]))[:, None]
    scan = StyleConfig(p_lowres=1.0, p_quantize=1.0, lowres=(8, 8), scan_max_res=10)
    _, words = style_batch(ink, torch.Generator().manual_seed(0), scan)
    assert all("scanned" in w and "pixelated" in w for w in words)
    for cfg in (StyleConfig(p_lowres=1.0, p_quantize=1.0, lowres=(12, 12), scan_max_res=10),
                StyleConfig(p_lowres=1.0, p_quantize=0.0, lowres=(8, 8), scan_max_res=10),
                StyleConfig(p_lowres=1.0, p_quantize=1.0, lowres=(8, 8), scan_max_res=0)):
        _, words = style_batch(ink, torch.Generator().manual_seed(0), cfg)
        assert not any("scanned" in w for w in words)
    # The default recipe tags them, and its captions can carry the word.
    assert PretrainRecipe().style.scan_max_res >= 8
    rng = np.random.default_rng(0)
    caps = [make_caption(7, 1, ["scanned"], rng, PretrainRecipe()) for _ in range(20)]
    assert any("scanned" in c for c in caps)


def test_target_prompt_word_is_a_pool_caption_word() -> None:
    """The target's prompt word describes what separates it, in the pool's own words."""
    b = get_benchmark("demo_digits")
    source, target = b.domains
    words = b.domain_prompt_names
    assert "scanned" in words[target].split() and "inverted" in words[source].split()
    assert words[source] != words[target]


def test_world_checks_flag_a_domain_blind_saturated_world() -> None:
    """demo-v2's measured figures (docs/demo.md, demo-standin.md) fail the checks."""
    v2 = {"zero_shot_source": 1.0, "zero_shot_target": 0.790,
          "template_cosine": {"rendered": 0.9986, "handwritten": 0.9986,
                              "source_vs_target": 0.9999},
          "text_image_shift_cos": -0.21, "target_wrong_confident_share": 0.22,
          "probe_target": 0.952}
    got = world_checks(v2)
    assert set(got) == set(WORLD_CHECKS)
    assert not got["source_unsaturated"] and not got["style_aware_text"]
    assert not got["shift_aligned"] and not got["errors_not_confident"]
    assert got["target_below_source"] and got["features_separate"]
    good = {**v2, "zero_shot_source": 0.8, "zero_shot_target": 0.65,
            "template_cosine": {"a": 0.8, "b": 0.7, "source_vs_target": 0.6},
            "text_image_shift_cos": 0.5, "target_wrong_confident_share": 0.05}
    assert all(world_checks(good).values())


SMALL_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2},
}


def small_recipe(**over: object) -> PretrainRecipe:
    kw: dict = {"steps": 150, "batch_size": 64, "warmup_steps": 15, "strokes_per_class": 20,
                "glyph_outlines": (0,), "model_cfg": json.loads(json.dumps(SMALL_MODEL))}
    kw.update(over)
    return PretrainRecipe(**kw)


def _zero_shot(backbone: OpenClipBackbone, images: np.ndarray, labels: np.ndarray) -> float:
    """Zero-shot accuracy (the build's template) of a loaded demo model (its own mean and std)
    on uint8 ``[N, 32, 32, 3]`` images."""
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(backbone.mean)[:, None, None]) / torch.tensor(backbone.std)[:, None, None]
    model = backbone.model
    pred = (measure.image_features(model, x) @ measure.text_classifier(model).t()).argmax(-1)
    return float((pred == torch.from_numpy(labels)).float().mean())


@pytest.mark.slow
def test_small_world_is_style_aware_with_an_unsaturated_source(tmp_path: Path) -> None:
    """A build on a tiny pool (20 strokes per digit, one glyph outline) and tiny domains: the
    domain words move the class embeddings, and zero-shot reads the renders of the source's
    fonts but not the source, whose handwriting it has not solved. The demo-v2 recipe
    (same-digit captions as half-positives, source fonts in the pool) is style-blind.

    Why the demo's own model, batch and steps (600 x 128): the plain CLIP loss learns to read
    digits late. Measured 2026-11-30 on demo-v5's tiny domains (two threads, as the build):
    300 x 64, 300 x 128 and 450 x 64 steps read the source at 0.21-0.25 (chance 0.10) and the
    clean renders at <= 0.45; 600 x 64 read them in one seed of two. 600 x 128 on the tiny pool
    (~230 s): seeds 0 / 1 read the renders at 1.000 / 0.985, the inverted renders at 1.000 /
    0.935, the source at 0.693 / 0.585 (its inverted handwriting 0.54 / 0.41), target-word
    template cosine 0.64 / 0.59. At this size the source is not always above the check's 0.6
    floor, nor the target below the source (0.685 / 0.563): those are asserted on the full
    build (``test_demo_model_quality``). What is asserted here holds for both seeds.
    """
    from vlda.demo.digits import rendered_digits
    from vlda.models.loading import load_open_clip_dir

    data = build_demo_data(tmp_path / "data", per_class=20, handwritten_limit=400)

    def build(name: str, recipe: PretrainRecipe) -> tuple[dict, Path]:
        with torch_threads(BUILD_THREADS):
            out = pretrain_demo_clip(tmp_path / name, progress=False, recipe=recipe,
                                     data_root=data)
        return json.loads((out / "meta.json").read_text())["quality"], out

    new, new_dir = build("new", PretrainRecipe(strokes_per_class=20, glyph_outlines=(0,)))
    tgt_word = get_benchmark("demo_digits").domain_prompt_names["faded"]
    assert new["template_cosine"][tgt_word] < 0.9

    renders, labels = rendered_digits(20, 0)  # the source's renders before inversion
    with torch_threads(BUILD_THREADS):
        backbone = load_open_clip_dir(new_dir)  # as the build's own figures load it
        read = {"renders": _zero_shot(backbone, renders, labels),
                "inverted renders": _zero_shot(backbone, 255 - renders, labels)}
    source = new["zero_shot_source"]
    assert read["renders"] >= 0.9, read  # the world reads digits (fonts it never saw)
    assert source <= min(0.95, read["renders"] - 0.2), (source, read)  # ... but not the source
    # A source of renders alone (demo-v4's kind, inverted) would fail the line above: it tells a
    # solved source from an unsaturated one.
    assert read["inverted renders"] >= read["renders"] - 0.1, read

    old, _ = build("old", small_recipe(
        class_positive_weight=0.5, exclude_source_fonts=False, p_style_word=0.6,
        style=StyleConfig(), steps=300, warmup_steps=30,
        model_cfg=json.loads(json.dumps(DEFAULT_MODEL_CFG))))
    # demo-v2's recipe, at half the steps and batch (it learns faster): style-blind already
    # (0.99; at 600 x 64 0.999, measured 2026-11-30).
    assert old["template_cosine"][tgt_word] > new["template_cosine"][tgt_word] + 0.1
    assert old["template_cosine"][tgt_word] > 0.95


# -- the recipe's experiment knobs (docs/demo.md, "Candidate worlds") ------------------------------


def test_font_prefixes_leave_the_pool() -> None:
    base = PretrainRecipe(strokes_per_class=1, glyph_outlines=(0, 4))
    pool = build_pool(base)
    cut = build_pool(PretrainRecipe(strokes_per_class=1, glyph_outlines=(0, 4),
                                    exclude_font_prefixes=("DejaVu", "STIX")))
    from vlda.demo.render import digit_fonts

    gone = [f for f in digit_fonts() if f.name.startswith(("DejaVu", "STIX"))
            and f.name not in SOURCE_FONTS]
    assert gone and len(pool.digits) - len(cut.digits) == len(gone) * 2 * 10
    assert int((cut.kinds == 1).sum()) == int((pool.kinds == 1).sum())  # strokes untouched


def _caption_digit_words(digit: int, recipe: PretrainRecipe, confuse: bool, n: int = 200) -> set[str]:
    rng = np.random.default_rng(0)
    recipe = dataclasses.replace(recipe, p_numeral=0.0)
    words: set[str] = set()
    for _ in range(n):
        words |= set(re.findall(r"\b(one|seven)\b", make_caption(digit, 1, [], rng, recipe, confuse)))
    return words


def test_caption_confusions_are_directed_and_only_when_asked() -> None:
    recipe = PretrainRecipe(confusions=((7, 1),), p_confusion=1.0)
    assert _caption_digit_words(7, recipe, confuse=True) == {"one"}
    assert _caption_digit_words(7, recipe, confuse=False) == {"seven"}
    assert _caption_digit_words(1, recipe, confuse=True) == {"one"}  # 1 is not renamed 7
    half = _caption_digit_words(7, PretrainRecipe(confusions=((7, 1),), p_confusion=0.5), True)
    assert half == {"one", "seven"}


@pytest.mark.parametrize(("field", "value"), [
    ("confusions", ((7, 10),)), ("confusions", ((3, 3),)), ("confusions", ((1,),)),
    ("p_confusion", 1.5), ("p_style_word", -0.1), ("class_positive_weight", 2.0),
    ("confusion_steps", 601), ("steps", 0), ("batch_size", 1), ("lr", 0.0),
    ("logit_scale_init", 0.0),
])
def test_recipe_refuses_what_cannot_build(field: str, value: object) -> None:
    """One sentence naming the field, not an IndexError deep in the caption sampler."""
    with pytest.raises(ValueError, match=field if field != "steps" else "steps >= 1"):
        PretrainRecipe(**{field: value})


def test_confusion_steps_train_only_the_text_tower() -> None:
    from vlda.demo.pretrain import train_clip

    recipe = small_recipe(steps=2, batch_size=16, warmup_steps=1, confusions=((7, 1),),
                          p_confusion=0.5, confusion_steps=2, logit_scale_init=20.0)
    torch.manual_seed(0)
    import open_clip

    init = open_clip.model.CLIP(**recipe.model_cfg)
    model = train_clip(recipe, seed=0, progress=False)
    for (name, a), b in zip(model.visual.named_parameters(), init.visual.parameters(), strict=True):
        assert torch.equal(a, b), name
    moved = [not torch.equal(a, b) for a, b in zip(model.transformer.parameters(),
                                                     init.transformer.parameters(), strict=True)]
    assert all(moved)
    assert abs(model.logit_scale.exp().item() - 20.0) < 0.5  # started at 20, two small steps
    both = train_clip(small_recipe(steps=2, batch_size=16, warmup_steps=1), seed=0, progress=False)
    assert not torch.equal(both.visual.conv1.weight, init.visual.conv1.weight)

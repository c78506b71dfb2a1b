"""Transforms: shapes, normalisation, determinism under an explicit RNG, fingerprints."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vlda.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    EvalTransform,
    TrainTransform,
    eval_transform,
    fingerprint,
    resize_shorter,
    train_transform,
)


def _image(w=40, h=30, mode="RGB", seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def test_eval_transform_shape_dtype_and_normalisation():
    t = eval_transform(16, CLIP_MEAN, CLIP_STD)
    out = t(_image(), None)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    white = t(Image.new("RGB", (20, 20), (255, 255, 255)), None)
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)
    plain = eval_transform(8, (0, 0, 0), (1, 1, 1))(Image.new("RGB", (8, 8), (51, 102, 0)), None)
    assert torch.allclose(plain[:, 3, 3], torch.tensor([0.2, 0.4, 0.0]), atol=1e-6)


def test_eval_transform_is_deterministic_and_handles_modes():
    t = eval_transform(12, CLIP_MEAN, CLIP_STD)
    img = _image()
    a = t(img, np.random.default_rng(1))
    b = t(img, np.random.default_rng(2))
    assert torch.equal(a, b)
    for mode in ("L", "RGBA", "P"):
        assert t(_image(mode=mode), None).shape == (3, 12, 12)


def test_resize_shorter_side_keeps_aspect():
    assert resize_shorter(_image(40, 30), 15).size == (20, 15)
    assert resize_shorter(_image(30, 45), 10).size == (10, 15)


def test_train_transform_seeded():
    t = train_transform(16, CLIP_MEAN, CLIP_STD)
    img = _image(64, 48)
    a = t(img, np.random.default_rng(7))
    b = t(img, np.random.default_rng(7))
    c = t(img, np.random.default_rng(8))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_transform_crop_box_within_image_and_varies():
    t = TrainTransform(8, CLIP_MEAN, CLIP_STD, scale=(0.2, 0.5), flip=False)
    boxes = {t.crop_box(50, 40, np.random.default_rng(s)) for s in range(20)}
    assert len(boxes) > 10
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 40
        area = (right - left) * (bottom - top) / (50 * 40)
        assert 0.15 < area < 0.55


def test_train_transform_flip_only():
    t = TrainTransform(8, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.0), flip=True)
    t.ratio = (40 / 40, 40 / 40)
    img = _image(8, 8)
    outs = {
        bool(torch.equal(t(img, np.random.default_rng(s)), t(img, np.random.default_rng(0))))
        for s in range(10)
    }
    assert outs == {True, False}  # some seeds flip, some do not
    no_flip = TrainTransform(8, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.0), flip=False)
    no_flip.ratio = (1.0, 1.0)
    ref = eval_transform(8, (0, 0, 0), (1, 1, 1))(img, None)
    assert torch.allclose(no_flip(img, np.random.default_rng(3)), ref)


def test_fingerprint_stable_and_parameter_sensitive():
    a = fingerprint(eval_transform(224, CLIP_MEAN, CLIP_STD))
    assert a == fingerprint(EvalTransform(224, list(CLIP_MEAN), list(CLIP_STD)))
    assert a != fingerprint(eval_transform(336, CLIP_MEAN, CLIP_STD))
    tr = fingerprint(train_transform(224, CLIP_MEAN, CLIP_STD))
    assert tr != fingerprint(train_transform(224, CLIP_MEAN, CLIP_STD, flip=False))
    assert tr != fingerprint(train_transform(224, CLIP_MEAN, CLIP_STD, scale=(0.5, 1.0)))
    assert "TrainTransform" in tr and "0x" not in tr
    with pytest.raises(TypeError, match="Cannot fingerprint"):
        fingerprint(lambda img, rng: img)


def test_transforms_pickle_and_repr():
    t = train_transform(32, CLIP_MEAN, CLIP_STD)
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 == t and repr(t2) == repr(t)
    assert repr(t).startswith("TrainTransform(size=32")


def test_strong_transform_seeded_and_stronger_than_weak():
    from vlda.data.transforms import (
        RAND_AUGMENT_OPS,
        PairTransform,
        StrongTransform,
        _rand_augment_op,
    )

    img = _image(40, 40, seed=3)
    strong = StrongTransform(16, CLIP_MEAN, CLIP_STD, scale=(1.0, 1.0), flip=False, prob=1.0)
    a = strong(img, np.random.default_rng(5))
    assert a.shape == (3, 16, 16) and torch.equal(a, strong(img, np.random.default_rng(5)))
    weak = TrainTransform(16, CLIP_MEAN, CLIP_STD, scale=(1.0, 1.0), flip=False)
    differ = sum(
        not torch.allclose(strong(img, np.random.default_rng(s)), weak(img, np.random.default_rng(s)))
        for s in range(10)
    )
    assert differ >= 8  # two ops at magnitude ~10 almost always change the pixels
    small = img.resize((16, 16))
    for op in RAND_AUGMENT_OPS:
        out = _rand_augment_op(small, op, 1.0, -1.0)
        assert out.size == (16, 16) and out.mode == "RGB"
    pair = PairTransform(weak, strong)
    both = pair(img, np.random.default_rng(1))
    assert both.shape == (2, 3, 16, 16)
    assert "StrongTransform" in fingerprint(pair) and "magnitude=10.0" in fingerprint(strong)

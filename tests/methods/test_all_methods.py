"""Every registered method: build on a tiny CLIP, take a few steps, predict, loss falls."""

import copy

import pytest
import torch

from vlda.engine.stepper import take_step
from vlda.gradients.sum import SumStrategy
from vlda.methods.base import Task
from vlda.methods.registry import METHODS, get_method

TASK = Task(("dog", "cat", "bird", "fish"), ("dog", "cat", "bird", "fish"), ("art",), "photo")


def image_batches():
    """For methods that train an image classifier: 16 + 16 tiny images with class patterns."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(4, 3, 32, 32, generator=g)
    ys = torch.arange(4).repeat(4)
    xs = patterns[ys] + 0.3 * torch.randn(16, 3, 32, 32, generator=g)
    xt = patterns[ys] + 0.3 * torch.randn(16, 3, 32, 32, generator=g) + 0.5
    src = {"images": xs, "labels": ys, "domains": torch.zeros(16, dtype=torch.long)}
    tgt = {"images": xt, "domains": torch.ones(16, dtype=torch.long)}
    return src, tgt


def batches(dim=64):
    """Cached-feature batches of the size the method's cache encoder stores."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, dim, generator=g)
    ys = torch.arange(4).repeat(4)
    fs = centers[ys] + 0.3 * torch.randn(16, dim, generator=g)
    ft = centers[ys] + 0.3 * torch.randn(16, dim, generator=g) + 0.5
    src = {"features": fs, "labels": ys, "domains": torch.zeros(16, dtype=torch.long)}
    tgt = {"features": ft, "domains": torch.ones(16, dtype=torch.long)}
    return src, tgt


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_builds_steps_predicts_and_learns(name, tiny_vit):
    cls = get_method(name)
    torch.manual_seed(0)
    if cls.backbone_kind == "image_classifier":  # classic methods: a tiny timm ResNet
        from vlda.models.classifier import tiny_image_backbone

        method = cls(tiny_image_backbone(), TASK, cls.make_params({}))
        src, tgt = image_batches()
    elif not cls.uses_feature_cache:  # fine-tunes CLIP's image tower (CMKD): images, own copy
        method = cls(copy.deepcopy(tiny_vit), TASK, cls.make_params({}))
        src, tgt = image_batches()
    else:
        method = cls(tiny_vit, TASK, cls.make_params({}))
        src, tgt = batches(method.cache_encoder().embed_dim)
    method.setup(torch.device("cpu"))
    feats = method.image_features(src)
    logits = method.logits(feats)
    assert logits.shape == (16, 4) and torch.isfinite(logits).all()
    if not method.trains:
        assert method.trainable_parameters() == []
        return
    params = method.trainable_parameters()
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    weights = method.loss_weights()

    def total():
        with torch.no_grad():
            return sum(weights.get(k, 1.0) * v for k, v in method.losses(src, tgt).items()).item()

    before = total()
    for _ in range(15):
        take_step(SumStrategy(), method.objectives(src, tgt), params, opt)
    assert total() < before
    state = method.trainable_state_dict()
    assert state and all(not t.requires_grad for t in state.values())
    method.load_trainable_state_dict(state)


def test_unknown_method_and_option():
    with pytest.raises(ValueError, match="available"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown option"):
        get_method("dapl").make_params({"tua": 0.5})

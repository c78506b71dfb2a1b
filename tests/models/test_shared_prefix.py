"""Encoding a prefix shared by many prompts once equals the batched text encoder."""

import pytest
import torch

from vlda.models.prompt_learner import PromptConfig, PromptLearner
from vlda.models.shared_prefix import (
    can_share_prefix,
    encode_with_shared_prefix,
    prompt_features,
    supports_shared_prefix,
)

NAMES = ["dog", "cat", "alarm clock", "bird", "file cabinet"]


def learner(backbone, **kw):
    torch.manual_seed(0)
    cfg = PromptConfig(**{"n_ctx": 4, "n_domain_ctx": 3, "template": "{classname} {domain}.", **kw})
    return PromptLearner(backbone, NAMES, ["art", "real world", "clipart"], cfg)


@pytest.mark.parametrize("domains", [[0], [2], [0, 1, 2]])
def test_features_and_gradients_equal_the_batched_path(tiny_vit, domains):
    pl = learner(tiny_vit)
    assert can_share_prefix(pl)
    a, b = pl(domains), prompt_features(pl, domains)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(a)
    params = [pl.ctx, *pl.domain_ctx]
    ga = torch.autograd.grad((a * w).sum(), params, allow_unused=True)
    gb = torch.autograd.grad((b * w).sum(), params, allow_unused=True)
    for x, y in zip(ga, gb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:  # fp32 rounding of different matmul shapes; exact in float64 below
            assert float((x - y).norm() / y.norm()) < 1e-5


@pytest.mark.parametrize("p", [1, 8])
def test_exact_in_float64(p):
    from vlda.models.tiny import tiny_backbone

    bb = tiny_backbone("vit").double()
    pl = learner(bb).double()  # 1 + 4 + 3 = 8 shared positions; any shorter prefix works too
    emb, eot = pl.prompt_embeddings([1])
    want = bb.encode_text_embeddings(emb, eot)
    got = encode_with_shared_prefix(bb, emb[:1, :p], emb[None, :, p:], eot[None])[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("domains", [[1], [0, 2]])
def test_class_specific_context_shares_only_the_start_token(tiny_vit, domains):
    csc = learner(tiny_vit, class_specific=True)
    assert can_share_prefix(csc)
    a, b = csc(domains), prompt_features(csc, domains)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(a)
    params = [csc.ctx, *csc.domain_ctx]
    ga = torch.autograd.grad((a * w).sum(), params, allow_unused=True)
    gb = torch.autograd.grad((b * w).sum(), params, allow_unused=True)
    for x, y in zip(ga, gb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert float((x - y).norm() / y.norm()) < 1e-5


def test_falls_back_to_the_batched_path(tiny_vit):
    full = learner(tiny_vit)
    full.cut_at_eot = False
    assert not can_share_prefix(full)


def test_backbone_support():
    from vlda.models.tiny import tiny_backbone

    assert supports_shared_prefix(tiny_backbone("resnet"))  # same causal text tower
    hf = tiny_backbone("hf")
    assert not supports_shared_prefix(hf)
    pl = learner(hf)
    torch.testing.assert_close(prompt_features(pl, [0, 1]), pl([0, 1]))


def test_what_follows_an_eot_is_never_seen():
    """Prompts of different lengths share one batch: the padding after a short prompt's EOT
    (here random garbage) must not change its feature, in any layer."""
    from vlda.models.tiny import tiny_backbone

    bb = tiny_backbone("vit").double()
    pl = learner(bb).double()
    emb, eot = pl.prompt_embeddings([0, 1])
    assert len(set(eot.tolist())) > 1  # the batch really mixes lengths
    p = 8
    prefix = emb.reshape(2, len(NAMES), *emb.shape[1:])[:, 0, :p]
    suffix = emb.reshape(2, len(NAMES), *emb.shape[1:])[:, :, p:].clone()
    clean = encode_with_shared_prefix(bb, prefix, suffix, eot.reshape(2, -1))
    rel = eot.reshape(2, -1) - p
    positions = torch.arange(suffix.shape[2])
    after = positions > rel.unsqueeze(-1)  # [2, C, S]
    suffix[after] = torch.randn(int(after.sum()), suffix.shape[-1], dtype=suffix.dtype) * 10
    dirty = encode_with_shared_prefix(bb, prefix, suffix, eot.reshape(2, -1))
    torch.testing.assert_close(dirty, clean, rtol=1e-12, atol=1e-12)
    want = bb.encode_text_embeddings(emb, eot).reshape(2, len(NAMES), -1)
    torch.testing.assert_close(clean, want, rtol=1e-12, atol=1e-12)

import pytest
import torch

from vlda.models.backbone import clip_tokenize
from vlda.models.prompt_learner import PromptConfig, PromptLearner

CLASSES = ["dog", "alarm clock", "cat"]


def test_shapes_and_trainable_parts(tiny_vit):
    cfg = PromptConfig(n_ctx=4, n_domain_ctx=2, class_specific=True, template="{classname} , a {domain} image.")
    pl = PromptLearner(tiny_vit, CLASSES, ["art", "clip art"], cfg)
    assert pl.ctx.shape == (3, 4, tiny_vit.text_width)
    assert [tuple(p.shape) for p in pl.domain_ctx] == [(2, tiny_vit.text_width)] * 2
    feats = pl()
    assert feats.shape == (2, 3, tiny_vit.embed_dim)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2, 3))
    feats.sum().backward()
    assert pl.ctx.grad is not None and all(p.grad is not None for p in pl.domain_ctx)
    assert [n for n, p in pl.named_parameters()] == ["ctx", "domain_ctx.0", "domain_ctx.1"]


def test_prompt_equals_manual_token_replacement(tiny_vit):
    """Independent reference: tokenise the full text, overwrite the X placeholders by hand."""
    cfg = PromptConfig(n_ctx=3, n_domain_ctx=2, template="{classname} , a {domain} image.")
    pl = PromptLearner(tiny_vit, CLASSES, ["sketch", "real world"], cfg)
    got = pl([1])[0]
    texts = [f"X X X X X {c} , a real world image." for c in CLASSES]
    tokens = clip_tokenize(texts)
    emb = tiny_vit.embed_tokens(tokens).clone()
    emb[:, 1:4] = pl.ctx.detach()
    emb[:, 4:6] = pl.domain_ctx[1].detach()
    ref = tiny_vit.encode_text_embeddings(emb, tokens.argmax(-1))  # full 77-token pass
    torch.testing.assert_close(got, torch.nn.functional.normalize(ref, dim=-1), rtol=1e-5, atol=1e-5)


def test_cut_at_eot_is_exact(tiny_vit):
    pl = PromptLearner(tiny_vit, CLASSES, ["a", "b"], PromptConfig(n_ctx=4, n_domain_ctx=4))
    cut = pl()
    pl.cut_at_eot = False
    torch.testing.assert_close(pl(), cut, rtol=1e-5, atol=1e-5)


def test_init_from_words(tiny_vit):
    pl = PromptLearner(tiny_vit, CLASSES, ["x"], PromptConfig(init="a photo of a"))
    assert pl.n_ctx == 4
    words = tiny_vit.embed_tokens(clip_tokenize(["a photo of a"]))[0, 1:5]
    torch.testing.assert_close(pl.ctx.detach(), words)


def test_random_init_std(tiny_vit):
    torch.manual_seed(0)
    pl = PromptLearner(tiny_vit, CLASSES, ["x"], PromptConfig(n_ctx=16, class_specific=True))
    assert abs(pl.ctx.std().item() - 0.02) < 0.003


def test_needs_classes_and_domains(tiny_vit):
    with pytest.raises(ValueError):
        PromptLearner(tiny_vit, [], ["x"], PromptConfig())

"""DAPL's losses against a hand computation written out in the test."""

import math

import torch

from vlda.methods.base import Task, masked_mean
from vlda.methods.dapl import DAPL, DAPLParams

TASK = Task(("dog", "cat", "bird"), ("dog", "cat", "bird"), ("art",), "photo")


def make(tiny_vit, **kw):
    torch.manual_seed(0)
    m = DAPL(tiny_vit, TASK, DAPLParams(n_ctx=4, n_domain_ctx=2, **kw))
    m.setup(torch.device("cpu"))
    return m


def hand_losses(m, fs, ys, ft, tau, T=1.0):
    """Straightforward per-sample loops, no batching tricks."""
    scale = m.backbone.logit_scale
    # learned prompts, per domain, by the literal text the official code builds
    text = m.prompt_learner().detach()  # [2, C, D]
    zs_texts = [f"a photo of a {c}." for c in TASK.prompt_names]
    zs = m.backbone.encode_texts(zs_texts)
    fs = torch.nn.functional.normalize(fs, dim=-1)
    ft = torch.nn.functional.normalize(ft, dim=-1)
    src = []
    for f, y in zip(fs, ys, strict=True):
        logits = [scale * float(f @ text[0, k]) for k in range(3)]
        lse = math.log(sum(math.exp(v) for v in logits))
        src.append(lse - logits[int(y)])
    num, den = 0.0, 0.0
    for f in ft:
        zl = [scale * float(f @ zs[k]) / T for k in range(3)]
        z = sum(math.exp(v) for v in zl)
        probs = [math.exp(v) / z for v in zl]
        conf = max(probs)
        label = probs.index(conf)
        if conf >= tau:
            logits = [scale * float(f @ text[1, k]) for k in range(3)]
            lse = math.log(sum(math.exp(v) for v in logits))
            num += lse - logits[label]
            den += 1
    return sum(src) / len(src), (num / den if den else 0.0), den


def test_losses_match_hand_computation(tiny_vit):
    m = make(tiny_vit, tau=0.34)
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(5, 64, generator=g), torch.randn(6, 64, generator=g)
    ys = torch.tensor([0, 1, 2, 1, 0])
    src = {"features": fs, "labels": ys, "domains": torch.zeros(5, dtype=torch.long)}
    tgt = {"features": ft, "domains": torch.ones(6, dtype=torch.long)}
    out = m.losses(src, tgt)
    ref_s, ref_t, n_pass = hand_losses(m, fs, ys, ft, tau=0.34)
    assert n_pass > 0
    assert abs(out["source_ce"].item() - ref_s) < 1e-4
    assert abs(out["target_pl"].item() - ref_t) < 1e-4
    assert m.loss_weights() == {"source_ce": 1.0, "target_pl": 1.0}


def test_no_pseudo_label_passes_tau_gives_zero_not_nan(tiny_vit):
    m = make(tiny_vit, tau=1.0)  # a softmax over 3 classes never reaches 1.0 here
    ft = torch.randn(4, 64)
    tgt = {"features": ft, "domains": torch.ones(4, dtype=torch.long)}
    src = {"features": torch.randn(2, 64), "labels": torch.tensor([0, 1]), "domains": torch.zeros(2, dtype=torch.long)}
    objs = m.objectives(src, tgt)
    out = objs.losses()
    assert out["target_pl"].item() == 0.0
    (out["source_ce"] + out["target_pl"]).backward()
    assert torch.isfinite(m.prompt_learner.ctx.grad).all()
    assert objs.metrics["pl_mask_rate"] == 0.0


def test_masked_mean():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert masked_mean(v, torch.tensor([True, False, True])).item() == 2.0
    assert masked_mean(v, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_multi_source_uses_each_sources_block(tiny_vit):
    task = Task(("dog", "cat"), ("dog", "cat"), ("art", "clipart"), "photo")
    torch.manual_seed(0)
    m = DAPL(tiny_vit, task, DAPLParams(n_ctx=2, n_domain_ctx=2, tau=0.0))
    m.setup(torch.device("cpu"))
    text = m.prompt_learner()
    f = torch.nn.functional.normalize(torch.randn(2, 64), dim=-1)
    src = {"features": f, "labels": torch.tensor([0, 1]), "domains": torch.tensor([0, 1])}
    tgt = {"features": f, "domains": torch.tensor([2, 2])}
    scale = tiny_vit.logit_scale
    logits = torch.stack([scale * f[0] @ text[0].t(), scale * f[1] @ text[1].t()])
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(m.losses(src, tgt)["source_ce"], ref)
    # prediction uses the target (last) block
    torch.testing.assert_close(m.logits(f), scale * f @ text[2].t())


def test_prompts_tokenise_like_the_official_code(tiny_vit):
    m = make(tiny_vit)
    assert m.prompt_learner.texts[0] == "X X X X X X dog , a art image.."
    assert m.prompt_learner.texts[3] == "X X X X X X dog , a photo image.."


def test_shared_prefix_path_gives_the_same_losses(tiny_vit):
    g = torch.Generator().manual_seed(2)
    src = {"features": torch.randn(4, 64, generator=g), "labels": torch.tensor([0, 1, 2, 0]),
           "domains": torch.zeros(4, dtype=torch.long)}
    tgt = {"features": torch.randn(4, 64, generator=g), "domains": torch.ones(4, dtype=torch.long)}
    fast = make(tiny_vit, tau=0.0)
    slow = make(tiny_vit, tau=0.0, shared_prefix=False)
    a, b = fast.losses(src, tgt), slow.losses(src, tgt)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.logits(src["features"]), slow.logits(src["features"]), rtol=1e-4, atol=1e-4)

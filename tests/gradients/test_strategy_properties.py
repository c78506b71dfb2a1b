"""Properties every registered gradient strategy must have, parametrised over the registry, so
that a new strategy inherits these tests. Exceptions are declared by the strategy itself
(``sum_without_conflict`` / ``sum_options``, ``scale_invariant`` /
``scale_invariant_options``, see :class:`vlda.gradients.base.GradientStrategy`)."""

import math

import pytest
import torch

from vlda.engine.stepper import take_step
from vlda.gradients.base import Objectives
from vlda.gradients.registry import STRATEGIES, get_strategy

NAMES = sorted(STRATEGIES)
WEIGHTS = {"source_ce": 1.0, "target_pl": 0.7}


class Toy:
    """Shared θ [6]; each objective has its own φ [3]. ``L_i = c (k_i/2 ‖θ - m_i‖² + ½‖φ_i - θ[:3]‖²
    + <v_i, θ>)``: smooth, with gradients on θ that conflict or not as ``m``, ``v`` are chosen."""

    def __init__(self, conflict: bool, scale: float = 1.0, seed: int = 0, shift: float = 0.0,
                 names=("source_ce", "target_pl"), dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.names = list(names)
        self.theta = torch.nn.Parameter(0.1 * torch.randn(6, generator=g, dtype=dtype))
        self.phi = {n: torch.nn.Parameter(0.1 * torch.randn(3, generator=g, dtype=dtype)) for n in self.names}
        base = torch.rand(6, generator=g, dtype=dtype) + 1.0
        self.m = {}
        for i, n in enumerate(self.names):
            sign = -1.0 if (conflict and i % 2) else 1.0
            self.m[n] = sign * base * (1.0 + 0.5 * i) + 0.05 * torch.randn(6, generator=g, dtype=dtype) + shift
        self.k = {n: 1.0 + 0.3 * i for i, n in enumerate(self.names)}
        self.scale = scale

    @property
    def params(self):
        return [self.theta, *self.phi.values()]

    def loss(self, n):
        t, p = self.theta, self.phi[n]
        return self.scale * (0.5 * self.k[n] * ((t - self.m[n]) ** 2).sum() + 0.5 * ((p - t[:3]) ** 2).sum())

    def objectives(self, weights=WEIGHTS):
        fns = {n: (lambda n=n: self.loss(n)) for n in self.names}
        return Objectives(lambda: {n: f() for n, f in fns.items()}, closures=lambda: fns,
                          shared=[self.theta], specific={n: [self.phi[n]] for n in self.names}, weights=weights)

    def shared_grads(self):
        return {n: torch.autograd.grad(self.loss(n), self.theta)[0] for n in self.names}


def update(strategy, toy, scaler=None):
    """The gradients an engine step leaves (lr 0: the parameters stay)."""
    opt = torch.optim.SGD(toy.params, lr=0.0)
    diag = take_step(strategy, toy.objectives(), toy.params, opt, scaler)
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in toy.params], diag


def weighted_sum(toy):
    total = sum(WEIGHTS.get(n, 1.0) * toy.loss(n) for n in toy.names)
    return list(torch.autograd.grad(total, toy.params))


def strategy(name, **extra):
    return get_strategy({"name": name, **extra})


@pytest.mark.parametrize("name", NAMES)
def test_without_conflict_the_update_is_the_weighted_sum(name):
    toy = Toy(conflict=False)
    g = toy.shared_grads()
    assert float(g["source_ce"] @ g["target_pl"]) > 0  # not vacuous: they agree
    cls = STRATEGIES[name]
    options = {} if cls.sum_without_conflict else cls.sum_options
    assert cls.sum_without_conflict or options, f"{name} must say when it is the weighted sum"
    got, _ = update(strategy(name, **options), toy)
    for a, b in zip(got, weighted_sum(toy), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_a_common_scale_of_the_losses_scales_the_update(name):
    c = 3.7
    cls = STRATEGIES[name]
    options = {} if cls.scale_invariant else cls.scale_invariant_options
    plain, _ = update(strategy(name, **options), Toy(conflict=True))
    scaled, _ = update(strategy(name, **options), Toy(conflict=True, scale=c))
    assert any(float(p.norm()) > 0 for p in plain)
    for a, b in zip(scaled, plain, strict=True):
        torch.testing.assert_close(a, c * b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_conflict_changes_the_update_unless_the_strategy_is_the_sum(name):
    """Guards the two tests above from passing because a strategy never does anything."""
    toy = Toy(conflict=True)
    g = toy.shared_grads()
    assert float(g["source_ce"] @ g["target_pl"]) < 0
    got, diag = update(strategy(name), toy)
    differs = any(not torch.allclose(a, b) for a, b in zip(got, weighted_sum(toy), strict=True))
    assert differs == (name != "sum")
    assert set(diag) >= {"loss/source_ce", "loss/target_pl", "loss/total"}


@pytest.mark.parametrize("name", NAMES)
def test_works_with_and_without_a_grad_scaler(name):
    plain, d0 = update(strategy(name), Toy(conflict=True, dtype=torch.float32))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaled, d1 = update(strategy(name), Toy(conflict=True, dtype=torch.float32), scaler)
    for a, b in zip(scaled, plain, strict=True):  # the engine unscaled .grad before the step
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert d1["amp/scale"] == 1024.0 and d1["amp/skipped"] == 0.0
    assert d1["loss/total"] == pytest.approx(d0["loss/total"], rel=1e-6)
    for key in (k for k in d0 if k.startswith("grad/")):  # diagnostics see unscaled gradients
        assert d1[key] == pytest.approx(d0[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("name", NAMES)
def test_an_overflowing_step_is_skipped_by_the_scaler(name):
    toy = Toy(conflict=True, dtype=torch.float32)
    toy.scale = 1e36  # loss x 1024 overflows fp32 in the gradients
    before = [p.detach().clone() for p in toy.params]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(toy.params, lr=0.1)
    diag = take_step(strategy(name), toy.objectives(), toy.params, opt, scaler)
    assert diag["amp/skipped"] == 1.0 and scaler.get_scale() < 1024.0
    assert all(torch.equal(a, b) for a, b in zip(before, toy.params, strict=True))


def test_ghpp_leaves_exactly_ninety_degrees_between_the_harmonised_gradients():
    """GH++ rotates g1 by β = k(θ - 90°) and g2 by θ - 90° - β towards each other; its weights
    are the chords of those rotations (w1 = 1 + |r1 - ĝ1|, w2 = 1 - |r2 - ĝ2|). Rebuild the
    rotated directions from the strategy's weights and check they are orthogonal."""
    for seed in range(20):
        toy = Toy(conflict=True, seed=seed)
        g = toy.shared_grads()
        k = 0.1 + 0.04 * seed
        _, diag = update(strategy("ghpp", k=k), toy)
        u1 = g["source_ce"] / g["source_ce"].norm()
        u2 = g["target_pl"] / g["target_pl"].norm()
        cos = float(u1 @ u2)
        assert cos < 0
        theta = math.acos(cos)
        e2 = (u2 - cos * u1) / (u2 - cos * u1).norm()
        beta = k * (theta - math.pi / 2)
        r1 = math.cos(beta) * u1 + math.sin(beta) * e2
        r2 = math.cos(math.pi / 2 + beta) * u1 + math.sin(math.pi / 2 + beta) * e2
        assert abs(float(r1 @ r2)) < 1e-12  # exactly 90°
        assert diag["grad/w/source_ce"] - 1 == pytest.approx(float((r1 - u1).norm()), rel=1e-9)
        assert 1 - diag["grad/w/target_pl"] == pytest.approx(float((r2 - u2).norm()), rel=1e-9)


def test_pcgrad_result_does_not_conflict_with_any_input():
    """Two objectives (the PCGrad paper's setting): the combined update on the shared
    parameters has a non-negative inner product with each objective's weighted gradient."""
    for seed in range(50):
        toy = Toy(conflict=True, seed=seed, shift=0.3 * (seed % 5))
        g = toy.shared_grads()
        got, diag = update(strategy("pcgrad", seed=seed), toy)
        for n in toy.names:
            assert float(got[0] @ (WEIGHTS[n] * g[n])) >= -1e-12
        assert diag["grad/conflict"] in (0.0, 1.0)


# -- distributed: every process takes the step of the averaged objectives --------------------


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = {}
        for name in NAMES:
            toy = Toy(conflict=True, seed=0, shift=0.7 * rank)  # each process sees other data
            out[name] = update(strategy(name), toy)[0]
        torch.save(out, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


class MeanToy(Toy):
    """One process holding both processes' data: each objective is the mean of the two."""

    def __init__(self):
        super().__init__(conflict=True, seed=0)
        self.other = Toy(conflict=True, seed=0, shift=0.7)
        self.other.theta, self.other.phi = self.theta, self.phi

    def loss(self, n):
        return 0.5 * (super().loss(n) + self.other.loss(n))


def test_two_processes_take_the_step_of_the_averaged_objectives(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    for name in NAMES:
        want, _ = update(strategy(name), MeanToy())
        for a, b, w in zip(r0[name], r1[name], want, strict=True):
            assert torch.equal(a, b), name  # every process: the same step
            torch.testing.assert_close(a, w, rtol=1e-9, atol=1e-12)

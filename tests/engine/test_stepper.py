"""The engine owns the step: strategies only write .grad; unscale -> clip -> step -> update."""

import pytest
import torch

from vlda.engine.stepper import Stepper, take_step
from vlda.gradients.base import GradientStrategy, Objectives, StepContext
from vlda.gradients.registry import STRATEGIES, get_strategy


def _problem():
    w = torch.nn.Parameter(torch.tensor([3.0, -4.0, 12.0]))
    objs = Objectives(lambda: {"a": (w**2).sum(), "b": w.sum()}, shared=[w])
    return w, objs


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategies_never_step_the_optimizer(name, monkeypatch):
    w, v = torch.nn.Parameter(torch.tensor([3.0, -4.0])), torch.nn.Parameter(torch.tensor([1.0]))
    fns = {"source_ce": lambda: (w**2).sum() + v.sum(), "target_pl": lambda: (w - 5).pow(2).sum()}
    objs = Objectives(closures=lambda: fns, shared=[w], specific={"source_ce": [v]})
    opt = torch.optim.SGD([w, v], lr=0.1)
    monkeypatch.setattr(opt, "step", lambda *a, **k: pytest.fail("a strategy stepped the optimizer"))
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda *a, **k: pytest.fail("a strategy used the scaler"))
    start = w.detach().clone()
    get_strategy(name).compute(objs, [w, v], StepContext())
    assert w.grad is not None and torch.equal(w.detach(), start)


def test_clipping_bounds_the_unscaled_gradient_norm():
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=256.0)):
        w, objs = _problem()
        raw = torch.autograd.grad((w**2).sum() + w.sum(), w)[0]
        opt = torch.optim.SGD([w], lr=0.0)
        diag = take_step(get_strategy("sum"), objs, [w], opt, scaler, clip_grad_norm=1.0)
        assert diag["grad/total_norm"] == pytest.approx(float(raw.norm()), rel=1e-6)  # before clipping
        assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-5)
        torch.testing.assert_close(w.grad, raw / raw.norm(), rtol=1e-5, atol=1e-6)


def test_the_step_uses_the_learning_rate_on_the_written_gradient():
    w, objs = _problem()
    start = w.detach().clone()
    opt = torch.optim.SGD([w], lr=0.1)
    stepper = Stepper(get_strategy("sum"), [w], opt)
    stepper.step(objs)
    torch.testing.assert_close(w.detach(), start - 0.1 * (2 * start + 1))
    state = stepper.state_dict()
    assert set(state) == {"optimizer", "scaler", "strategy"}


def test_a_strategy_only_writes_grad(monkeypatch):
    class Half(GradientStrategy):
        name = "half"

        def compute(self, objectives, params, ctx):
            for p, g in zip(params, torch.autograd.grad(sum(objectives.losses().values()), params), strict=True):
                p.grad = 0.5 * g
            return {"loss/total": 0.0}

    w, objs = _problem()
    start = w.detach().clone()
    take_step(Half(), objs, [w], torch.optim.SGD([w], lr=1.0))
    torch.testing.assert_close(w.detach(), start - 0.5 * (2 * start + 1))

import math

import pytest
import torch

from vlda.config import ConfigError, ScheduleConfig, load_config
from vlda.engine.schedule import lr_at


def test_cosine_by_step_with_linear_warmup():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, warmup_lr=0.0)
    assert lr_at(0, 110, 1.0, cfg) == 0.0
    assert lr_at(5, 110, 1.0, cfg) == pytest.approx(0.5)
    assert lr_at(10, 110, 1.0, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, 1.0, cfg) == pytest.approx(0.5)
    assert lr_at(109, 110, 1.0, cfg) == pytest.approx((1 + math.cos(math.pi * 99 / 100)) / 2)


def test_dassl_per_iteration_cosine_matches_torch_scheduler_stepped_per_iteration():
    """The official trainers: CosineAnnealingLR(T_max=MAX_EPOCH) stepped every iteration
    (after a one-step constant warm-up). Reference: torch's own scheduler."""
    period, lr = 25, 3e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=period)
    cfg = ScheduleConfig(name="dassl_per_iter_cosine", period=period, warmup_steps=1,
                         warmup_type="constant", warmup_lr=1e-5)
    assert lr_at(0, 1000, lr, cfg) == 1e-5
    for step in range(1, 200):
        # step s of ours = t = s - 1 scheduler steps after the warm-up
        assert lr_at(step, 1000, lr, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
        opt.step()
        sched.step()
    # it oscillates: back at the base lr after 2 * period iterations
    assert lr_at(1 + 2 * period, 1000, lr, cfg) == pytest.approx(lr)


def test_schedule_config_errors():
    base = ["data.benchmark=officehome", "data.source=[art]", "data.target=clipart"]
    with pytest.raises(ConfigError, match=r"schedule.name = 'cosin' is not valid: expected one of 'cosine'"):
        load_config(None, [*base, "schedule.name=cosin"])
    with pytest.raises(ConfigError, match="period"):
        load_config(None, [*base, "schedule.name=dassl_per_iter_cosine"])


def test_inv_schedule_matches_tllib_lambda_lr():
    # TLlib: LambdaLR(opt, lambda x: lr * (1 + gamma * x) ** (-decay)) on a group of lr 1.0
    lr, gamma, decay = 0.01, 0.001, 0.75
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda x: lr * (1.0 + gamma * float(x)) ** (-decay))
    cfg = ScheduleConfig(name="inv", gamma=gamma, power=decay)
    for step in range(0, 3000, 7):
        assert lr_at(step, 3000, lr, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        for _ in range(7):
            opt.step()
            sched.step()

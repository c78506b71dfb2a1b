"""Mixed precision and data-parallel together (issue #14 item 3): the GradScaler's unscale and
skip decisions are the same on every process. Two CPU processes (gloo), a CPU GradScaler."""

from __future__ import annotations

import pytest
import torch

from vlda.engine.stepper import Stepper
from vlda.gradients.base import GradientStrategy, Objectives
from vlda.gradients.sum import SumStrategy


class _LocalOnly(GradientStrategy):
    """A strategy that writes each process's own gradients without averaging them (the case the
    engine must still handle: the skip decision is agreed on after unscaling)."""

    name = "local_only"

    def compute(self, objectives, params, ctx):
        loss = objectives.losses()["l"]
        ctx.scale(loss).backward()
        return {"loss/total": float(loss)}


SCENARIOS = [(1, "sum"), (1, "local_only"), (-1, "sum")]  # (the rank with an inf, strategy)


def _step(rank: int, inf_on: int, strategy: str) -> dict:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    x = torch.tensor([0.5, 1.0, -1.0]) * (rank + 1)
    bad = float("inf") if rank == inf_on else 1.0
    objectives = Objectives(lambda: {"l": (w * x).sum() * bad})
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    strat = SumStrategy() if strategy == "sum" else _LocalOnly()
    diag = Stepper(strat, [w], torch.optim.SGD([w], lr=0.1), scaler).step(objectives)
    return {"w": w.detach().clone(), "scale": scaler.get_scale(), "skipped": diag["amp/skipped"]}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save([_step(rank, *s) for s in SCENARIOS], f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def steps(tmp_path_factory) -> list[list[dict]]:
    """``steps[scenario][rank]``: one step of every scenario, in one 2-process group."""
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("amp")
    mp.start_processes(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, start_method="spawn")
    per_rank = [torch.load(tmp / f"{r}.pt", weights_only=True) for r in range(2)]
    return [list(t) for t in zip(*per_rank, strict=True)]


@pytest.mark.parametrize("scenario", [0, 1], ids=["sum", "local_only"])
def test_an_inf_on_one_process_makes_every_process_skip(steps, scenario):
    for o in steps[scenario]:
        assert o["skipped"] == 1.0 and o["scale"] == 512.0  # skipped, scale halved, on both
        assert torch.equal(o["w"], torch.tensor([1.0, -2.0, 3.0]))


def test_without_inf_every_process_takes_the_averaged_step(steps):
    mean_x = torch.tensor([0.5, 1.0, -1.0]) * 1.5  # the gradient, averaged over the two processes
    for o in steps[2]:
        assert o["skipped"] == 0.0 and o["scale"] == 1024.0
        torch.testing.assert_close(o["w"], torch.tensor([1.0, -2.0, 3.0]) - 0.1 * mean_x)

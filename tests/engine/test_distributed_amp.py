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


def _worker(rank: int, world: int, init_file: str, out_dir: str, inf_on: int, strategy: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        x = torch.tensor([0.5, 1.0, -1.0]) * (rank + 1)
        bad = float("inf") if rank == inf_on else 1.0
        objectives = Objectives(lambda: {"l": (w * x).sum() * bad})
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        strat = SumStrategy() if strategy == "sum" else _LocalOnly()
        stepper = Stepper(strat, [w], torch.optim.SGD([w], lr=0.1), scaler)
        diag = stepper.step(objectives)
        torch.save({"w": w.detach().clone(), "scale": scaler.get_scale(), "skipped": diag["amp/skipped"]},
                   f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(tmp_path, inf_on: int, strategy: str) -> list[dict]:
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), inf_on, strategy), nprocs=2,
                       start_method="spawn")
    return [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("strategy", ["sum", "local_only"])
def test_an_inf_on_one_process_makes_every_process_skip(tmp_path, strategy):
    out = _run(tmp_path, inf_on=1, strategy=strategy)
    for o in out:
        assert o["skipped"] == 1.0 and o["scale"] == 512.0  # skipped, scale halved, on both
        assert torch.equal(o["w"], torch.tensor([1.0, -2.0, 3.0]))


def test_without_inf_every_process_takes_the_averaged_step(tmp_path):
    out = _run(tmp_path, inf_on=-1, strategy="sum")
    mean_x = torch.tensor([0.5, 1.0, -1.0]) * 1.5  # the gradient, averaged over the two processes
    for o in out:
        assert o["skipped"] == 0.0 and o["scale"] == 1024.0
        torch.testing.assert_close(o["w"], torch.tensor([1.0, -2.0, 3.0]) - 0.1 * mean_x)

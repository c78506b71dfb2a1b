"""Global-batch BatchNorm: in two processes (gloo), each with half a batch, the outputs, the
input and weight gradients and the running statistics are those of one BatchNorm on the whole
batch; in one process a converted layer is the plain layer."""

from __future__ import annotations

import torch
from torch import nn

from vlda.models.sync_batchnorm import convert_batchnorm


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 4, 4, generator=g) * 2 + 1, torch.randn(8, 3, 4, 4, generator=g)


def _reference():
    """One process, the whole batch: output, input gradient, weight/bias gradients, stats."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
    x, dy = _data()
    x.requires_grad_(True)
    y = bn(x)
    (y * dy).sum().backward()
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bn = nn.BatchNorm2d(3, momentum=0.3)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        assert convert_batchnorm(bn) == 1 and isinstance(bn, nn.BatchNorm2d)
        x, dy = _data()
        x = x[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
        y = bn(x)
        (y * dy[rank * 4 : (rank + 1) * 4]).sum().backward()  # this rank's part of Σ_i y_i·dy_i
        # the engine averages parameter gradients over the ranks; Σ over ranks = W · average
        grads = [bn.weight.grad, bn.bias.grad]
        for g in grads:
            dist.all_reduce(g)
        torch.save({"y": y.detach(), "dx": x.grad, "dw": grads[0], "db": grads[1],
                    "mean": bn.running_mean, "var": bn.running_var}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_halves_normalise_as_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    y, dx, dw, db, mean, var = _reference()
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y)
    torch.testing.assert_close(torch.cat([p["dx"] for p in parts]), dx)
    for p in parts:
        torch.testing.assert_close(p["dw"], dw)
        torch.testing.assert_close(p["db"], db)
        torch.testing.assert_close(p["mean"], mean)
        torch.testing.assert_close(p["var"], var)


def test_in_one_process_a_converted_layer_is_the_plain_layer():
    a, b = nn.BatchNorm1d(5), nn.BatchNorm1d(5)
    convert_batchnorm(nn.Sequential(b))
    x = torch.randn(6, 5)
    assert torch.equal(a(x), b(x)) and torch.equal(a.running_var, b.running_var)
    assert a.state_dict().keys() == b.state_dict().keys()
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))

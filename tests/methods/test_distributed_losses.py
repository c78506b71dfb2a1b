"""Losses with batch statistics, data-parallel: in two processes (gloo) each holding half the
batch, the mean over the ranks of each rank's loss is the one-process loss of the whole batch,
and the input gradients, divided by the number of ranks as the engine's average does, are its
gradients. Covers the detached global normalisers (masked mean, CMKD's Gini, CDAN+E's weights)
and the differentiable global sums (MCC's confusion, AD-CLIP's batch-normalised entropy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlda.methods.adclip import entropy_term
from vlda.methods.adversarial import MultiLinearMap, conditional_adversarial_loss
from vlda.methods.base import masked_mean
from vlda.methods.cmkd import gini_impurity
from vlda.methods.mcc import mcc_loss

B, C, K = 8, 3, 4


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, C, generator=g) * 2
    feats = torch.randn(B, K, generator=g)
    values = torch.rand(B, generator=g)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # 3 on the first half, 1 on the second
    return logits, feats, values, mask


def _discriminator():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(K * C, 5), nn.ReLU(), nn.Linear(5, 1))


def _losses(logits, feats, values, mask):
    """Each loss of a (source, target) batch: the first half of the rows is the source."""
    half = len(logits) // 2
    probs = logits.softmax(-1)
    d = _discriminator()
    cdan = {
        f"cdan_{norm}": conditional_adversarial_loss(
            d, MultiLinearMap(K, C), feats[:half], logits[:half], feats[half:], logits[half:], 1.0, True, norm
        )[0]
        for norm in ("batch", "domain")
    }
    return {
        "masked_mean": masked_mean(values * logits[:, 0], mask),
        "gini": gini_impurity(probs, mask + 0.5),
        "mcc": mcc_loss(logits),
        "adclip_entropy": entropy_term(probs, "code"),
        **cdan,
    }


def _rows(x, rank):
    """Rank ``rank``'s rows of a (source, target) batch: its slice of each half."""
    half, q = len(x) // 2, len(x) // 4
    return torch.cat([x[rank * q : (rank + 1) * q], x[half + rank * q : half + (rank + 1) * q]])


def _grads(logits, feats):
    """``[∂/∂logits | ∂/∂features]`` per row (zeros where the loss does not reach)."""
    return torch.cat([torch.zeros_like(t) if t.grad is None else t.grad for t in (logits, feats)], dim=1)


def _one_process():
    out = {}
    for name in _losses(*_inputs()):
        logits, feats, values, mask = _inputs()
        loss = _losses(logits.requires_grad_(True), feats.requires_grad_(True), values, mask)[name]
        loss.backward()
        out[name] = (loss.detach(), _grads(logits, feats))
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = {}
        for name in _losses(*_inputs()):
            logits, feats, values, mask = (_rows(t, rank) for t in _inputs())
            loss = _losses(logits.requires_grad_(True), feats.requires_grad_(True), values, mask)[name]
            loss.backward()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            out[name] = (mean / world, _grads(logits, feats) / world)  # the engine averages over the ranks
        torch.save(out, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("losses")
    mp.start_processes(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, start_method="spawn")
    return [torch.load(tmp / f"{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("name", ["masked_mean", "gini", "mcc", "adclip_entropy", "cdan_batch", "cdan_domain"])
def test_the_mean_over_ranks_is_the_whole_batch_loss(two, name):
    loss, grad = _one_process()[name]
    assert grad.abs().sum() > 0
    for part in two:
        torch.testing.assert_close(part[name][0], loss)
    got = torch.zeros_like(grad)
    for rank, part in enumerate(two):  # put each rank's rows back where they came from
        half, q = B // 2, B // 4
        got[rank * q : (rank + 1) * q] = part[name][1][:q]
        got[half + rank * q : half + (rank + 1) * q] = part[name][1][q:]
    torch.testing.assert_close(got, grad)

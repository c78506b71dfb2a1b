"""Which process of a data-parallel run this is, and the few collectives the layers share.

Outside the layers of DESIGN.md (any of them may use it); imports nothing from vlda. In one
process (no process group) every function is a cheap no-op: ``rank() == 0``,
``world_size() == 1``, ``is_main()`` is true, ``shard_range(n)`` is the whole range and
``gather_rows(x)`` returns ``x``. Inside a run started by ``torchrun`` (``WORLD_SIZE > 1``),
:func:`init_from_env` joins the process group (NCCL when CUDA is there, gloo otherwise).

Sharding is contiguous and deterministic: rank ``r`` of ``W`` takes rows
``[r*n//W, (r+1)*n//W)``, so ``gather_rows`` (in rank order) rebuilds the original order.

Batch statistics that a loss normalises by (a count of confident samples, a class column sum)
must be the whole global batch's for a data-parallel run to compute what one process computes:
:func:`all_sum` gives them (without gradient), :func:`global_batch_factor` is ``W`` for losses
that *sum* over the batch (each rank's sum times ``W``, averaged over ranks, is the global sum).
:func:`average_floats` averages a rank's logged values (per-rank mean losses over equal slices
average to the global mean).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def initialised() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if initialised() else 0


def world_size() -> int:
    """The number of processes of the run (1 without a process group)."""
    return dist.get_world_size() if initialised() else 1


def is_main() -> bool:
    """Whether this process writes files, logs and progress bars (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if initialised():
        dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment says this process is one of several (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, once.

    Returns whether a group of more than one process is active afterwards. ``backend``:
    ``nccl`` when CUDA is available, ``gloo`` otherwise. With CUDA, the process's device is
    set from ``LOCAL_RANK``.
    """
    if initialised() or not launched_by_torchrun():
        return initialised()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return initialised()


def shutdown() -> None:
    """Leave the process group that :func:`init_from_env` joined (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n: int, of_rank: int | None = None, of_world: int | None = None) -> range:
    """The contiguous rows ``[r*n//W, (r+1)*n//W)`` of ``n`` that rank ``r`` of ``W`` takes."""
    r = rank() if of_rank is None else of_rank
    w = world_size() if of_world is None else of_world
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in a world of {w} processes")
    return range(r * n // w, (r + 1) * n // w)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0, in rank order, each process's ``x`` (row counts may differ).

    Shapes: ``x`` is ``(n_r, *rest)`` on rank r, with ``rest`` and dtype the same on every
    rank; the result ``(sum_r n_r, *rest)`` is returned on every rank, on ``x``'s device. gloo
    and NCCL need equal sizes, so rows are padded to the largest count and the padding dropped
    after; under NCCL the rows travel through the current GPU.
    """
    if not initialised():
        return x
    home, x = x.device, x.to(_collective_device())
    w = dist.get_world_size()
    count = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.zeros_like(count) for _ in range(w)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(home)


def _collective_device() -> torch.device:
    """Where a small tensor must live for a collective: the current GPU under NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process (picklable objects only)."""
    if not initialised():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one process (a max all-reduce)."""
    if not initialised():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_r x_r`` over the processes, without gradient (a detached copy; ``x`` in one process).

    For the normalisers of a loss that must be the global batch's: e.g. the number of confident
    target samples of a masked mean, a class column sum. Shapes: any, the same on every rank.
    """
    x = x.detach()
    if not initialised():
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out


def all_sum_grad(x: torch.Tensor) -> torch.Tensor:
    """``Σ_r x_r`` over the processes, differentiable (``x`` itself in one process).

    The backward sums every rank's gradient too, so a loss that every
    rank computes identically from global sums gets, after the engine's average over the ranks,
    exactly the gradient one process computes on the global batch. Every rank must call it in
    the same order.
    """
    if not initialised():
        return x
    return _AllSum.apply(x)


class _AllSum(torch.autograd.Function):
    """``Σ_r x_r`` forward; ``Σ_r grad_r`` backward (the adjoint of a sum over the ranks)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


def global_batch_factor() -> int:
    """``W``: the factor of a loss that *sums* over the batch, so that the mean over ranks of
    ``W · Σ_{i in slice r}`` is the sum over the global batch (1 in one process)."""
    return world_size()


def average_floats(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (same keys on every rank; one all-reduce)."""
    if not initialised() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in one process; picklable objects)."""
    if not initialised():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

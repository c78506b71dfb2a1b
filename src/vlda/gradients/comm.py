"""How a strategy averages per-objective gradients across processes.

Every strategy hands the gradients it computed to ``comm.average`` before it combines them, so
that in a distributed run every process combines the same (averaged) gradients and takes the
same step. In one process this is a no-op (:class:`LocalComm`); :class:`TorchDistributedComm`
uses ``torch.distributed.all_reduce``. :func:`default_comm` picks one from whether a process
group is initialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor


class Communicator(Protocol):
    """Averages tensors over the processes of a run, in place."""

    world_size: int

    def average(self, tensors: Sequence[Tensor]) -> None:
        """Replace each tensor by its mean over the processes (same list on every process)."""


class LocalComm:
    """One process: nothing to average."""

    world_size = 1

    def average(self, tensors: Sequence[Tensor]) -> None:
        return None


class TorchDistributedComm:
    """``torch.distributed``: one flat ``all_reduce`` (sum) per call, divided by the world size."""

    def __init__(self) -> None:
        self.world_size = dist.get_world_size()

    def average(self, tensors: Sequence[Tensor]) -> None:
        if self.world_size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def default_comm() -> Communicator:
    """:class:`TorchDistributedComm` inside an initialised process group, else :class:`LocalComm`."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributedComm()
    return LocalComm()


def filled(grads: Sequence[Tensor | None], params: Sequence[torch.nn.Parameter]) -> list[Tensor]:
    """Gradients with ``None`` replaced by zeros (so every process averages the same list)."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]

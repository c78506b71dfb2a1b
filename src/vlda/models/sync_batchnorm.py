"""BatchNorm over the global batch of a data-parallel run, on any device (CPU/gloo or CUDA/NCCL).

``torch.nn.SyncBatchNorm`` runs on GPUs only; this one is a few lines of autograd-aware
collectives, so the equivalence tests run on CPU too. In training mode inside a process group,
a converted layer normalises with the statistics of the whole global batch::

    n = Σ_r n_r,   μ = Σ_r Σ_i x_ri / n,   σ² = Σ_r Σ_i (x_ri − μ)² / n   (per channel)
    y = γ (x − μ) / sqrt(σ² + ε) + β

with the two sums taken by :func:`vlda.distributed.all_sum_grad`, whose backward sums the
gradients of every rank, so ``∂(Σ_r L_r)/∂x`` is exact; the engine then averages the
gradients over the ranks, which gives the gradient of the global mean loss. Running statistics
are updated with ``μ`` and the unbiased ``σ² · n / (n − 1)``, as one process would. In eval
mode, or outside a process group, the layer is the ordinary ``BatchNorm`` (same class, same
state dict: :func:`convert_batchnorm` only swaps ``forward``'s class).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from vlda import distributed as D


class _GlobalBatchNorm:
    """Mixin placed before a ``_BatchNorm`` class: training-mode statistics of the global batch."""

    def forward(self, x: Tensor) -> Tensor:
        bn: _BatchNorm = self  # type: ignore[assignment]
        if not (bn.training and D.initialised()):
            return _BatchNorm.forward(bn, x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        n_local = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float32, device=x.device)
        total = D.all_sum_grad(torch.cat([xf.sum(dims), n_local]))
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = xf - mean.view(shape)
        var = D.all_sum_grad(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + bn.eps).view(shape)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        if bn.track_running_stats:
            self._update_running(mean.detach(), var.detach(), float(n))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, n: float) -> None:
        bn: _BatchNorm = self  # type: ignore[assignment]
        assert bn.num_batches_tracked is not None and bn.running_mean is not None and bn.running_var is not None
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        unbiased = var * (n / max(n - 1.0, 1.0))
        bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.dtype), alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    """``Global<cls>``: the mixin before ``cls`` (one class per BatchNorm class)."""
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
    return _SYNCED[cls]


def convert_batchnorm(module: nn.Module) -> int:
    """Make every ``BatchNorm`` layer under ``module`` normalise over the global batch in
    training mode (in place: same objects, parameters, buffers and state dict; ``isinstance``
    checks still hold). Returns the number of layers converted. A no-op outside a process
    group is not needed: converted layers behave as before there."""
    n = 0
    for m in module.modules():
        if isinstance(m, _BatchNorm) and not isinstance(m, _GlobalBatchNorm):
            m.__class__ = _synced_class(type(m))
            n += 1
    return n

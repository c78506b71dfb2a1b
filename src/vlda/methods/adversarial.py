"""Pieces of the adversarial UDA methods (DANN, CDAN): gradient reversal and its schedule, the
domain discriminator, the multilinear conditioning maps and the two adversarial losses.

Each loss is a small module/function with explicit tensor inputs (TLlib's loss-level API:
``tllib/alignment/dann.py``, ``cdan.py``, ``tllib/modules/grl.py``), but without hidden step
counters: the reversal coefficient is an explicit argument computed by :func:`grl_coefficient`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda import distributed as D


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # noqa: D102
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.coeff * grad, None


def gradient_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """``R_λ``: identity forward, ``-λ · grad`` backward (Ganin & Lempitsky, ICML 2015)."""
    return _GradientReverse.apply(x, float(coeff))


def grl_coefficient(step: int, max_steps: int, alpha: float = 10.0, hi: float = 1.0, lo: float = 0.0) -> float:
    """The DANN schedule ``λ(p) = 2 (hi - lo) / (1 + exp(-α p)) - (hi - lo) + lo`` with
    ``p = step / max_steps``, rising from ``lo`` at step 0 towards ``hi``.

    Ganin et al. use ``α = 10`` and ``p`` = training progress (``max_steps`` = the run length);
    the CDAN / GH code uses ``α = 10``, ``max_steps = 10000`` (``network.calc_coeff``); TLlib's
    ``WarmStartGradientReverseLayer`` uses ``α = 1``, ``max_steps = 1000``.
    """
    p = step / max(int(max_steps), 1)
    return float(2.0 * (hi - lo) / (1.0 + math.exp(-alpha * p)) - (hi - lo) + lo)


class DomainDiscriminator(nn.Sequential):
    """``in -> hidden -> hidden -> 1`` MLP giving a domain **logit** (1 = source).

    TLlib's ``DomainDiscriminator`` (Linear-BatchNorm-ReLU twice, ``hidden = 1024``); with
    ``batch_norm=False`` ReLU + Dropout(0.5) instead, as the CDAN code's ``AdversarialNetwork``.
    It returns logits rather than sigmoid outputs so the loss is autocast-safe
    (``binary_cross_entropy_with_logits`` equals BCE on the sigmoid).
    """

    def __init__(self, in_dim: int, hidden: int = 1024, batch_norm: bool = True) -> None:
        if batch_norm:
            mid: list[nn.Module] = [nn.BatchNorm1d(hidden), nn.ReLU()]
            mid2: list[nn.Module] = [nn.BatchNorm1d(hidden), nn.ReLU()]
        else:
            mid = [nn.ReLU(), nn.Dropout(0.5)]
            mid2 = [nn.ReLU(), nn.Dropout(0.5)]
        super().__init__(nn.Linear(in_dim, hidden), *mid, nn.Linear(hidden, hidden), *mid2, nn.Linear(hidden, 1))


def entropy(probs: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-sample entropy ``-Σ_c p_c log(p_c + ε)`` ``[B]`` (TLlib ``tllib/modules/entropy.py``)."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)


def domain_adversarial_loss(
    discriminator: nn.Module, f_s: Tensor, f_t: Tensor, coeff: float
) -> tuple[Tensor, Tensor]:
    """DANN's loss on features ``f_s [B_s, K]``, ``f_t [B_t, K]``::

        L = 1/2 [ BCE(D(R_λ(f_s)), 1) + BCE(D(R_λ(f_t)), 0) ]     (means within each domain)

    as TLlib's ``DomainAdversarialLoss``. Minimising it trains ``D`` to tell the domains apart
    and, through ``R_λ``, the features to fool it. Returns ``(loss, discriminator accuracy)``.
    """
    f = gradient_reverse(torch.cat([f_s, f_t]), coeff)
    d = discriminator(f).squeeze(1).float()
    d_s, d_t = d[: len(f_s)], d[len(f_s):]
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
        + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
    )
    with torch.no_grad():
        acc = 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean())
    return loss, acc


class MultiLinearMap(nn.Module):
    """``T(f, g) = f ⊗ g``: ``[B, K]``, ``[B, C]`` -> ``[B, C·K]`` (row ``c`` holds ``g_c f``)."""

    def __init__(self, features_dim: int, n_classes: int) -> None:
        super().__init__()
        self.out_dim = features_dim * n_classes

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultiLinearMap(nn.Module):
    """``T(f, g) = (f R_f) ⊙ (g R_g) / √d`` ``[B, d]`` with fixed Gaussian ``R_f [K, d]``,
    ``R_g [C, d]`` (CDAN's randomized map for large ``K·C``; buffers, saved in checkpoints)."""

    rf: Tensor
    rg: Tensor

    def __init__(self, features_dim: int, n_classes: int, out_dim: int = 1024) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.register_buffer("rf", torch.randn(features_dim, out_dim))
        self.register_buffer("rg", torch.randn(n_classes, out_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return (f @ self.rf.to(f.dtype)) * (g @ self.rg.to(g.dtype)) / math.sqrt(self.out_dim)


def conditional_adversarial_loss(
    discriminator: nn.Module,
    conditioning: nn.Module,
    f_s: Tensor,
    logits_s: Tensor,
    f_t: Tensor,
    logits_t: Tensor,
    coeff: float,
    entropy_conditioning: bool = True,
    normalize: str = "batch",
) -> tuple[Tensor, Tensor]:
    """CDAN(+E) (Long et al., NeurIPS 2018) on features ``f [B, K]`` and logits ``[B, C]``::

        g = softmax(logits).detach();  h = R_λ(T(f, g));  d = D(h)
        L = Σ_i w_i BCE(d_i, 1[i is source]) / Σ_i w_i

    Without entropy conditioning ``w_i = 1``. With it (CDAN+E) ``w_i = 1 + exp(-H(g_i))``, so
    confident samples count more. ``normalize="batch"`` (default, TLlib's
    ``ConditionalDomainAdversarialLoss``): weights normalised over the whole batch.
    ``normalize="domain"`` (the official CDAN / GH code, ``loss.CDAN``): each domain's weights
    are normalised to sum to 1 first, so both domains count equally. In both, ``g`` and the
    weights carry no gradient (the official code also back-propagates a reversed gradient
    through the entropy weights; we do not). Returns ``(loss, discriminator accuracy)``.
    """
    if normalize not in ("batch", "domain"):
        raise ValueError(f"normalize must be 'batch' or 'domain', got {normalize!r}")
    f = torch.cat([f_s, f_t])
    g = torch.softmax(torch.cat([logits_s, logits_t]).float(), dim=1).detach()
    h = gradient_reverse(conditioning(f, g.to(f.dtype)), coeff)
    d = discriminator(h).squeeze(1).float()
    n_s = len(f_s)
    labels = torch.cat([torch.ones(n_s, device=d.device), torch.zeros(len(f_t), device=d.device)])
    bce = F.binary_cross_entropy_with_logits(d, labels, reduction="none")
    if entropy_conditioning:
        w = 1.0 + torch.exp(-entropy(g))
        if normalize == "domain":  # global sums (every rank's slice): see vlda.distributed
            w = torch.cat([w[:n_s] / D.all_sum(w[:n_s].sum()), w[n_s:] / D.all_sum(w[n_s:].sum())])
        loss = D.global_batch_factor() * (w * bce).sum() / D.all_sum(w.sum())
    elif normalize == "domain":
        loss = 0.5 * (bce[:n_s].mean() + bce[n_s:].mean())
    else:
        loss = bce.mean()
    with torch.no_grad():
        acc = ((d > 0).float() == labels).float().mean()
    return loss, acc

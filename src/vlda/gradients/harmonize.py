"""Gradient harmonisation as pure functions: GH, GH++ and PCGrad on per-objective gradients.

Everything here works on the **Gram matrix** ``G = J Jᵀ`` (``[n, n]``) of the ``n`` per-objective
gradients ``J = [g_1; ...; g_n]`` (``[n, d]``, flattened over a parameter group), and returns a
weight vector ``w`` (``[n]``) such that the harmonised update is ``w @ J = Σ_i w_i g_i``. GH and
GH++ are *defined* as such loss re-weightings; PCGrad's projected gradients are linear
combinations of the ``g_i`` too, so its weights are exact as well (TorchJD's "weighting of the
Gramian" shape). Nothing here calls ``.item()``, so no host synchronisation happens until a
caller asks for diagnostics.

GH and GH++: Huang, Song, Zhang, "Gradient Harmonization in Unsupervised Domain Adaptation",
IEEE TPAMI 2024 (arXiv 2408.00288), official code ``fuxianghuang1/GH`` (``cdan/train_image.py``).
PCGrad: Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

Example::

    >>> g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    >>> w = gh_weights(g1, g2)            # <g1,g2> = -1: w = [1 + 1/1, 1 + 1/2]
    >>> w.tolist()
    [2.0, 1.5]
    >>> combine(torch.stack([g1, g2]), w)  # g̃1 + g̃2, each projected off the other
    tensor([0.5000, 1.5000])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from vlda.gradients.base import GradientStrategy, Objectives, StepContext, loss_diagnostics
from vlda.gradients.comm import filled

_TINY = 1e-30  # guards divisions by a zero norm; a zero gradient never "conflicts" (dot = 0)


def stack(grads: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-objective gradients -> ``J`` ``[n, d]`` (each flattened)."""
    if isinstance(grads, Tensor):
        return grads.reshape(grads.shape[0], -1)
    return torch.stack([g.reshape(-1) for g in grads])


def gram(grads: Sequence[Tensor] | Tensor) -> Tensor:
    """``G_ij = <g_i, g_j>`` ``[n, n]``, accumulated in float64 so that near-orthogonal pairs
    of long gradients keep the sign of their dot product."""
    j = stack(grads)
    j = j.double() if j.dtype != torch.float64 else j
    return j @ j.t()


def cosine_matrix(g: Tensor) -> Tensor:
    """Pairwise cosines from a Gram matrix ``[n, n]`` (0 where a gradient is zero)."""
    norms = g.diagonal().clamp_min(0).sqrt()
    return g / (norms[:, None] * norms[None, :]).clamp_min(_TINY)


def gh_weights_from_gram(g: Tensor) -> Tensor:
    """GH weights ``[2]`` from the ``[2, 2]`` Gram matrix of ``(g1, g2)``.

    If ``<g1,g2> < 0`` each gradient is projected on the normal plane of the other,
    ``g̃1 = g1 - <g1,g2>/||g2||² g2`` and ``g̃2 = g2 - <g1,g2>/||g1||² g1``, and the sum is
    rewritten as a re-weighting of the two losses::

        w1 = 1 - <g1,g2>/||g1||²,   w2 = 1 - <g1,g2>/||g2||²      (both >= 1)

    otherwise ``w1 = w2 = 1``. Symmetric in the two objectives. Same formula and same
    ``dot < 0`` test as the official code (``cdan/train_image.py``, ``GH`` branch).
    """
    if g.shape != (2, 2):
        raise ValueError(f"GH harmonises exactly two objectives; got a Gram matrix {tuple(g.shape)}")
    dot = g[0, 1]
    w = 1 - dot / g.diagonal().clamp_min(_TINY)
    return torch.where(dot < 0, w, torch.ones_like(w))


def gh_weights(g1: Tensor, g2: Tensor) -> Tensor:
    """GH weights ``[w1, w2]`` (float64) of two gradients of any (equal) shape. See
    :func:`gh_weights_from_gram`."""
    return gh_weights_from_gram(gram([g1, g2]))


def ghpp_weights_from_gram(g: Tensor, k: float = 0.5) -> Tensor:
    """GH++ weights ``[2]`` from the ``[2, 2]`` Gram matrix of ``(g1, g2)``.

    If ``<g1,g2> < 0``, with ``θ = arccos(cos(g1, g2))`` in degrees (``θ ∈ (90°, 180°]``),
    ``β = k (θ - 90°)``::

        w1 = 1 + 2 sin(β / 2)
        w2 = 1 + 2 sin((β + 90° - θ) / 2)  =  1 - 2 sin((1 - k)(θ - 90°) / 2)

    otherwise ``w1 = w2 = 1``. ``g1`` is rotated by ``β`` and ``g2`` by ``θ - 90° - β``, so the
    angle becomes exactly 90°; ``2 sin(φ/2)`` is the chord of a rotation by ``φ``, turned into a
    scalar loss weight. **Asymmetric**: ``w1 >= 1 >= w2`` (``w2`` can be negative: down to
    ``1 - √2`` at ``θ = 180°, k = 0``), so which objective is first matters. The official CDAN
    and GVB code pass the transfer (adaptation) loss first, MCD / SSRT / DWL the classification
    loss. ``k`` is the official ``--trade_off_1`` ("harmonic range", default 0.5). Same formula
    as the official ``GH_new`` branch of ``cdan/train_image.py``; we clamp the cosine to
    ``[-1, 1]`` before ``arccos`` (rounding can push it past -1, where ``acos`` gives NaN).
    """
    if g.shape != (2, 2):
        raise ValueError(f"GH++ harmonises exactly two objectives; got a Gram matrix {tuple(g.shape)}")
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"GH++: k must be in [0, 1], got {k}")
    dot = g[0, 1]
    cos = cosine_matrix(g)[0, 1].clamp(-1.0, 1.0)
    theta = torch.rad2deg(torch.arccos(cos))
    beta = k * (theta - 90.0)
    w1 = 1 + 2 * torch.sin(torch.deg2rad(0.5 * beta))
    w2 = 1 + 2 * torch.sin(torch.deg2rad(0.5 * (beta + 90.0 - theta)))
    w = torch.stack([w1, w2])
    return torch.where(dot < 0, w, torch.ones_like(w))


def ghpp_weights(g1: Tensor, g2: Tensor, k: float = 0.5) -> Tensor:
    """GH++ weights ``[w1, w2]`` (float64) of two gradients; the order matters. See
    :func:`ghpp_weights_from_gram`."""
    return ghpp_weights_from_gram(gram([g1, g2]), k)


def pcgrad_weights_from_gram(g: Tensor, rng: np.random.Generator | None = None) -> Tensor:
    """PCGrad as weights ``[n]`` from the ``[n, n]`` Gram matrix.

    For each objective ``i``: ``g_i^PC = g_i``; for ``j ≠ i`` in a random order, if
    ``<g_i^PC, g_j> < 0`` then ``g_i^PC ← g_i^PC - <g_i^PC, g_j>/||g_j||² g_j``. The update is
    ``Σ_i g_i^PC`` (the sum, as the official TensorFlow code; some PyTorch ports take the mean).
    Every ``g_i^PC`` is ``c_i @ J`` for a coefficient vector ``c_i`` that only needs ``G``, so
    the weights are ``w = Σ_i c_i``. One permutation of the others is drawn per objective from
    ``rng`` (for two objectives the order is irrelevant and PCGrad equals GH).
    """
    n = g.shape[0]
    if g.shape != (n, n):
        raise ValueError(f"expected a square Gram matrix, got {tuple(g.shape)}")
    rng = rng if rng is not None else np.random.default_rng()
    sq = g.diagonal().clamp_min(_TINY)
    total = torch.zeros(n, dtype=g.dtype, device=g.device)
    for i in range(n):
        c = torch.zeros(n, dtype=g.dtype, device=g.device)
        c[i] = 1.0
        others = [j for j in range(n) if j != i]
        for j in (others[int(t)] for t in rng.permutation(len(others))):
            dot = c @ g[:, j]
            c[j] = c[j] - torch.clamp(dot, max=0.0) / sq[j]
        total = total + c
    return total


def pcgrad(
    grads: Sequence[Tensor] | Tensor, rng: np.random.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """PCGrad of ``n`` gradients: ``(update [d], weights [n])`` with ``update = w @ J``."""
    j = stack(grads)
    w = pcgrad_weights_from_gram(gram(j), rng)
    return combine(j, w), w


def combine(grads: Sequence[Tensor] | Tensor, weights: Tensor) -> Tensor:
    """``Σ_i w_i g_i`` in the gradients' dtype, shape of one gradient."""
    if isinstance(grads, Tensor):
        shape = grads.shape[1:]
        j = grads.reshape(grads.shape[0], -1)
    else:
        shape = grads[0].shape
        j = stack(grads)
    return (weights.to(j.dtype) @ j).reshape(shape)


def diagnostics(g: Tensor, names: Sequence[str], weights: Tensor) -> dict[str, float]:
    """What a strategy saw: ``grad/cos`` (mean pairwise cosine), ``grad/conflict`` (fraction of
    pairs with a negative dot product: for two objectives, 1 when they conflict; its mean over
    steps is the conflict rate), ``grad/norm/<name>`` and ``grad/w/<name>``."""
    n = g.shape[0]
    out: dict[str, float] = {}
    if n >= 2:
        iu = torch.triu_indices(n, n, offset=1, device=g.device)
        cos = cosine_matrix(g)[iu[0], iu[1]]
        dots = g[iu[0], iu[1]]
        vals = torch.stack([cos.mean(), (dots < 0).to(g.dtype).mean()]).tolist()
        out["grad/cos"], out["grad/conflict"] = vals
    norms = g.diagonal().clamp_min(0).sqrt().tolist()
    ws = weights.tolist()
    for name, nrm, w in zip(names, norms, ws, strict=True):
        out[f"grad/norm/{name}"] = float(nrm)
        out[f"grad/w/{name}"] = float(w)
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


# -- the shared step: 1 forward, one backward per harmonised objective, no third backward ------


def _gram_of(grads: Sequence[Sequence[Tensor | None]], index: Sequence[int]) -> Tensor:
    """Gram matrix (float64) of the terms' gradients restricted to the parameters ``index``,
    accumulated parameter by parameter (no flattened copy of the model's gradients)."""
    n = len(grads)
    g = None
    for j in index:
        rows = [t[j] for t in grads]
        ref = next((r for r in rows if r is not None), None)
        if ref is None:
            continue
        m = torch.stack([
            (torch.zeros_like(ref) if r is None else r).reshape(-1).double() for r in rows
        ])
        g = m @ m.t() if g is None else g + m @ m.t()
    if g is None:
        g = torch.zeros(n, n, dtype=torch.float64)
    return g


class HarmonizingStrategy(GradientStrategy):
    """Base of GH, GH++ and PCGrad as gradient strategies (see :mod:`vlda.gradients.gh`).

    One step: **one** forward pass (the joint evaluation gives every objective), then one
    ``torch.autograd.grad`` per harmonised objective (``retain_graph`` until the last; the
    other objectives, if any, share one more), over all trainable parameters. The per-objective
    gradients ``g_i`` are of the *weighted* objectives ``w_i L_i`` (the method's loss weights, as
    the official GH code applies ``trade_off`` to the transfer loss). Their Gram matrix on the
    parameter group (the method's ``shared`` parameters; all trainable parameters when it
    declares none) gives the harmonisation weights ``a``; the update is then written directly,
    ``grad = Σ_i a_i g_i``: no third backward (the official code runs 1 forward + 3 backward).

    ``a`` applies to every parameter for GH / GH++ (they are loss re-weightings: the official
    code back-propagates ``a_1 L_1 + a_2 L_2`` through the whole model, the discriminator
    included) and to the group only for PCGrad (its projections act on the shared parameters;
    the others get the plain sum).

    Mixed precision: the gradients are those of the loss-scaled objectives; the weights are
    computed from the Gram matrix divided by ``scale²`` (the unscaled one; all three rules are
    invariant to a common scale anyway) and ``.grad`` is left scaled for the engine to unscale.
    Distributed: each term's gradients are averaged with ``ctx.comm`` before the Gram matrix, so
    every process computes the same weights. Do not wrap the model in
    ``DistributedDataParallel`` with this strategy (its hooks do not see ``autograd.grad``).

    Diagnostics per step: ``grad/cos``, ``grad/conflict``, ``grad/norm/<name>``,
    ``grad/w/<name>`` (:func:`diagnostics`) and ``loss/<name>``, ``loss/total`` (the plain
    weighted sum ``Σ w_i L_i``, comparable across strategies).
    """

    weights_apply_to_all: ClassVar[bool] = True
    n_objectives: ClassVar[int | None] = 2  # GH and GH++ harmonise exactly two; PCGrad: any

    def __init__(self, order: Sequence[str] | None = None) -> None:
        if order is not None:
            if isinstance(order, str) or len(set(order)) != len(order):
                raise ValueError(f"gradient strategy {self.name}: order must be a list of distinct objective names")
            if self.n_objectives is not None and len(order) != self.n_objectives:
                raise ValueError(
                    f"gradient strategy {self.name}: order names the {self.n_objectives} objectives "
                    f"to harmonise, got {list(order)}"
                )
        self.order = None if order is None else [str(o) for o in order]

    def weights_from_gram(self, g: Tensor, names: Sequence[str], loss_weights: Sequence[float]) -> Tensor:
        raise NotImplementedError

    def harmonized(self, names: Sequence[str]) -> list[str]:
        """Which objectives are harmonised, in order (the others are added unchanged)."""
        if self.order is not None:
            missing = [n for n in self.order if n not in names]
            if missing:
                raise ValueError(
                    f"gradient strategy {self.name}: order names {missing}, which the method does "
                    f"not have; its objectives: {list(names)}"
                )
            return list(self.order)
        if self.n_objectives is not None and len(names) > self.n_objectives:
            raise ValueError(
                f"gradient strategy {self.name} harmonises {self.n_objectives} objectives and the "
                f"method has {len(names)} ({list(names)}): choose them with "
                f"gradients.order=[{names[0]}, {names[1]}] (the others are added unchanged)"
            )
        return list(names)

    def compute(
        self, objectives: Objectives, params: Sequence[torch.nn.Parameter], ctx: StepContext
    ) -> dict[str, float]:
        losses = objectives.losses()
        names = list(losses)
        chosen = self.harmonized(names)
        rest = [n for n in names if n not in chosen]
        params = list(params)
        index = self._group_index(objectives, params)
        lw = [objectives.weight(n) for n in chosen]
        terms = [w * losses[n] for w, n in zip(lw, chosen, strict=True)]
        if rest:
            terms.append(torch.stack([objectives.weight(n) * losses[n] for n in rest]).sum())
        grads = self._term_grads(terms, params, ctx)
        n = len(chosen)
        gram_ = _gram_of(grads[:n], index) / (ctx.loss_scale * ctx.loss_scale)
        if n >= 2:
            a = self.weights_from_gram(gram_, chosen, lw).to(gram_.device)
        else:
            a = torch.ones(n, dtype=torch.float64, device=gram_.device)
        self._write(grads, params, a, n, set(index), bool(rest))
        out = loss_diagnostics(losses, objectives)
        if bool(torch.isfinite(gram_).all()):
            out.update(diagnostics(gram_, chosen, a))
        return out

    def _group_index(self, objectives: Objectives, params: Sequence[torch.nn.Parameter]) -> list[int]:
        position = {id(p): j for j, p in enumerate(params)}
        group = objectives.shared or params
        try:
            return sorted({position[id(p)] for p in group})
        except KeyError:
            raise ValueError(f"{self.name}: the parameter group holds a non-trainable parameter") from None

    @staticmethod
    def _term_grads(
        terms: Sequence[Any], params: Sequence[torch.nn.Parameter], ctx: StepContext
    ) -> list[list[Tensor | None]]:
        """``∇ (scale · term_i)`` over ``params`` for each term, averaged across processes."""
        grads: list[list[Tensor | None]] = []
        for i, term in enumerate(terms):
            if isinstance(term, Tensor) and term.requires_grad:
                g = torch.autograd.grad(
                    ctx.scale(term), params, retain_graph=i < len(terms) - 1, allow_unused=True
                )
                grads.append(list(g))
            else:
                grads.append([None] * len(params))
        if ctx.comm.world_size > 1:
            for k, term_grads in enumerate(grads):
                full = filled(term_grads, params)
                ctx.comm.average(full)
                grads[k] = list(full)
        return grads

    def _write(
        self,
        grads: Sequence[Sequence[Tensor | None]],
        params: Sequence[torch.nn.Parameter],
        a: Tensor,
        n: int,
        in_group: set[int],
        has_rest: bool,
    ) -> None:
        """``p.grad = Σ_i a_i g_i`` (+ the unharmonised rest)."""
        ones = torch.ones_like(a)
        for j, p in enumerate(params):
            coeff = a if (self.weights_apply_to_all or j in in_group) else ones
            total = None
            for i in range(n):
                g = grads[i][j]
                if g is not None:
                    t = coeff[i].to(g.dtype) * g
                    total = t if total is None else total + t
            rest = grads[n][j] if has_rest else None
            if rest is not None:
                total = rest if total is None else total + rest
            p.grad = total

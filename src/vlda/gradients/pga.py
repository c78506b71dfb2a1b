"""PGA — Prompt Gradient Alignment (Phan, Tran, Tran, Le; NeurIPS 2024; arXiv 2406.09353).

UDA as one objective per domain: the target objective ``L_T`` (pseudo-labelled target CE) and
one source objective ``L_Si`` per source (K = 1: PGA; K > 1: MPGA). Every objective depends on
the *shared* parameters ``θ_sh`` (the shared prompt context) and on its own *specific* block
(``θ_T``, ``θ_Si``: the domain contexts). Notation (flattened blocks)::

    g_i = ∇_{θ_sh} L_i(θ)     h_i = ∇_{θ_i} L_i(θ)      ĝ = g / (‖g‖ + ε)

**The step** (official ``DAPrompt/trainers/lapa.py``, ``lampa.py``, ``LA/main.py``; algorithms.md
§3.3). Stage 1 computes the plain gradients of every objective at θ (K + 1 passes, target
first). Stage 2 re-evaluates each objective's gradient at its own perturbed point (K + 1 more
passes), the shared and the specific block each normalised by its own norm::

    target:    θ_sh + ρ_gn ĝ_T − ρ_ga Σ_i g_Si / (‖g_Si‖·‖g_T‖ + ε),   θ_T + ρ_gn ĥ_T
    source i:  θ_sh + ρ_gn ĝ_Si − ρ_ga g_T / (‖g_T‖·‖g_Si‖ + ε),       θ_Si + ρ_gn ĥ_Si
    -> (g̃_i, h̃_i) = ∇ L_i at that point; θ is then restored exactly (copied back)

    grad θ_sh = w_T g̃_T + λ Σ_i w_Si g̃_Si,   grad θ_i = w_i h̃_i     (the engine then steps)

with ``ρ_gn = radius``, ``ρ_ga = align``, ``λ = tradeoff``, ``ε = eps`` (1e-12 in the official
code, added to each norm and to each product of norms) and ``w`` the method's loss weights (1 in
PGA; the official code has none). Sources align to the target only, not to each other.

**What it approximates** (first-order Taylor: ``∇L(θ + e) ≈ ∇L(θ) + H e``): ``g̃_i ≈ g_i +
H_i e_i``, i.e. the gradient of ``L_i + ρ_gn (‖g_i‖ + ‖h_i‖)`` (a block-wise gradient-norm
penalty, SAM-like) minus ``ρ_ga`` times the gradient of ``<g_Si, g_T> / (‖g_Si‖‖g_T‖)`` through
``L_i``'s own Hessian (norms held constant), with the source side scaled by λ. ``exact=True``
computes exactly ``g_i + H_i e_i`` with Hessian-vector products (double backward: one extra
forward and two backward passes per objective instead of one pass; the attention runs on the
math kernel, which supports double backward). The first-order step converges to it as the radii
shrink, its relative error falling linearly in ρ (``tests/gradients/test_pga.py``).

**Mixed precision.** Gradients are unscaled (divided by the GradScaler's scale) before any
perturbation is built, so ``align`` means the same with and without fp16. The official AMP code
reads *scaled* gradients: its radius term is scale-invariant but its alignment term is divided
by the loss scale s (2^16 at start, then adaptive), so its effective ``ρ_ga`` is ``align / s``.
``amp_compat_scaled_alignment=True`` reproduces that (the perturbation is built from the scaled
gradients; without a GradScaler it changes nothing). The final gradients are left in ``.grad``
in scaled form for the engine's ``scaler.step``, so inf/NaN steps are skipped as usual; a
non-finite stage-1 gradient skips the step without building a perturbation.

**Distributed.** The stage-1 gradients are averaged across processes (``ctx.comm``) before the
perturbations are built, and the stage-2 gradients before they are combined, so every process
builds the same perturbation and takes the same step.

**Fixed bugs / deviations (defaults).** A zero gradient (e.g. the target loss when no
pseudo-label passes τ: the official code divides by zero there and gets NaN) has no direction
to align: its alignment term is dropped instead of exploding as ``ρ_ga g / ε``. The perturbation
is otherwise not size-controlled, as in the official code (its alignment part has norm
``ρ_ga / ‖g_T‖``); ``grad/perturb/<name>`` logs its norm.

**Diagnostics** (per step, logged as interval means in ``metrics.jsonl``, run means in
``summary.json``): ``grad/cos`` (cosine between each source's and the target's shared gradient,
mean over sources), ``grad/conflict`` (fraction of sources with cos < 0: the conflict rate),
``grad/norm/<name>`` and ``grad/norm_specific/<name>`` (‖g_i‖, ‖h_i‖), ``grad/perturb/<name>``,
and the stage-1 losses ``loss/<name>``, ``loss/total = w_T L_T + λ Σ w_Si L_Si``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vlda.gradients.base import GradientStrategy, ObjectiveFn, Objectives, StepContext


@dataclass
class _Grads:
    """One objective's loss and gradients (shared block, specific block), as computed."""

    loss: Tensor
    shared: list[Tensor]
    specific: list[Tensor]


@dataclass
class _Layout:
    """Who is who in one step: objective order (target first), the sources, θ_sh, each
    objective's θ_i, and the loss weights."""

    order: list[str]
    sources: list[str]
    shared: list[torch.nn.Parameter]
    spec: dict[str, list[torch.nn.Parameter]]
    w: dict[str, float]


def _average(grads: Mapping[str, _Grads], order: Sequence[str], ctx: StepContext) -> None:
    """Average every objective's gradients across processes, in place (no-op in one process)."""
    if ctx.comm.world_size > 1:
        ctx.comm.average([t for n in order for t in (*grads[n].shared, *grads[n].specific)])


def _wide(t: Tensor) -> Tensor:
    """At least fp32 (norms and dots of fp16/bf16 gradients would lose too much)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _norm(tensors: Sequence[Tensor], device: torch.device | None = None) -> Tensor:
    """Norm of the concatenation of ``tensors`` (one block), ``‖flatten(tensors)‖``."""
    if not tensors:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(_wide(t)) for t in tensors]))


def _dot(a: Sequence[Tensor], b: Sequence[Tensor], device: torch.device | None = None) -> Tensor:
    zero = torch.zeros((), device=device)
    return sum(((_wide(x) * _wide(y)).sum() for x, y in zip(a, b, strict=True)), zero)


def _math_attention() -> contextlib.AbstractContextManager:
    """Double backward needs the math attention kernel (the fused CPU/GPU kernels lack it)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - old torch
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


class PGAStrategy(GradientStrategy):
    """Prompt Gradient Alignment as a gradient strategy (single- and multi-source).

    Args:
        radius: ρ_gn, the gradient-norm (SAM) radius, applied block-wise.
        align: ρ_ga, the alignment strength (true, unscaled value).
        tradeoff: λ, the weight of the source objectives on the shared block.
        target: name of the target objective; every other objective is a source aligned to it.
        exact: compute ``g + H e`` with Hessian-vector products instead of re-evaluating the
            gradient at the perturbed point.
        amp_compat_scaled_alignment: build the perturbation from loss-scaled gradients, as the
            official AMP code does (effective ``align / scale``). Off by default.
        eps: the official ``1e-12`` added to norms and products of norms.

    Defaults: the official fp32 ``LA/`` Office-Home run (radius 3e-4, align 1, tradeoff 0.3).

    Exceptions to the properties every strategy is tested for: PGA is not the weighted sum
    without conflict (the gradient-norm perturbation acts always; with ``radius = align = 0``
    and ``tradeoff = 1`` it is the sum), and it is not invariant to a common scale of the
    losses: its alignment term ``ρ_ga g / (‖g_S‖‖g_T‖)`` shrinks as ``1/c`` when the losses
    grow by ``c`` (with ``align = 0`` it is invariant: the radius term is normalised).
    """

    name = "pga"
    sum_without_conflict = False
    sum_options = {"radius": 0.0, "align": 0.0, "tradeoff": 1.0}
    scale_invariant = False
    scale_invariant_options = {"align": 0.0}

    def __init__(
        self,
        radius: float = 3e-4,
        align: float = 1.0,
        tradeoff: float = 0.3,
        target: str = "target_pl",
        exact: bool = False,
        amp_compat_scaled_alignment: bool = False,
        eps: float = 1e-12,
    ) -> None:
        for key, value in (("radius", radius), ("align", align), ("tradeoff", tradeoff), ("eps", eps)):
            if not float(value) >= 0.0:
                raise ValueError(f"gradient strategy pga: {key} must be >= 0, got {value!r}")
        self.radius = float(radius)
        self.align = float(align)
        self.tradeoff = float(tradeoff)
        self.target = str(target)
        self.exact = bool(exact)
        self.amp_compat_scaled_alignment = bool(amp_compat_scaled_alignment)
        self.eps = float(eps)

    # -- helpers ------------------------------------------------------------------------------
    def _check_groups(
        self,
        params: Sequence[torch.nn.Parameter],
        shared: Sequence[torch.nn.Parameter],
        specific: Mapping[str, Sequence[torch.nn.Parameter]],
    ) -> None:
        seen: dict[int, str] = {}
        for group, ps in [("shared", shared), *specific.items()]:
            for p in ps:
                if id(p) in seen:
                    raise ValueError(
                        f"pga: a parameter is in two groups ({seen[id(p)]!r} and {group!r}); "
                        "each must be shared or specific to exactly one objective"
                    )
                seen[id(p)] = group
        trainable = {id(p) for p in params}
        if set(seen) != trainable:
            raise ValueError(
                f"pga: the method's parameter groups ({len(seen)} tensors) must be exactly its "
                f"trainable parameters ({len(trainable)} tensors)"
            )

    @staticmethod
    def _grads(
        fn: ObjectiveFn,
        shared: Sequence[torch.nn.Parameter],
        specific: Sequence[torch.nn.Parameter],
        ctx: StepContext,
    ) -> _Grads:
        loss = fn()
        ps = [*shared, *specific]
        out = ctx.scale(loss)
        raw: Sequence[Tensor | None] = (
            torch.autograd.grad(out, ps, allow_unused=True) if out.requires_grad else [None] * len(ps)
        )
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(raw, ps, strict=True)]
        return _Grads(loss.detach(), grads[: len(shared)], grads[len(shared):])

    @staticmethod
    def _hvp_grads(
        fn: ObjectiveFn,
        shared: Sequence[torch.nn.Parameter],
        specific: Sequence[torch.nn.Parameter],
        ctx: StepContext,
        direction: Sequence[Tensor],
    ) -> _Grads:
        """``∇L + H·direction`` at θ, by double backward (as computed: loss-scaled with AMP)."""
        ps = [*shared, *specific]
        with _math_attention():
            loss = fn()
            out = ctx.scale(loss)
            if not out.requires_grad:
                zeros = [torch.zeros_like(p) for p in ps]
                return _Grads(loss.detach(), zeros[: len(shared)], zeros[len(shared):])
            grads = torch.autograd.grad(out, ps, create_graph=True, allow_unused=True)
            used = [(g, d) for g, d in zip(grads, direction, strict=True) if g is not None]
            dot = sum(((g * d.to(g.dtype)).sum() for g, d in used), torch.zeros((), device=loss.device))
            hv: Sequence[Tensor | None] = (
                torch.autograd.grad(dot, ps, allow_unused=True) if dot.requires_grad else [None] * len(ps)
            )
        total = []
        for g, h, p in zip(grads, hv, ps, strict=True):
            t = torch.zeros_like(p) if g is None else g.detach()
            total.append(t if h is None else t + h)
        return _Grads(loss.detach(), total[: len(shared)], total[len(shared):])

    # -- the step, in named stages -------------------------------------------------------------
    def compute(
        self, objectives: Objectives, params: Sequence[torch.nn.Parameter], ctx: StepContext
    ) -> dict[str, float]:
        lay = self._layout(objectives, params)
        fns = objectives.closures
        dev = params[0].device
        raw, plain = self._stage1(fns, lay, ctx)
        norm_sh = {n: _norm(plain[n].shared, dev) for n in lay.order}
        norm_sp = {n: _norm(plain[n].specific, dev) for n in lay.order}
        losses = {n: plain[n].loss.float() for n in lay.order}
        total = lay.w[self.target] * losses[self.target] + self.tradeoff * sum(
            (lay.w[n] * losses[n] for n in lay.sources), torch.zeros((), device=dev)
        )
        finite = bool(torch.isfinite(torch.stack([*norm_sh.values(), *norm_sp.values()])).all())
        if ctx.loss_scale != 1.0 and not finite:
            # Overflow at this loss scale: no perturbation can be built. Hand the (non-finite)
            # gradients on; the engine's GradScaler skips the step and lowers the scale.
            self._set_grads(raw, lay)
            out = {f"loss/{n}": float(losses[n]) for n in lay.order}
            out["loss/total"] = float(total)
            return out
        # Built from unscaled gradients (or, for compatibility, from the scaled ones).
        basis = raw if self.amp_compat_scaled_alignment else plain
        pert_sh, pert_sp = self._perturbations(basis, lay, dev)
        moved = self._stage2(fns, lay, params, pert_sh, pert_sp, ctx)
        self._set_grads(moved, lay)
        return self._diagnostics(plain, norm_sh, norm_sp, pert_sh, pert_sp, lay, losses, total, dev)

    def _layout(self, objectives: Objectives, params: Sequence[torch.nn.Parameter]) -> _Layout:
        fns = objectives.closures
        if self.target not in fns:
            raise ValueError(
                f"pga: no target objective {self.target!r} among the method's objectives "
                f"{sorted(fns)}; set gradients.target"
            )
        sources = [n for n in fns if n != self.target]
        if not sources:
            raise ValueError("pga needs at least one source objective besides the target")
        order = [self.target, *sources]
        shared = objectives.shared
        spec = {n: objectives.specific.get(n, []) for n in order}
        self._check_groups(params, shared, spec)
        return _Layout(order, sources, shared, spec, {n: objectives.weight(n) for n in order})

    def _stage1(
        self, fns: Mapping[str, ObjectiveFn], lay: _Layout, ctx: StepContext
    ) -> tuple[dict[str, _Grads], dict[str, _Grads]]:
        """Plain gradients at θ, averaged across processes: (as computed, i.e. loss-scaled;
        unscaled). K + 1 passes, target first."""
        raw = {n: self._grads(fns[n], lay.shared, lay.spec[n], ctx) for n in lay.order}
        _average(raw, lay.order, ctx)
        if ctx.loss_scale == 1.0:
            return raw, raw
        inv = 1.0 / ctx.loss_scale
        plain = {
            n: _Grads(r.loss, [t * inv for t in r.shared], [t * inv for t in r.specific])
            for n, r in raw.items()
        }
        return raw, plain

    def _perturbations(
        self, basis: Mapping[str, _Grads], lay: _Layout, dev: torch.device
    ) -> tuple[dict[str, list[Tensor]], dict[str, list[Tensor]]]:
        """Each objective's perturbation ``e_i`` of θ_sh and of its own θ_i (module docstring)."""
        b_sh = {n: _norm(basis[n].shared, dev) for n in lay.order}
        b_sp = {n: _norm(basis[n].specific, dev) for n in lay.order}
        pert_sh: dict[str, list[Tensor]] = {}
        pert_sp: dict[str, list[Tensor]] = {}
        for n in lay.order:
            terms = [self.radius * g / (b_sh[n] + self.eps) for g in basis[n].shared]
            for m in lay.sources if n == self.target else [self.target]:
                # No direction to align when either gradient is exactly zero (fixed bug: the
                # official code would perturb by align * g / 1e-12 there).
                ok = (b_sh[n] > 0) & (b_sh[m] > 0)
                den = b_sh[m] * b_sh[n] + self.eps
                terms = [
                    t - torch.where(ok, self.align * g / den, torch.zeros_like(g))
                    for t, g in zip(terms, basis[m].shared, strict=True)
                ]
            pert_sh[n] = terms
            pert_sp[n] = [self.radius * h / (b_sp[n] + self.eps) for h in basis[n].specific]
        return pert_sh, pert_sp

    def _stage2(
        self,
        fns: Mapping[str, ObjectiveFn],
        lay: _Layout,
        params: Sequence[torch.nn.Parameter],
        pert_sh: Mapping[str, list[Tensor]],
        pert_sp: Mapping[str, list[Tensor]],
        ctx: StepContext,
    ) -> dict[str, _Grads]:
        """Each objective's gradient at its own perturbed point, θ restored exactly after each
        (or ``g + H e`` by Hessian-vector products when ``exact``); averaged across processes."""
        moved: dict[str, _Grads] = {}
        if self.exact:
            for n in lay.order:
                moved[n] = self._hvp_grads(fns[n], lay.shared, lay.spec[n], ctx, [*pert_sh[n], *pert_sp[n]])
        else:
            saved = {id(p): p.detach().clone() for p in params}
            try:
                for n in lay.order:
                    ps = [*lay.shared, *lay.spec[n]]
                    with torch.no_grad():
                        for p, e in zip(ps, [*pert_sh[n], *pert_sp[n]], strict=True):
                            p.add_(e.to(p.dtype))
                    moved[n] = self._grads(fns[n], lay.shared, lay.spec[n], ctx)
                    with torch.no_grad():
                        for p in ps:
                            p.copy_(saved[id(p)])
            finally:
                with torch.no_grad():
                    for p in params:
                        p.copy_(saved[id(p)])
        _average(moved, lay.order, ctx)
        return moved

    def _set_grads(self, grads: Mapping[str, _Grads], lay: _Layout) -> None:
        """``grad θ_sh = w_T g_T + λ Σ_i w_Si g_Si``, ``grad θ_i = w_i h_i``."""
        t, w = self.target, lay.w
        for k, p in enumerate(lay.shared):
            terms = [grads[n].shared[k] if w[n] == 1.0 else w[n] * grads[n].shared[k] for n in lay.sources]
            src = terms[0]
            for term in terms[1:]:
                src = src + term
            tgt = grads[t].shared[k] if w[t] == 1.0 else w[t] * grads[t].shared[k]
            p.grad = (tgt + src * self.tradeoff).to(p.dtype)
        for n in lay.order:
            for p, h in zip(lay.spec[n], grads[n].specific, strict=True):
                p.grad = (h if w[n] == 1.0 else w[n] * h).to(p.dtype)

    def _diagnostics(
        self,
        plain: Mapping[str, _Grads],
        norm_sh: Mapping[str, Tensor],
        norm_sp: Mapping[str, Tensor],
        pert_sh: Mapping[str, list[Tensor]],
        pert_sp: Mapping[str, list[Tensor]],
        lay: _Layout,
        losses: Mapping[str, Tensor],
        total: Tensor,
        dev: torch.device,
    ) -> dict[str, float]:
        t, sources = self.target, lay.sources
        keys: list[str] = []
        vals: list[Tensor] = []
        cosines = []
        for n in sources:
            den = norm_sh[n] * norm_sh[t]
            dot = _dot(plain[n].shared, plain[t].shared, dev)
            cos = torch.where(den > 0, dot / den.clamp_min(1e-30), torch.zeros((), device=dev))
            cosines.append(cos)
            if len(sources) > 1:
                keys += [f"grad/cos/{n}", f"grad/conflict/{n}"]
                vals += [cos, (cos < 0).float()]
        cos_all = torch.stack(cosines)
        keys += ["grad/cos", "grad/conflict"]
        vals += [cos_all.mean(), (cos_all < 0).float().mean()]
        for n in lay.order:
            keys += [f"grad/norm/{n}", f"grad/norm_specific/{n}", f"grad/perturb/{n}", f"loss/{n}"]
            vals += [
                norm_sh[n], norm_sp[n], _norm([*pert_sh[n], *pert_sp[n]], dev), losses[n],
            ]
        keys.append("loss/total")
        vals.append(total)
        return dict(zip(keys, torch.stack([v.float().reshape(()) for v in vals]).tolist(), strict=True))

"""PGA and MPGA: DAPL-style prompts with one objective per domain (Phan et al., NeurIPS 2024).

The model follows the official ``VietHoang1512/PGA`` code (``DAPrompt/trainers/lapa.py`` for
PGA, ``lampa.py`` for MPGA; algorithms.md §3.1-3.2). CLIP is frozen; learned are

* ``ctx`` — the shared context θ_sh, ``[M1, W]`` or class-specific ``[C, M1, W]`` (CSC);
* ``domain_ctx[d]`` — one specific context ``[M2, W]`` per domain: θ_S1..θ_SK, then θ_T.

Prompt for domain ``d``, class ``k``: ``[SOS][ctx][dom_d] <template(k, d)> [EOT]``, with the
official texts: PGA ``"{classname} {domain}."`` (lapa.py: ``name + " " + domain + "."``), MPGA
``"{classname}, a {domain} image."`` (lampa.py writes ``", a " + domain + "image."`` without the
space; that typo is fixed by default, set ``template`` to reproduce it). Domain words come from
the benchmark (``real_world`` -> ``real world``; lapa.py uses the raw id).

Objectives (one text-encoder pass each, over that domain's C prompts only; image features and
pseudo-labels are computed once per step, outside the closures)::

    source_ce      = CE(s · <f(x_s), g(t_{k,S})>, y_s)                       (PGA, K = 1)
    source_ce/<d>  = the same over the batch's samples of source d           (MPGA)
    target_pl      = Σ_i m_i CE(s · <f(x_t), g(t_{k,T})>, ŷ_i) / Σ_i m_i     (0 when Σ m = 0)

with ``s`` CLIP's logit scale, zero-shot pseudo-labels ``p = softmax(s · <f(x_t), w_k> / T)``,
``w_k = g("a photo of a CLASS_k.")`` encoded once per run, ``ŷ = argmax p``, ``m = 1[max p ≥ τ]``
(the official code divides by Σ m and gets NaN when it is 0). The ``pga`` gradient strategy
(:mod:`vlda.gradients.pga`) combines them; with ``gradients: sum`` this is a DAPL-like method
with per-domain passes.

Prediction (``inference``):

* ``target`` — target prompts: ``s · <f(x), g(t_{k,T})>``;
* ``ensemble`` (default) — the average of the softmax probabilities of the target prompts and of
  every source's prompts (each counted once), returned as log-probabilities (``LA/main.py``,
  ``main_multi.py``). ``ensemble_space: dassl_logits`` reproduces ``DAPrompt``'s inference
  instead: it averages *logits*, and for K ≥ 2 (``lampa.py::model_inference``) counts the last
  source twice, ``(z_T + Σ_i z_Si + z_SK) / (K + 1)`` — a compatibility option, not a default.

The official code evaluates both modes after every epoch and keeps the best on target labels;
vlda uses one mode, fixed in advance, and reports last / selected / oracle as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda.gradients.base import Objectives
from vlda.methods.base import Task, masked_mean
from vlda.methods.domain_prompts import DomainPromptMethod, DomainPromptParams

INFERENCE_MODES = ("target", "ensemble")
ENSEMBLE_SPACES = ("probs", "dassl_logits")


@dataclass
class PGAParams(DomainPromptParams):
    """Hyper-parameters of the PGA / MPGA prompt model (the update itself: ``gradients: pga``);
    the prompt and pseudo-label ones are :class:`DomainPromptParams` (official τ 0.6; CSC True
    for Office-Home / VisDA).

    Attributes:
        inference: ``target`` or ``ensemble``.
        ensemble_space: ``probs`` (mean probability, each prompt set once) or ``dassl_logits``.
    """

    tau: float = 0.6
    inference: str = "ensemble"
    ensemble_space: str = "probs"


@dataclass
class MPGAParams(PGAParams):
    template: str = "{classname}, a {domain} image."


class PGA(DomainPromptMethod):
    """PGA (single source). Objectives ``source_ce`` and ``target_pl``."""

    name = "pga"
    Params = PGAParams
    params: PGAParams
    multi_source = False

    def __init__(self, backbone: nn.Module, task: Task, params: PGAParams) -> None:
        super().__init__(backbone, task, params)
        k = len(task.source_domains)
        if not self.multi_source and k != 1:
            raise ValueError(f"pga takes exactly one source domain, got {k}; use mpga for several")
        if params.inference not in INFERENCE_MODES:
            raise ValueError(f"{self.name}: inference must be one of {INFERENCE_MODES}, got {params.inference!r}")
        if params.ensemble_space not in ENSEMBLE_SPACES:
            raise ValueError(
                f"{self.name}: ensemble_space must be one of {ENSEMBLE_SPACES}, got {params.ensemble_space!r}"
            )
        self.n_sources = k

    # -- names and groups ---------------------------------------------------------------------
    def source_objective(self, i: int) -> str:
        """Name of source ``i``'s objective."""
        return f"source_ce/{self.task.source_domains[i]}" if self.multi_source else "source_ce"

    @property
    def target_index(self) -> int:
        return self.n_sources

    def param_groups(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """``([ctx], {objective: [its domain context]})``."""
        dom = self.prompt_learner.domain_ctx
        specific: dict[str, list] = {self.source_objective(i): [] for i in range(self.n_sources)}
        specific["target_pl"] = []
        if len(dom):
            for i in range(self.n_sources):
                specific[self.source_objective(i)] = [dom[i]]
            specific["target_pl"] = [dom[self.target_index]]
        return [self.prompt_learner.ctx], specific

    # -- pieces -------------------------------------------------------------------------------
    def text_features(self, domain: int) -> Tensor:
        """L2-normalised features ``[C, D]`` of one domain's prompts (one text-encoder pass)."""
        return self.domain_text_features([domain], self.params.shared_prefix)[0]

    # -- the contract -------------------------------------------------------------------------
    def objectives(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Objectives:
        """One closure per domain objective; each runs the text encoder over that domain's
        prompts at the current parameters. Image features and pseudo-labels (metric
        ``pl_mask_rate``) are computed here, once per step."""
        fs, ft = self.image_features(source), self.image_features(target)
        labels, mask, _ = self.pseudo_labels(ft)
        closures = self._closures(fs, source["labels"], source.get("domains"), ft, labels, mask)
        shared, specific = self.param_groups()
        return Objectives(
            closures=lambda: closures, shared=shared, specific=specific,
            weights=self.loss_weights(), metrics={"pl_mask_rate": float(mask.float().mean())},
        )

    def _closures(
        self, fs: Tensor, ys: Tensor, doms: Tensor | None, ft: Tensor, labels: Tensor, mask: Tensor
    ) -> dict[str, Callable[[], Tensor]]:
        scale = self.backbone.logit_scale
        out: dict[str, Callable[[], Tensor]] = {}
        for i in range(self.n_sources):
            if self.multi_source and doms is not None:
                sel = (doms == i).nonzero().squeeze(1)
                f_i, y_i = fs[sel], ys[sel]
            else:
                f_i, y_i = fs, ys

            def source_loss(i: int = i, f: Tensor = f_i, y: Tensor = y_i) -> Tensor:
                text = self.text_features(i)
                if len(y) == 0:  # no sample of this source in the batch
                    return text.sum() * 0.0
                return F.cross_entropy(scale * f @ text.t(), y)

            out[self.source_objective(i)] = source_loss

        def target_loss() -> Tensor:
            text = self.text_features(self.target_index)
            ce = F.cross_entropy(scale * ft @ text.t(), labels, reduction="none")
            return masked_mean(ce, mask)

        out["target_pl"] = target_loss
        return out

    def logits(self, features: Tensor) -> Tensor:
        scale = self.backbone.logit_scale
        features = features.float()
        target = scale * features @ self.text_features(self.target_index).t()
        if self.params.inference == "target":
            return target
        sources = [scale * features @ self.text_features(i).t() for i in range(self.n_sources)]
        if self.params.ensemble_space == "dassl_logits":
            # DAPrompt: lapa.py (z_T + z_S) / 2; lampa.py adds the last source a second time.
            total = target + sum(sources)
            if self.n_sources > 1:
                total = total + sources[-1]
            return total / (self.n_sources + 1)
        probs = torch.stack([target.softmax(-1), *(z.softmax(-1) for z in sources)]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class MPGA(PGA):
    """MPGA (K ≥ 1 sources): objectives ``source_ce/<domain>`` per source and ``target_pl``;
    each source is aligned to the target (2(K+1) text-encoder passes per step)."""

    name = "mpga"
    Params = MPGAParams
    multi_source = True

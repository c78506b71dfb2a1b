"""DAPL: Domain Adaptation via Prompt Learning (Ge et al., TNNLS 2023, arXiv 2202.06687).

Prompt for domain ``d``, class ``k``: ``[SOS][ctx 1..M1][dom_d 1..M2] CLASS_k , a DOMAIN_d image..``
(the doubled full stop is what the official ``LeapLabTHU/DAPrompt`` code feeds the tokenizer; we
keep it so prompts tokenise identically). CLIP is frozen; ``ctx`` and ``dom`` are learned.

Losses, as in the official code (``trainers/dapl.py``):

* ``source_ce = CE(logit_scale * <f(x_s), g(t_{k, d_s})>, y_s)`` — the softmax runs over the C
  prompts of the sample's own domain block (per-domain softmax blocks, not the paper's Eq. 1
  softmax over all domain x class prompts);
* pseudo-labels from zero-shot CLIP on the (augmented) target view:
  ``p = softmax(logit_scale * <f(x_t), w_k> / T)`` with ``w_k = g("a photo of a CLASS_k.")``,
  ``ŷ = argmax p``, ``m = 1[max p >= τ]``;
* ``target_pl = Σ_i m_i CE(target-block logits_i, ŷ_i) / Σ_i m_i``, defined as 0 when no sample
  passes τ (the official code divides by zero there and gets NaN);
* ``L = source_ce + U * target_pl``. Prediction uses the target-domain block.

Differences from the official code, by design: the zero-shot text features are computed once
per run instead of being re-encoded every step (same values, CLIP is frozen); with several
sources each source sample uses its own domain's block and the target uses the target block
(the official code hard-codes blocks 0 and 1, which is only right for one source).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

from vlda.gradients.base import Objectives
from vlda.methods.base import masked_mean
from vlda.methods.domain_prompts import DomainPromptMethod, DomainPromptParams


@dataclass
class DAPLParams(DomainPromptParams):
    template: str = "{classname} , a {domain} image.."
    u: float = 1.0


class DAPL(DomainPromptMethod):
    name = "dapl"
    Params = DAPLParams
    params: DAPLParams

    def objectives(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Objectives:
        """``source_ce`` and ``target_pl`` (one joint text-encoder pass); the pseudo-labels and
        their acceptance rate (metric ``pl_mask_rate``) are computed once, outside the pass."""
        fs, ft = self.image_features(source), self.image_features(target)
        labels, mask, _ = self.pseudo_labels(ft)
        shared, specific = self.param_groups()
        return Objectives(
            lambda: self._losses(fs, source["labels"], source["domains"], ft, labels, mask),
            shared=shared, specific=specific, weights=self.loss_weights(),
            metrics={"pl_mask_rate": float(mask.float().mean())},
        )

    def _losses(
        self, fs: Tensor, ys: Tensor, doms: Tensor, ft: Tensor, labels: Tensor, mask: Tensor
    ) -> dict[str, Tensor]:
        text = self.text_features(range(len(self.task.domains)))  # [n_domains, C, D], all prompts
        scale = self.backbone.logit_scale
        # Each source sample is scored against its own domain's block of prompts: score every
        # block ([B, n_domains, C], cheap) and pick one, rather than gather a [B, C, D] copy of
        # the text features (whose backward is a slow accumulating scatter).
        n_dom, c, d = text.shape
        every = (fs @ text.reshape(n_dom * c, d).t()).reshape(-1, n_dom, c)
        pick = doms.reshape(-1, 1, 1).expand(-1, 1, c)
        src_logits = scale * every.gather(1, pick).squeeze(1)
        tgt_logits = scale * ft @ text[-1].t()
        ce_t = F.cross_entropy(tgt_logits, labels, reduction="none")
        return {
            "source_ce": F.cross_entropy(src_logits, ys),
            "target_pl": masked_mean(ce_t, mask),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"source_ce": 1.0, "target_pl": self.params.u}

    def text_features(self, domains) -> Tensor:
        """``[len(domains), C, D]``; the shared-prefix path is exact, so it is only a speed-up
        (it is skipped when the learner is set not to cut at the EOT, for benchmarks)."""
        cut = self.params.shared_prefix and self.prompt_learner.cut_at_eot
        return self.domain_text_features(list(domains), cut)

    def logits(self, features: Tensor) -> Tensor:
        text = self.text_features([len(self.task.domains) - 1])[0]
        return self.backbone.logit_scale * features @ text.t()

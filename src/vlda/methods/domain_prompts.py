"""What DAPL and PGA/MPGA share: domain-specific prompts on a frozen CLIP, and zero-shot
pseudo-labels for the target.

Prompts for domain ``d``, class ``k``: ``[SOS][ctx 1..M1][dom_d 1..M2] <template(k, d)> [EOT]``
(:class:`~vlda.models.prompt_learner.PromptLearner`, one domain context per source and one for
the target). Pseudo-labels, from the zero-shot classifier ``w_k = g(pseudo_label_template(k))``
encoded once per run (:meth:`DomainPromptMethod.setup`)::

    p = softmax(s · <f(x_t), w_k> / T),   ŷ = argmax_k p,   m = 1[max_k p ≥ τ]

with ``s`` CLIP's logit scale, ``T`` the temperature and ``τ`` the threshold (DAPL
``trainers/dapl.py``, PGA ``trainers/lapa.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from vlda.config.search import Distribution, LogUniform, Uniform
from vlda.methods.base import Method, Task
from vlda.methods.zeroshot import resolve_templates, zero_shot_classifier
from vlda.models.prompt_learner import PromptConfig, PromptLearner
from vlda.models.shared_prefix import prompt_features


@dataclass
class DomainPromptParams:
    """Attributes:
        n_ctx, n_domain_ctx: M1, M2 (16, 16 officially).
        class_specific: class-specific shared context (CSC).
        template: fixed text after the learned tokens, with ``{classname}`` and ``{domain}``.
        tau, temperature: pseudo-label threshold τ and temperature T.
        pseudo_label_template: zero-shot prompt(s) for the pseudo-labels.
        shared_prefix: encode ``[SOS][ctx][dom_d]`` once per domain (exact, faster;
            :mod:`vlda.models.shared_prefix`).
    """

    n_ctx: int = 16
    n_domain_ctx: int = 16
    class_specific: bool = False
    template: str = "{classname} {domain}."
    tau: float = 0.5
    temperature: float = 1.0
    pseudo_label_template: str = "a photo of a {}."
    shared_prefix: bool = True


class DomainPromptMethod(Method):
    """Base of DAPL and PGA: builds the prompt learner and the zero-shot pseudo-labeller."""

    params: DomainPromptParams
    zs_weights: Tensor
    # Random search (vlda sweep): DAPL's lr 0.003 and pseudo-label threshold 0.5 (PGA 0.6) inside.
    search_space: ClassVar[Mapping[str, Distribution]] = {
        "optim.lr": LogUniform(3e-4, 3e-2), "method.tau": Uniform(0.4, 0.8),
    }

    def __init__(self, backbone: nn.Module, task: Task, params: DomainPromptParams) -> None:
        super().__init__(backbone, task, params)
        if not 0.0 <= params.tau <= 1.0:
            raise ValueError(f"{self.name}: tau must be in [0, 1], got {params.tau}")
        if params.temperature <= 0:
            raise ValueError(f"{self.name}: temperature must be > 0, got {params.temperature}")
        cfg = PromptConfig(
            n_ctx=params.n_ctx, n_domain_ctx=params.n_domain_ctx,
            class_specific=params.class_specific, template=params.template,
        )
        words = [task.word(d) for d in task.domains]
        self.prompt_learner = PromptLearner(self.backbone, task.prompt_names, words, cfg)
        self.templates = resolve_templates(params.pseudo_label_template)
        self.register_buffer("zs_weights", torch.empty(0), persistent=False)

    def setup(self, device: torch.device) -> None:
        """Encode the zero-shot pseudo-label classifier ``[C, D]`` once."""
        self.zs_weights = zero_shot_classifier(self.backbone, self.task.prompt_names, self.templates)

    def pseudo_labels(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Zero-shot pseudo-labels of normalised features ``[B, D]``: (labels ``[B]``, mask
        ``[B]`` bool, max probability ``[B]``)."""
        with torch.no_grad():
            zs = self.backbone.logit_scale * features.float() @ self.zs_weights.t()
            probs = torch.softmax(zs / self.params.temperature, dim=-1)
            conf, labels = probs.max(dim=-1)
        return labels, conf >= self.params.tau, conf

    def domain_text_features(self, domains: list[int], shared_prefix: bool) -> Tensor:
        """L2-normalised features ``[len(domains), C, D]`` of the domains' prompts."""
        return prompt_features(self.prompt_learner, domains, shared_prefix)

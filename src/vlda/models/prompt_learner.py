"""Learnable text prompts for a frozen CLIP text encoder: CoOp, DAPL and PGA are configurations.

Prompt for domain ``d`` and class ``k`` (token positions)::

    [SOS] [ctx_1 .. ctx_M1] [dom_d,1 .. dom_d,M2] <template(class_k, domain_d)> [EOT]

* ``ctx`` — shared context, M1 vectors of width W, one set for all classes ``[M1, W]`` or one set
  per class (class-specific context, CSC) ``[C, M1, W]``;
* ``dom`` — per-domain context ``[n_domains, M2, W]`` (DAPL's domain-specific tokens; M2 = 0 for
  CoOp);
* ``template`` — the fixed words after the learned tokens, e.g. ``"{classname}."`` (CoOp) or
  ``"{classname} , a {domain} image."`` (DAPL, domain word in the text).

The placeholders are built like the official code (``"X X ... X " + suffix``), so the fixed words
tokenise exactly as in CoOp/DAPL. Initialisation is N(0, 0.02²) (CoOp/DAPL) or, for the shared
context, the token embeddings of given words (``init="a photo of a"``, which sets M1).

Each forward pass returns text features for the requested domains; every sequence is cut after
the longest EOT among them, which is exact because the text transformer is causal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vlda.models.backbone import VisionLanguageBackbone, clip_tokenize, eot_positions


@dataclass(frozen=True)
class PromptConfig:
    """Layout of the learnable prompt.

    Attributes:
        n_ctx: M1, number of shared context vectors (ignored when ``init`` gives words).
        n_domain_ctx: M2, number of per-domain context vectors (0: none).
        class_specific: one shared context per class (CSC) instead of one for all classes.
        init: ``None`` for N(0, 0.02²); otherwise words whose embeddings initialise the shared
            context (CoOp's ``"a photo of a"``).
        template: the fixed text after the learned tokens; ``{classname}`` and optionally
            ``{domain}`` are filled in. A ``{domain}`` in it puts the domain word in the text.
        init_std: standard deviation of the random initialisation.
    """

    n_ctx: int = 16
    n_domain_ctx: int = 0
    class_specific: bool = False
    init: str | None = None
    template: str = "{classname}."
    init_std: float = 0.02


class PromptLearner(nn.Module):
    """Learnable context vectors + fixed token embeddings -> per-domain class text features.

    Args:
        backbone: the frozen vision-language model (its token embedding and text encoder are used).
        classnames: names used in the prompts, in label order (length C).
        domain_words: one word (or phrase) per domain, in the order of the domain indices used by
            :meth:`forward` (DAPL: sources then target). CoOp uses a single entry.
        config: the :class:`PromptConfig`.

    Shapes: ``ctx`` ``[M1, W]`` or ``[C, M1, W]``; ``domain_ctx[d]`` ``[M2, W]`` for each domain.
    """

    # Fixed token embeddings and EOT positions of every (domain, class) prompt (buffers).
    token_prefix: Tensor  # [n_domains, C, 1, W]
    token_suffix: Tensor  # [n_domains, C, S, W]
    eot_index: Tensor  # [n_domains, C]

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        classnames: Sequence[str],
        domain_words: Sequence[str],
        config: PromptConfig,
    ) -> None:
        super().__init__()
        self.backbone = [backbone]  # a list so the frozen model is not registered as a submodule
        self.config = config
        self.n_classes = len(classnames)
        self.n_domains = len(domain_words)
        if self.n_classes == 0 or self.n_domains == 0:
            raise ValueError("a prompt learner needs at least one class and one domain")
        width = backbone.text_width
        device = backbone.device
        dtype = backbone.embed_tokens(torch.zeros(1, 1, dtype=torch.long, device=device)).dtype

        n_ctx = config.n_ctx
        init_vectors = None
        if config.init:
            init_tokens = clip_tokenize([config.init], backbone.context_length).to(device)
            n_ctx = int(eot_positions(init_tokens)[0]) - 1
            with torch.no_grad():
                init_vectors = backbone.embed_tokens(init_tokens)[0, 1 : 1 + n_ctx].float()
        self.n_ctx = n_ctx
        self.n_domain_ctx = config.n_domain_ctx

        ctx_shape = (self.n_classes, n_ctx, width) if config.class_specific else (n_ctx, width)
        ctx = torch.empty(ctx_shape, device=device)
        if init_vectors is not None:
            ctx.copy_(init_vectors.expand_as(ctx))
        else:
            nn.init.normal_(ctx, std=config.init_std)
        self.ctx = nn.Parameter(ctx)
        # One parameter per domain, so gradient strategies can treat each domain's block on its
        # own (PGA normalises the source and target blocks separately).
        self.domain_ctx = nn.ParameterList()
        if self.n_domain_ctx > 0:
            dom = torch.empty(self.n_domains, self.n_domain_ctx, width, device=device)
            nn.init.normal_(dom, std=config.init_std)
            self.domain_ctx.extend(nn.Parameter(d.clone()) for d in dom)

        # Fixed tokens of every (domain, class) prompt, cut after the longest EOT.
        n_learned = n_ctx + self.n_domain_ctx
        prefix = " ".join(["X"] * n_learned)
        texts = [
            f"{prefix} {config.template.format(classname=c, domain=d)}".strip()
            for d in domain_words
            for c in classnames
        ]
        tokens = clip_tokenize(texts, backbone.context_length).to(device)
        eot = eot_positions(tokens)
        cut = int(eot.max()) + 1
        with torch.no_grad():
            emb = backbone.embed_tokens(tokens[:, :cut]).to(dtype)
        shape = (self.n_domains, self.n_classes)
        self.register_buffer("token_prefix", emb[:, :1].reshape(*shape, 1, width), persistent=False)
        self.register_buffer(
            "token_suffix", emb[:, 1 + n_learned :].reshape(*shape, -1, width), persistent=False
        )
        self.register_buffer("eot_index", eot.reshape(shape), persistent=False)
        self.texts = texts
        # Cutting after the EOT is exact (causal encoder); False pads to the full context, which
        # only exists to measure what the cut saves (benchmarks/dapl_speed.py).
        self.cut_at_eot = True

    def prompt_embeddings(self, domains: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Token embeddings ``[len(domains) * C, L, W]`` and EOT positions for ``domains``."""
        idx = torch.as_tensor(list(domains), device=self.ctx.device)
        n, c = len(domains), self.n_classes
        dtype = self.token_prefix.dtype
        ctx = self.ctx.to(dtype)
        ctx = ctx.unsqueeze(0).expand(c, -1, -1) if ctx.dim() == 2 else ctx  # [C, M1, W]
        parts = [self.token_prefix[idx], ctx.unsqueeze(0).expand(n, -1, -1, -1)]
        if len(self.domain_ctx):
            dom = torch.stack([self.domain_ctx[i] for i in domains]).to(dtype)  # [n, M2, W]
            parts.append(dom.unsqueeze(1).expand(-1, c, -1, -1))
        parts.append(self.token_suffix[idx])
        emb = torch.cat(parts, dim=2)  # [n, C, L, W]
        eot = self.eot_index[idx].reshape(-1)
        emb = emb.reshape(n * c, emb.shape[2], emb.shape[3])
        if not self.cut_at_eot:
            pad = self.backbone[0].context_length - emb.shape[1]
            return torch.cat([emb, emb.new_zeros(emb.shape[0], pad, emb.shape[2])], dim=1), eot
        return emb[:, : int(eot.max()) + 1], eot

    def forward(self, domains: Sequence[int] | None = None) -> Tensor:
        """L2-normalised text features ``[len(domains), C, D]`` (all domains by default)."""
        domains = list(range(self.n_domains)) if domains is None else list(domains)
        emb, eot = self.prompt_embeddings(domains)
        feats = self.backbone[0].encode_text_embeddings(emb, eot)
        feats = nn.functional.normalize(feats.float(), dim=-1)
        return feats.reshape(len(domains), self.n_classes, -1)

"""AD-CLIP: prompts conditioned on each image's style and content (Singha et al., ICCVW 2023,
arXiv 2308.05659; official code ``mainaksingha01/AD-CLIP``, ``trainers/adclip_{rn50,vitB16,vitL14}.py``).

CLIP stays frozen; only three small projectors are trained. From the per-layer statistics of
the frozen image encoder (:mod:`vlda.models.layer_stats`: ``μ_l, σ_l ∈ R^{W_l}`` for each of
the ``L`` layers; ViT-B/16: 12 blocks of width 768, RN50: 4 stages) of an image ``x``:

* domain (style) tokens ``d_l(x) = B_l A_l (μ_l + σ_l)/2`` (``A_l: W_l→h_d``, ``B_l: h_d→W_t``,
  no activation; the official ``cat((μ, σ))`` followed by ``AdaptiveAvgPool2d((1, W))`` is the
  average of μ and σ), ``L`` tokens;
* content tokens ``c(x) = Σ_l a_l V_l μ_l + b`` (``V_l: W_l→W_t``, ``Linear(L→1)`` over layers),
  repeated ``n_img_ctx`` (4) times — the official loop applies the same layer each time, so the
  4 tokens are equal;
* style-mapped tokens ``s_l(x) = D_l relu(C_l pool([μ_l ‖ σ_l]))`` (``C_l: W_l→h_s``,
  ``D_l: h_s→W_t``; ``pool`` = ``AdaptiveAvgPool1d(W_l)`` on the 2W_l-vector, i.e. the mean of
  each adjacent pair), trained to imitate the source image's domain tokens, for the
  source-free test.

Source image ``i`` is paired with target image ``i`` (same batch size, as the official code;
with unequal sizes, index ``i mod B``). Per image, one prompt per class::

    [SOS] [d(x_s,i)] [d(x_t,i)] [c(x)] CLASS . [EOT]      (x = x_s,i for the source prompts,
                                                           x = x_t,i for the target prompts)

so a step encodes ``(B_s + B_t)·C`` text sequences; the prefix ``[SOS][ctx]`` an image's C
prompts share is encoded once (the text transformer is causal), and each class suffix is cut at
its EOT (``shared_prefix: false``: all sequences in one batch cut at the longest EOT). With
``t_{i,k}`` the normalised text features and ``f`` the normalised image feature,
``z_{i,k} = s · f_i·t_{i,k}`` (``s`` = CLIP's logit scale, 100). Losses (the official code's):

* ``source_ce`` = ``CE(z_s, y)``;
* ``style_mse`` = ``MSE(d(x_s), s(x_s))`` over all ``[B, L, W_t]`` entries, weight 0.1;
* ``target_entropy``, weight 0.01: ``entropy: code`` (default) — the official ``entropy_loss``
  first L2-normalises the target probabilities ``p = softmax(z_t)`` over the *batch* dimension
  (``q_{·k} = p_{·k}/‖p_{·k}‖``), then ``mean_i −Σ_k q_ik log(q_ik + 1e-8)``;
  ``entropy: paper`` — the per-sample entropy ``mean_i −Σ_k p_ik log(p_ik + 1e-8)``;
* ``text_kl`` = ``KLDivLoss(batchmean)(log_softmax(T_s, dim=class), softmax(T_t, dim=class))``
  with ``T [B, C, D]`` the normalised text features, weight 1 — the softmax is over the class
  dimension of the stacked features, as the official code computes it.

Test-time prompts (``inference``): ``self`` (default) puts the image's own domain tokens in both
slots, ``[d(x)][d(x)][c(x)]``, which is what the official model computes when a test batch is
given as both its source and its target input (the released trainers need a hand-patched Dassl
at evaluation; the patch is not published, so this is our reading); ``source_free`` is the
paper's source-free test, ``[s(x)][d(x)][c(x)]``, the style-mapping network hallucinating the
source style.

Official-code bug fixed by default: the RN50 trainer keeps the first projection of each
projector in plain Python lists, so those layers are never registered, never trained and never
saved (random at every load). ``rn50_untrained_first_layers: true`` reproduces that (they are
then frozen at their seeded initialisation). Hidden sizes ``h_d, h_s``: 256 / 384 (RN50,
ViT-B/16, text width 512), 512 / 640 (ViT-L/14, text width 768); other widths ``W_t/2, 3W_t/4``.

Trained with the feature cache: the cache stores ``[f(x) ‖ statistics]`` per image and view
(:class:`~vlda.models.layer_stats.LayerStatsEncoder`), so a step runs only the projectors and the
text encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda import distributed as D
from vlda.config.search import Distribution, LogUniform
from vlda.data.encoder import ImageEncoder
from vlda.methods.base import Method, Task
from vlda.models.backbone import VisionLanguageBackbone, eot_positions
from vlda.models.layer_stats import LayerStatsEncoder, StatsLayout, encode_with_stats, stats_layout
from vlda.models.shared_prefix import encode_with_shared_prefix, supports_shared_prefix

_HIDDEN = {512: (256, 384), 768: (512, 640)}  # text width -> (h_d, h_s) of the official trainers


@dataclass
class ADCLIPParams:
    n_img_ctx: int = 4
    domain_hidden: int | None = None
    style_hidden: int | None = None
    style_weight: float = 0.1
    entropy_weight: float = 0.01
    kl_weight: float = 1.0
    entropy: Literal["code", "paper"] = "code"  # batch-normalised (official) | per-sample
    inference: Literal["self", "source_free"] = "self"
    rn50_untrained_first_layers: bool = False
    template: str = "{classname}."
    shared_prefix: bool = True


def _linears(widths: tuple[int, ...], out: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(w, out) for w in widths)


class StyleProjectors(nn.Module):
    """The three projectors of AD-CLIP (see the module docstring), from the flat statistics."""

    def __init__(self, layout: StatsLayout, text_width: int, n_img_ctx: int, h_d: int, h_s: int) -> None:
        super().__init__()
        widths, n = layout.widths, len(layout.widths)
        self.layout, self.n_img_ctx = layout, n_img_ctx
        self.domain_in, self.domain_out = _linears(widths, h_d), _linears((h_d,) * n, text_width)
        self.image_in, self.image_mix = _linears(widths, text_width), nn.Linear(n, 1)
        self.style_in, self.style_out = _linears(widths, h_s), _linears((h_s,) * n, text_width)

    def first_layers(self) -> list[nn.Parameter]:
        """The first projection of each projector (unregistered in the official RN50 trainer)."""
        return [p for m in (self.domain_in, self.image_in, self.style_in) for p in m.parameters()]

    def domain_tokens(self, stats: Tensor) -> Tensor:
        """``[B, S]`` -> ``[B, L, W_t]``."""
        per = self.layout.split(stats)
        return torch.stack([b(a((mu + sd) / 2)) for (mu, sd), a, b in zip(per, self.domain_in, self.domain_out, strict=True)], 1)

    def content_tokens(self, stats: Tensor) -> Tensor:
        """``[B, S]`` -> ``[B, n_img_ctx, W_t]`` (equal tokens)."""
        per = self.layout.split(stats)
        feats = torch.stack([v(mu) for (mu, _), v in zip(per, self.image_in, strict=True)], 2)  # [B, W_t, L]
        token = self.image_mix(feats).transpose(1, 2)  # [B, 1, W_t]
        return token.expand(-1, self.n_img_ctx, -1)

    def style_tokens(self, stats: Tensor) -> Tensor:
        """``[B, S]`` -> ``[B, L, W_t]``: the pairwise mean of ``[μ_l ‖ σ_l]``, then MLP."""
        out = []
        for (mu, sd), c, d in zip(self.layout.split(stats), self.style_in, self.style_out, strict=True):
            pooled = torch.cat([mu, sd], 1).unflatten(1, (-1, 2)).mean(2)
            out.append(d(F.relu(c(pooled))))
        return torch.stack(out, 1)


class ADCLIP(Method):
    """AD-CLIP (see the module docstring)."""

    name = "adclip"
    Params = ADCLIPParams
    artefact = "the three projectors (CLIP stays frozen)"
    search_space: ClassVar[Mapping[str, Distribution]] = {
        "optim.lr": LogUniform(1e-3, 3e-2), "method.entropy_weight": LogUniform(1e-3, 1e-1),
    }
    params: ADCLIPParams
    token_prefix: Tensor
    token_suffix: Tensor
    eot_index: Tensor

    def __init__(self, backbone: nn.Module, task: Task, params: ADCLIPParams) -> None:
        super().__init__(backbone, task, params)
        if params.n_img_ctx < 1:
            raise ValueError("adclip: n_img_ctx must be at least 1")
        b = self.backbone
        self.layout = stats_layout(b)
        h_d, h_s = _HIDDEN.get(b.text_width, (b.text_width // 2, 3 * b.text_width // 4))
        self.projectors = StyleProjectors(
            self.layout, b.text_width, params.n_img_ctx, params.domain_hidden or h_d, params.style_hidden or h_s,
        )
        if params.rn50_untrained_first_layers:
            for p in self.projectors.first_layers():
                p.requires_grad_(False)
        self._build_prompts(b)

    @property
    def n_ctx(self) -> int:
        return 2 * len(self.layout.widths) + self.params.n_img_ctx

    def _build_prompts(self, b: VisionLanguageBackbone) -> None:
        """``"X X … X CLASS."`` token embeddings (official), cut after the longest EOT."""
        texts = [" ".join(["X"] * self.n_ctx) + " " + self.params.template.format(classname=n.replace("_", " "))
                 for n in self.task.prompt_names]
        tokens = b.tokenize(texts).to(b.device)
        eot = eot_positions(tokens)
        with torch.no_grad():
            emb = b.embed_tokens(tokens[:, : int(eot.max()) + 1]).float()
        self.register_buffer("token_prefix", emb[:, :1], persistent=False)  # [C, 1, W_t]
        self.register_buffer("token_suffix", emb[:, 1 + self.n_ctx :], persistent=False)  # [C, S, W_t]
        self.register_buffer("eot_index", eot, persistent=False)  # [C]

    # -- features ---------------------------------------------------------------------------
    def cache_encoder(self) -> ImageEncoder:
        return LayerStatsEncoder(self.backbone)

    def pretrained_image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """CLIP's image features ``f(x)`` ``[B, D]``: the first ``D`` columns of the cached rows."""
        return super().pretrained_image_features(batch)[:, : self.backbone.embed_dim]

    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[f(x) ‖ statistics]`` ``[B, D + S]`` (fp32), from the cache or the frozen encoder."""
        if "features" in batch:
            return batch["features"].float()
        with torch.no_grad():
            f, stats = encode_with_stats(self.backbone, batch["images"])
        return torch.cat([f.float(), stats.float()], 1)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        d = self.backbone.embed_dim
        return F.normalize(x[:, :d], dim=-1), x[:, d:]

    # -- text side --------------------------------------------------------------------------
    def text_features(self, ctx: Tensor) -> Tensor:
        """Per-image contexts ``[B, n_ctx, W_t]`` -> normalised text features ``[B, C, D]``.

        With ``shared_prefix`` (open_clip text towers), the ``[SOS][ctx_i]`` prefix an image's C
        prompts share is encoded once per image and each class suffix attends to it
        (:func:`~vlda.models.shared_prefix.encode_with_shared_prefix`; exact, the text
        transformer is causal); otherwise all ``B·C`` prompts go in one batch cut at the EOT."""
        n, c = ctx.shape[0], self.task.n_classes
        prefix = self.token_prefix.to(ctx.dtype)
        suffix = self.token_suffix.to(ctx.dtype)
        if self.params.shared_prefix and supports_shared_prefix(self.backbone):
            start = torch.cat([prefix[:1].expand(n, -1, -1), ctx], dim=1)  # [B, 1 + n_ctx, W_t]
            eot = self.eot_index.expand(n, -1)
            feats = encode_with_shared_prefix(self.backbone, start, suffix.expand(n, -1, -1, -1), eot)
            return F.normalize(feats.float(), dim=-1)
        emb = torch.cat([
            prefix.expand(n, -1, -1, -1), ctx[:, None].expand(-1, c, -1, -1), suffix.expand(n, -1, -1, -1),
        ], dim=2)
        feats = self.backbone.encode_text_embeddings(emb.flatten(0, 1), self.eot_index.repeat(n))
        return F.normalize(feats.float(), dim=-1).view(n, c, -1)

    def _scores(self, f: Tensor, text: Tensor) -> Tensor:
        return self.backbone.logit_scale * torch.einsum("bd,bcd->bc", f, text)

    # -- training ---------------------------------------------------------------------------
    def losses(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
        f_s, st_s = self._split(self.image_features(source))
        f_t, st_t = self._split(self.image_features(target))
        pj = self.projectors
        dom_s, dom_t = pj.domain_tokens(st_s), pj.domain_tokens(st_t)
        pair_t = torch.arange(len(f_s), device=f_s.device) % len(f_t)  # target partner of each source image
        pair_s = torch.arange(len(f_t), device=f_t.device) % len(f_s)
        text_s = self.text_features(torch.cat([dom_s, dom_t[pair_t], pj.content_tokens(st_s)], 1))
        text_t = self.text_features(torch.cat([dom_s[pair_s], dom_t, pj.content_tokens(st_t)], 1))
        probs_t = self._scores(f_t, text_t).softmax(dim=1)
        return {
            "source_ce": F.cross_entropy(self._scores(f_s, text_s), source["labels"]),
            "style_mse": F.mse_loss(pj.style_tokens(st_s), dom_s),
            "target_entropy": entropy_term(probs_t, self.params.entropy),
            "text_kl": F.kl_div(F.log_softmax(text_s, dim=1), F.softmax(text_t[pair_t], dim=1), reduction="batchmean"),
        }

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"style_mse": p.style_weight, "target_entropy": p.entropy_weight, "text_kl": p.kl_weight}

    def param_groups(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """The style-mapping projector serves only ``style_mse``; the others every objective."""
        pj = self.projectors
        style = {id(p) for m in (pj.style_in, pj.style_out) for p in m.parameters()}
        trainable = self.trainable_parameters()
        return [p for p in trainable if id(p) not in style], {"style_mse": [p for p in trainable if id(p) in style]}

    # -- prediction -------------------------------------------------------------------------
    def logits(self, features: Tensor) -> Tensor:
        f, stats = self._split(features)
        pj = self.projectors
        dom = pj.domain_tokens(stats)
        first = pj.style_tokens(stats) if self.params.inference == "source_free" else dom
        return self._scores(f, self.text_features(torch.cat([first, dom, pj.content_tokens(stats)], 1)))


def entropy_term(probs: Tensor, kind: str = "code") -> Tensor:
    """AD-CLIP's target entropy of ``probs [B, C]`` (see the module docstring): ``code`` —
    L2-normalise each class column over the batch first (official ``entropy_loss``); ``paper`` —
    the plain per-sample entropy. Both ``mean_i −Σ_k q_ik log(q_ik + 1e-8)``."""
    q = probs
    if kind == "code" and D.initialised():  # column norms of the global batch (vlda.distributed)
        q = probs / D.all_sum_grad(probs.pow(2).sum(dim=0, keepdim=True)).sqrt().clamp_min(1e-12)
    elif kind == "code":
        q = F.normalize(probs, dim=0)
    return -(q * torch.log(q + 1e-8)).sum(dim=1).mean()


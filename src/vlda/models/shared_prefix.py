"""A text encoder for learnable prompts that does no redundant work (exact, causal transformer).

CLIP's text transformer is causal, and only the feature at the end-of-text (EOT) token is read.
Three consequences, all exact, are used here (:func:`encode_with_shared_prefix`):

1. **A prefix shared by many prompts is encoded once.** With a context that is not
   class-specific, every class prompt of a domain starts with the same tokens
   ``[SOS][ctx_1..ctx_M1][dom_1..dom_M2]`` (P = 1 + M1 + M2 positions); their hidden states are
   the same in every prompt, so they are computed once per group and each class's suffix
   ``CLASS_k ... [EOT]`` attends to that group's prefix keys and values (broadcast). With a
   class-specific context only ``[SOS]`` is shared (P = 1).
2. **Prompts are cut at the EOT.** All suffixes are cut after the longest EOT; what follows a
   shorter prompt's EOT is padding it never sees (causal), so nothing past the longest EOT is
   computed and every prompt goes through in one batch (one batch per length was slower: more,
   smaller operations).
3. **The last layer runs only at the EOT.** Keys and values are needed at every position, but
   queries, attention output, MLP and the final LayerNorm only at each prompt's EOT.

Per layer, with G groups of C prompts::

    prefix  x_p [G, P, W]         causal self-attention over the prefix
    suffix  x_s [G C, S, W]       attends to its group's prefix (all P positions; one
                                  [h, G, C S, d] @ [h, G, d, P] product, no per-prompt copy)
                                  and causally to its own S positions

Gradients flow into the prefix (the learnable contexts) through the broadcast keys/values, so
the backward pass shrinks the same way. Office-Home (C = 65, P = 33, S ≈ 5): about 570 token
positions per pass instead of 65 x 40 = 2600.

The result equals the batched path (:meth:`PromptLearner.forward`) up to floating-point
rounding (different matmul shapes; equal to 1e-12 in float64), checked in
``tests/models/test_shared_prefix.py``. Only open_clip's own text transformer
(``ResidualAttentionBlock`` with ``nn.MultiheadAttention``, a causal mask, no gradient
checkpointing) is supported; :func:`prompt_features` falls back to the batched path for anything
else (Hugging Face text towers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeGuard, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.prompt_learner import PromptLearner

if TYPE_CHECKING:
    from vlda.models.open_clip_backbone import OpenClipBackbone


def supports_shared_prefix(backbone: VisionLanguageBackbone) -> TypeGuard[OpenClipBackbone]:
    """True when the backbone's text transformer is one this module re-implements exactly."""
    from vlda.models.open_clip_backbone import OpenClipBackbone

    if not isinstance(backbone, OpenClipBackbone):
        return False
    try:
        from open_clip.transformer import ResidualAttentionBlock
    except ImportError:  # pragma: no cover
        return False
    m = backbone.model
    tr = getattr(m, "transformer", None)
    if tr is None or getattr(m, "attn_mask", None) is None or getattr(tr, "grad_checkpointing", False):
        return False
    for blk in tr.resblocks:
        if type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv"):
            return False
        attn = blk.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            return False
        if attn.bias_k is not None or attn.add_zero_attn:
            return False
    return True


def _causal_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Masked softmax attention ``[..., L, d]`` (the prefix's own self-attention)."""
    s = (q @ k.transpose(-1, -2)).masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _prefixed_attention(
    q: Tensor, k_prefix: Tensor, v_prefix: Tensor, k: Tensor, v: Tensor, mask: Tensor
) -> Tensor:
    """Attention of ``G x C`` suffixes over their group's prefix and, causally, over themselves.

    Shapes (``h`` heads of width ``d``; ``n = G C`` prompts, group-major)::

        q                  [h, n, Lq, d]  queries (Lq = L, or 1 at the last layer)
        k_prefix, v_prefix [h, G, P, d]   each group's prefix keys and values
        k, v               [h, n, L, d]   the suffixes' own keys and values
        mask               broadcastable to [n, Lq, L], True where a query may not look

    The layout keeps a group's prompts and their positions adjacent, so the prefix block is one
    ``[h, G, C Lq, d] @ [h, G, d, P]`` product: no copy of the prefix per prompt, and a plain
    matmul in the backward rather than a scatter.

    Returns ``[h, n, Lq, d]``: ``softmax([q k_p^T, q k^T] masked) [v_p; v]``.
    """
    h, n, lq, d = q.shape
    g, p = k_prefix.shape[1], k_prefix.shape[2]
    s_prefix = (q.reshape(h, g, n // g * lq, d) @ k_prefix.transpose(-1, -2)).reshape(h, n, lq, p)
    s_self = (q @ k.transpose(-1, -2)).masked_fill(mask, float("-inf"))
    w = torch.softmax(torch.cat([s_prefix, s_self], dim=-1), dim=-1)
    w_prefix, w_self = w.split([p, k.shape[2]], dim=-1)
    out = (w_prefix.reshape(h, g, n // g * lq, p) @ v_prefix).reshape(h, n, lq, d)
    return out + w_self @ v


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """``[n, L, W]`` -> ``[h, n, L, W / h]`` (a view)."""
    n, length, width = x.shape
    return x.reshape(n, length, heads, width // heads).permute(2, 0, 1, 3)


def _join_heads(x: Tensor) -> Tensor:
    """``[h, n, L, d]`` -> ``[n, L, h * d]``."""
    h, n, length, d = x.shape
    return x.permute(1, 2, 0, 3).reshape(n, length, h * d)


def encode_with_shared_prefix(
    backbone: OpenClipBackbone, prefix: Tensor, suffix: Tensor, eot_index: Tensor
) -> Tensor:
    """Text features of prompts ``prefix[g] ‖ suffix[g, c]``.

    Args:
        backbone: an open_clip backbone (see :func:`supports_shared_prefix`).
        prefix: ``[G, P, W]`` token embeddings of each group's shared prefix (``P >= 1``).
        suffix: ``[G, C, S, W]`` token embeddings of each prompt's own part; positions after its
            EOT may hold anything (causal).
        eot_index: ``[G, C]`` EOT position of each prompt in the *full* sequence (``>= P``).

    Returns:
        Unnormalised text features ``[G, C, D]``.
    """
    m = backbone.model
    g, p, width = prefix.shape
    _, c, s, _ = suffix.shape
    device = prefix.device
    rel = (eot_index.to(device) - p).reshape(g, c)  # EOT position within the suffix
    if int(rel.min()) < 0 or int(rel.max()) >= s:
        raise ValueError("every EOT must lie in the suffix")
    if p + int(rel.max()) + 1 > m.positional_embedding.shape[0]:
        raise ValueError(f"prompt of {p + int(rel.max()) + 1} tokens exceeds the text context")
    cast = m.transformer.get_cast_dtype()
    pos = m.positional_embedding.to(cast)
    xp = prefix.to(cast) + pos[:p]  # [G, P, W]
    # Every suffix is cut at the longest EOT: the padding after a shorter prompt's EOT is never
    # seen by it (causal), and one batch of all prompts beats one batch per length.
    length = int(rel.max()) + 1
    x = suffix[:, :, :length].reshape(g * c, length, width).to(cast) + pos[p : p + length]  # [G C, L, W]
    causal_s = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    causal_p = torch.ones(p, p, dtype=torch.bool, device=device).triu(1)
    # At the last layer each prompt's query sits at its own EOT and looks no further.
    at = rel.reshape(g * c)
    pick = at.reshape(-1, 1, 1).expand(-1, 1, width)  # [G C, 1, W]
    past_eot = (torch.arange(length, device=device) > at.unsqueeze(-1)).unsqueeze(-2)  # [G C, 1, L]

    blocks = list(m.transformer.resblocks)
    for li, blk in enumerate(blocks):
        attn: nn.MultiheadAttention = blk.attn
        heads = attn.num_heads
        scale = 1.0 / math.sqrt(width // heads)
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None,) * 3
        last = li == len(blocks) - 1
        hp = blk.ln_1(xp)
        kp, vp = _split_heads(F.linear(hp, w_k, b_k), heads), _split_heads(F.linear(hp, w_v, b_v), heads)  # [h, G, P, d]
        if not last:  # the prefix's outputs of the last layer are never read
            qp = _split_heads(F.linear(hp, w_q, b_q), heads) * scale
            ap = _join_heads(_causal_attention(qp, kp, vp, causal_p))
            xp = xp + blk.ls_1(F.linear(ap, attn.out_proj.weight, attn.out_proj.bias))
            xp = xp + blk.ls_2(blk.mlp(blk.ln_2(xp)))
        hs = blk.ln_1(x)
        ks, vs = _split_heads(F.linear(hs, w_k, b_k), heads), _split_heads(F.linear(hs, w_v, b_v), heads)
        mask = causal_s
        if last:  # queries, attention output and MLP only at each prompt's EOT
            hs, x, mask = hs.gather(1, pick), x.gather(1, pick), past_eot
        qs = _split_heads(F.linear(hs, w_q, b_q), heads) * scale
        a = _join_heads(_prefixed_attention(qs, kp, vp, ks, vs, mask))
        x = x + blk.ls_1(F.linear(a, attn.out_proj.weight, attn.out_proj.bias))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    eot = x[:, 0]  # [G C, W]
    x = m.ln_final(eot)
    proj = m.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x.reshape(g, c, -1)


def can_share_prefix(learner: PromptLearner) -> bool:
    """A prompt learner :func:`prompt_features` can encode with :func:`encode_with_shared_prefix`."""
    return learner.cut_at_eot and supports_shared_prefix(learner.backbone[0])


def prompt_features(learner: PromptLearner, domains: Sequence[int], shared_prefix: bool = True) -> Tensor:
    """L2-normalised text features ``[len(domains), C, D]``, equal to ``learner(domains)``.

    With ``shared_prefix`` (and a learner :func:`can_share_prefix` accepts) the prompts go
    through :func:`encode_with_shared_prefix`: prefix ``[SOS][ctx][dom_d]`` encoded once per
    domain (``[SOS]`` only with a class-specific context), prompts cut at the EOT, the
    last layer only at the EOT. Otherwise this is ``learner(domains)``.
    """
    domains = list(domains)
    if not shared_prefix or not can_share_prefix(learner):
        return learner(domains)
    backbone = cast("OpenClipBackbone", learner.backbone[0])  # can_share_prefix checked it
    idx = torch.as_tensor(domains, device=learner.ctx.device)
    dtype = learner.token_prefix.dtype
    n, c = len(domains), learner.n_classes
    ctx = learner.ctx.to(dtype)
    dom = torch.stack([learner.domain_ctx[i] for i in domains]).to(dtype) if len(learner.domain_ctx) else None
    eot = learner.eot_index[idx]  # [n, C]
    sos = learner.token_prefix[idx, 0]  # [n, 1, W]: the same for every class
    if ctx.dim() == 2:  # shared context: [SOS][ctx][dom] is common to the domain's C prompts
        prefix = torch.cat([sos, ctx.unsqueeze(0).expand(n, -1, -1), *([dom] if dom is not None else [])], dim=1)
        suffix = learner.token_suffix[idx]  # [n, C, S, W]
    else:  # class-specific context: only [SOS] is common
        prefix = sos
        parts = [ctx.unsqueeze(0).expand(n, -1, -1, -1)]
        if dom is not None:
            parts.append(dom.unsqueeze(1).expand(-1, c, -1, -1))
        parts.append(learner.token_suffix[idx])
        suffix = torch.cat(parts, dim=2)
    s = int(eot.max()) + 1 - prefix.shape[1]
    feats = encode_with_shared_prefix(backbone, prefix, suffix[:, :, :s], eot)
    return nn.functional.normalize(feats.float(), dim=-1)

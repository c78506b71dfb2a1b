"""The stand-in CLIP's text tower on token *embeddings*, so contexts can be learned in place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from open_clip.model import CLIP

__all__ = ["encode_token_embeddings"]


def encode_token_embeddings(model: CLIP, embeddings: Tensor, tokens: Tensor) -> Tensor:
    """``model.encode_text`` from token embeddings ``[B, L, W]`` of the token ids ``[B, L]``.

    The ids only locate each prompt's end token (the largest id, where CLIP reads the feature);
    sequences are cut after the longest end token, which leaves the features unchanged (causal
    attention). Returns unnormalised features ``[B, D]``.
    """
    length = int(tokens.argmax(-1).max()) + 1
    x = embeddings[:, :length] + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens[:, :length].argmax(-1)]
    proj = model.text_projection
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj

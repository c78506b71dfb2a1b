"""The one interface every vision-language backbone offers to the rest of vlda.

A backbone is a frozen dual encoder (CLIP and its kin). Prompt learning needs more than
``encode_text(tokens)``: it needs to put learned vectors in place of some token embeddings and
run the text transformer on the result. Because CLIP's text transformer is causal, the
feature read at the end-of-text (EOT) token depends only on the tokens before it, so every
sequence can be cut right after its last EOT token without changing any result; the cut is
exact and saves most of the 77-token context for short prompts.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

SOT_TOKEN = 49406
EOT_TOKEN = 49407


class VisionLanguageBackbone(nn.Module, ABC):
    """A frozen image encoder and text encoder sharing one embedding space.

    Attributes:
        name: human-readable id, e.g. ``"open_clip:ViT-B-16@openai"``.
        weights_id: identity of the weights (tag or file path + size + mtime), part of cache keys.
        image_size: input resolution (pixels, square).
        mean, std: per-channel normalisation of the image preprocessing.
        embed_dim: dimension D of the joint space.
        text_width: width W of the token embeddings.
        context_length: maximum number of tokens L_max of the text encoder.
    """

    name: str
    weights_id: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    text_width: int
    context_length: int

    @abstractmethod
    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` (normalised) -> unnormalised image features ``[B, D]``."""

    @abstractmethod
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, L]`` -> token embeddings ``[N, L, W]`` (no positional embedding)."""

    @abstractmethod
    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        """Run the text transformer on token embeddings and read the EOT position.

        Args:
            embeddings: ``[N, L, W]`` token embeddings, ``L <= context_length``; positions after
                ``eot_index`` may hold anything (the transformer is causal).
            eot_index: ``[N]`` position of each sequence's end-of-text token.

        Returns:
            Unnormalised text features ``[N, D]``.
        """

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """CLIP's temperature ``exp(t)`` (100 for the released models)."""

    def image_tower(self) -> nn.Module:
        """The module whose parameters :meth:`encode_image` uses (the image encoder a method
        may fine-tune, e.g. CMKD). Its parameters keep the names of the tower's own
        ``named_parameters()``."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its image tower")

    def set_image_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the image tower's activations in the backward pass instead of storing
        them (less memory, one more forward). ``ValueError`` when the tower cannot."""
        raise ValueError(f"{self.name}: gradient checkpointing of the image tower is not supported")

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Texts -> token ids ``[N, context_length]`` with the real CLIP BPE vocabulary."""
        return clip_tokenize(texts, self.context_length)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, L]`` -> unnormalised text features ``[N, D]``, cut at the last EOT."""
        eot = eot_positions(tokens)
        cut = int(eot.max()) + 1
        tokens = tokens[:, :cut]
        return self.encode_text_embeddings(self.embed_tokens(tokens), eot)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Convenience: strings -> L2-normalised text features ``[N, D]`` (no gradient)."""
        device = self.device
        outs = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[i : i + batch_size]).to(device)
            outs.append(self.encode_text(tokens).float())
        return nn.functional.normalize(torch.cat(outs), dim=-1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def fingerprint(self) -> str:
        """Stable id of architecture + weights, used to key the feature cache."""
        raw = f"{type(self).__name__}|{self.name}|{self.weights_id}|{self.image_size}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def eot_positions(tokens: Tensor) -> Tensor:
    """Index of the first end-of-text token in each row of ``tokens`` ``[N, L]`` -> ``[N]``."""
    is_eot = tokens == EOT_TOKEN
    if not bool(is_eot.any(dim=1).all()):
        raise ValueError("every token sequence must contain the end-of-text token (49407)")
    return is_eot.int().argmax(dim=1)


_TOKENIZERS: dict[int, SimpleTokenizer] = {}


def clip_tokenize(texts: Sequence[str], context_length: int = 77) -> Tensor:
    """Tokenise with the CLIP BPE vocabulary that ships inside open_clip (works offline).

    A text longer than the context is an error rather than a silent truncation that would drop
    the end-of-text token.
    """
    import open_clip

    tok = _TOKENIZERS.get(context_length)
    if tok is None:
        tok = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
        _TOKENIZERS[context_length] = tok
    texts = list(texts)
    for text in texts:
        # open_clip would silently truncate (keeping an EOT): refuse instead.
        if len(tok.encode(text)) + 2 > context_length:
            raise ValueError(
                f"text longer than the {context_length}-token context of the text encoder: {text!r}"
            )
    return tok(texts)

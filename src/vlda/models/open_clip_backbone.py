"""open_clip models (OpenAI CLIP weights, LAION weights, local files) behind the vlda interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from vlda.models.backbone import VisionLanguageBackbone

if TYPE_CHECKING:
    from open_clip.model import CLIP


class OpenClipBackbone(VisionLanguageBackbone):
    """Wraps an ``open_clip.model.CLIP`` whose text tower is CLIP's causal transformer.

    ``CustomTextCLIP`` models (a Hugging Face text tower, e.g. xlm-roberta) are refused: their
    text encoder is not causal, so neither prompt placement nor the EOT cut applies.
    """

    model: CLIP

    def __init__(
        self,
        model: nn.Module,
        name: str,
        weights_id: str,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        if not hasattr(model, "transformer") or not hasattr(model, "token_embedding"):
            raise ValueError(
                f"{name}: only open_clip models with CLIP's own text transformer are supported "
                "(CustomTextCLIP models with a Hugging Face text tower are not)"
            )
        # Checked above: a CLIP with its own causal text transformer.
        self.model = cast("CLIP", model.eval().requires_grad_(False))
        self.name = name
        self.weights_id = weights_id
        self.image_size = int(image_size)
        # Per-channel values (three); a list (e.g. from a JSON config) is stored as a tuple.
        self.mean = cast("tuple[float, float, float]", tuple(mean))
        self.std = cast("tuple[float, float, float]", tuple(std))
        self.text_width = self.model.token_embedding.weight.shape[1]
        self.context_length = int(self.model.context_length)
        proj = self.model.text_projection
        if proj is None:
            self.embed_dim = self.text_width
        elif isinstance(proj, nn.Linear):
            self.embed_dim = proj.out_features
        else:
            self.embed_dim = proj.shape[1]

    def train(self, mode: bool = True) -> OpenClipBackbone:
        # The backbone is frozen: keep BatchNorm (ModifiedResNet) and dropout in eval mode.
        return super().train(False)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def image_tower(self) -> nn.Module:
        """``model.visual`` (a ``VisionTransformer`` or ``ModifiedResNet``)."""
        return self.model.visual

    def set_image_grad_checkpointing(self, enable: bool = True) -> None:
        """ViT towers only: open_clip's ``ModifiedResNet.set_grad_checkpointing`` does nothing."""
        blocks = getattr(self.model.visual, "transformer", None)
        if blocks is None or not hasattr(blocks, "grad_checkpointing"):
            raise ValueError(
                f"{self.name}: gradient checkpointing needs a ViT image tower; open_clip's "
                f"{type(self.model.visual).__name__} does not support it"
            )
        blocks.grad_checkpointing = bool(enable)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.model.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        m = self.model
        length = embeddings.shape[1]
        cast_dtype = m.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().reshape(-1)[0])

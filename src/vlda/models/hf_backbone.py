"""Hugging Face ``transformers`` CLIPModel behind the vlda interface."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from vlda.models.backbone import VisionLanguageBackbone

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPTextConfig, CLIPVisionConfig


class HFClipBackbone(VisionLanguageBackbone):
    """Wraps ``transformers.CLIPModel`` (hub id or local directory).

    Tokenisation uses the CLIP BPE vocabulary shipped in open_clip, which is the same vocabulary
    (ids 49406/49407 for start/end) as OpenAI's CLIP checkpoints on the hub. This avoids a known
    trap: offline, ``CLIPTokenizer.from_pretrained`` can return a 2-token stub without raising.
    """

    model: CLIPModel

    def __init__(
        self,
        model: CLIPModel,
        name: str,
        weights_id: str,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        # transformers types the sub-configs as ``dict | config | None`` (what CLIPConfig accepts);
        # on a built CLIPModel they are always the config objects.
        text_cfg = cast("CLIPTextConfig", model.config.text_config)
        vision_cfg = cast("CLIPVisionConfig", model.config.vision_config)
        if text_cfg.vocab_size != 49408:
            raise ValueError(
                f"{name}: text vocabulary of size {text_cfg.vocab_size}; only CLIP's 49,408-token "
                "BPE vocabulary is supported"
            )
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.weights_id = weights_id
        # CLIP's square input size, one int (transformers also allows a pair for other models).
        self.image_size = int(vision_cfg.image_size)  # type: ignore[arg-type]
        # Per-channel values (three); a list (e.g. from a JSON config) is stored as a tuple.
        self.mean = cast("tuple[float, float, float]", tuple(mean))
        self.std = cast("tuple[float, float, float]", tuple(std))
        self.text_width = int(text_cfg.hidden_size)
        self.context_length = int(text_cfg.max_position_embeddings)
        # Typed Optional in transformers, but a CLIPModel always has a projection (default 512).
        self.embed_dim = int(model.config.projection_dim)  # type: ignore[arg-type]
        params = inspect.signature(model.text_model.encoder.forward).parameters
        self._legacy_causal_arg = "causal_attention_mask" in params

    def train(self, mode: bool = True) -> HFClipBackbone:
        return super().train(False)

    def encode_image(self, images: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=images)
        return out if isinstance(out, Tensor) else out.pooler_output

    def image_tower(self) -> nn.Module:
        """``vision_model`` and ``visual_projection``, in a ``ModuleDict`` built on each call
        (not registered, so no parameter is listed twice in the backbone)."""
        return nn.ModuleDict({"vision_model": self.model.vision_model, "visual_projection": self.model.visual_projection})

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.model.text_model.embeddings.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        tm = self.model.text_model
        length = embeddings.shape[1]
        h = tm.embeddings(inputs_embeds=embeddings)
        causal = torch.full((length, length), float("-inf"), device=h.device, dtype=h.dtype)
        causal = causal.triu(1)[None, None]
        if self._legacy_causal_arg:  # transformers 4.x
            out = tm.encoder(inputs_embeds=h, attention_mask=None, causal_attention_mask=causal)
        else:
            out = tm.encoder(inputs_embeds=h, attention_mask=causal)
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state
        last = tm.final_layer_norm(last)
        pooled = last[torch.arange(last.shape[0], device=last.device), eot_index]
        return self.model.text_projection(pooled)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

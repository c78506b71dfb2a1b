"""Tiny randomly initialised models of the real CLIP architectures, for tests and smoke runs.

Same classes as the real models (open_clip ``VisionTransformer`` and ``ModifiedResNet`` towers,
Hugging Face ``CLIPModel``), same 49,408-token vocabulary and 77-token context, a few thousand
times fewer parameters. Initialisation is seeded, so a tiny model is the same in every run.
"""

from __future__ import annotations

import torch

from vlda.data.transforms import CLIP_MEAN, CLIP_STD
from vlda.models.backbone import VisionLanguageBackbone

TINY_VARIANTS = ("vit", "resnet", "hf")


def tiny_backbone(variant: str = "vit", image_size: int = 32, seed: int = 0) -> VisionLanguageBackbone:
    """A tiny random CLIP: ``"vit"`` / ``"resnet"`` (open_clip) or ``"hf"`` (transformers)."""
    if variant not in TINY_VARIANTS:
        raise ValueError(f"unknown tiny backbone {variant!r}; expected one of {TINY_VARIANTS}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if variant == "hf":
            return _tiny_hf(image_size)
        return _tiny_open_clip(variant, image_size)


def _tiny_open_clip(variant: str, image_size: int) -> VisionLanguageBackbone:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from vlda.models.open_clip_backbone import OpenClipBackbone

    if variant == "vit":
        vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=image_size)
    else:
        vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, head_width=16, image_size=image_size)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    model = CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text)
    return OpenClipBackbone(model, f"tiny:{variant}", f"random-{variant}", image_size, CLIP_MEAN, CLIP_STD)


def _tiny_hf(image_size: int) -> VisionLanguageBackbone:
    from transformers import CLIPConfig, CLIPModel

    from vlda.models.hf_backbone import HFClipBackbone

    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
            eos_token_id=49407, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=8,
        ),
        projection_dim=64,
    )
    model = CLIPModel(cfg)
    return HFClipBackbone(model, "tiny:hf", "random-hf", CLIP_MEAN, CLIP_STD)

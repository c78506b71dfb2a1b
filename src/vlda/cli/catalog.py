"""What ``vlda list`` shows, without importing torch (so that it answers at once).

The method and gradient-strategy names are kept here by hand; a test checks them against the
registries (:data:`vlda.methods.registry.METHODS`, :data:`vlda.gradients.registry.STRATEGIES`),
so a method added there must be added here too.
"""

from __future__ import annotations

from vlda.data.benchmarks import list_benchmarks
from vlda.models.known import BACKBONE_NOTES, KNOWN_BACKBONES, OFFLINE_BACKBONES

__all__ = ["GRADIENTS", "METHODS", "catalog"]

# name -> what it trains (prompt methods use a CLIP backbone; classic ones a timm classifier)
METHODS: dict[str, str] = {
    "adclip": "prompt learning (CLIP), prompts conditioned on each image's style",
    "cdan": "classic: image classifier (timm)",
    "cmkd": "fine-tunes CLIP's image encoder, distilled from zero-shot CLIP",
    "coop": "prompt learning (CLIP)",
    "dann": "classic: image classifier (timm)",
    "dapl": "prompt learning (CLIP)",
    "fixmatch": "classic: image classifier (timm)",
    "mcc": "classic: image classifier (timm)",
    "mpga": "prompt learning (CLIP), several sources",
    "pga": "prompt learning (CLIP)",
    "source_only": "classic: image classifier (timm)",
    "zeroshot": "no training (CLIP)",
}
GRADIENTS: tuple[str, ...] = ("gh", "ghpp", "pcgrad", "pga", "sum")


def catalog() -> dict:
    """``{"benchmarks", "methods", "gradients", "backbones", "offline_backbones",
    "backbone_notes"}`` (the JSON of ``vlda list --json``)."""
    return {
        "benchmarks": list_benchmarks(),
        "methods": sorted(METHODS),
        "gradients": list(GRADIENTS),
        "backbones": list(KNOWN_BACKBONES),
        "offline_backbones": list(OFFLINE_BACKBONES),
        "backbone_notes": dict(BACKBONE_NOTES),
    }

"""Build a backbone from a name: open_clip name + tag, Hugging Face id, or a local path.

Weights are named (downloaded when online, then cached by open_clip / huggingface_hub) or given
as a local file or directory, which always works offline. When weights cannot be had, the error
is one sentence saying what is missing and where to put it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vlda.data.transforms import CLIP_MEAN, CLIP_STD
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.hub import (
    drop_root_log,
    looks_like_path,
    offline_unless_hub_reachable,
    unavailable_reason,
)
from vlda.models.known import KNOWN_BACKBONES
from vlda.models.tiny import tiny_backbone
from vlda.models.weights_file import load_weights_file, local_weights_error, weights_file_error

if TYPE_CHECKING:
    from vlda.models.open_clip_backbone import OpenClipBackbone

BACKBONE_KINDS = ("open_clip", "hf", "tiny")
__all__ = [
    "BACKBONE_KINDS", "KNOWN_BACKBONES", "BackboneSpec", "WeightsNotFoundError", "load_backbone",
    "load_open_clip_dir",
]


class WeightsNotFoundError(FileNotFoundError):
    """Raised when pretrained weights are neither local nor downloadable."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build.

    Attributes:
        kind: ``"open_clip"``, ``"hf"`` or ``"tiny"`` (random tiny models for tests).
        name: open_clip model name (``"ViT-B-16"``), a directory holding
            ``open_clip_config.json`` and weights, a Hugging Face hub id or local directory, or the
            tiny variant (``"vit"``, ``"resnet"``, ``"hf"``).
        pretrained: open_clip tag (``"openai"``, ``"laion2b_s34b_b88k"``) or a local weights file;
            ``None`` for random weights (open_clip only) or when ``name`` is a directory.
    """

    kind: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        """``"open_clip:ViT-B-16@openai"``, ``"hf:openai/clip-vit-base-patch16"``, ``"tiny:vit"``."""
        kind, sep, rest = text.partition(":")
        if not sep or kind not in BACKBONE_KINDS:
            raise ValueError(
                f"backbone {text!r}: expected KIND:NAME[@WEIGHTS] with KIND one of "
                f"{', '.join(BACKBONE_KINDS)} (e.g. open_clip:ViT-B-16@openai)"
            )
        name, _, pretrained = rest.partition("@")
        return cls(kind, name, pretrained or None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" + (f"@{self.pretrained}" if self.pretrained else "")


def load_backbone(spec: BackboneSpec | str, device: str | torch.device = "cpu") -> VisionLanguageBackbone:
    """Build the frozen backbone described by ``spec`` on ``device``."""
    if isinstance(spec, str):
        spec = BackboneSpec.parse(spec)
    if spec.kind == "tiny":
        backbone = tiny_backbone(spec.name)
    elif spec.kind == "open_clip":
        backbone = _load_open_clip(spec)
    elif spec.kind == "hf":
        backbone = _load_hf(spec)
    else:
        raise ValueError(f"unknown backbone kind {spec.kind!r}; expected one of {BACKBONE_KINDS}")
    return backbone.to(device)


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"


def _load_open_clip(spec: BackboneSpec) -> VisionLanguageBackbone:
    import open_clip

    from vlda.models.open_clip_backbone import OpenClipBackbone

    name_path = Path(spec.name).expanduser()
    if name_path.is_dir():
        return load_open_clip_dir(name_path)
    if looks_like_path(spec.name):
        raise WeightsNotFoundError(
            f"Model directory {name_path} does not exist (expected a folder with "
            "open_clip_config.json and weights.pt)."
        )
    if spec.name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {spec.name!r}; see open_clip.list_models() "
            "(e.g. RN50, RN101, ViT-B-16, ViT-L-14)"
        )
    pretrained = spec.pretrained
    weights_id = pretrained or "random"
    if pretrained and looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"Weights file {path} for open_clip model {spec.name} does not exist; put the "
                f"checkpoint there or pass another path as model.pretrained."
            )
        weights_id = _file_id(path)
        pretrained = str(path)
    named = bool(pretrained and not looks_like_path(pretrained))
    hub = offline_unless_hub_reachable() if named else contextlib.nullcontext(False)
    try:
        with hub as offline, drop_root_log("Failed to download weights"):
            model = open_clip.create_model(spec.name, pretrained=pretrained)
    except Exception as err:  # torch / open_clip raise many types for a file they cannot load
        if not named and pretrained:
            raise local_weights_error(Path(pretrained), spec.name, err) from err
        if named and isinstance(err, RuntimeError | OSError | ValueError):
            raise WeightsNotFoundError(
                f"Could not get the {pretrained!r} weights of open_clip model {spec.name}: not in "
                f"the local cache and {unavailable_reason(offline, err)}; download them once with "
                f"network access or pass a local file, e.g. model.pretrained=/path/to/{spec.name}.pt."
            ) from err
        raise
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, tuple | list) else size
    return OpenClipBackbone(
        model, str(spec), weights_id, size, cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)
    )


def load_open_clip_dir(directory: Path) -> OpenClipBackbone:
    """Load ``directory/open_clip_config.json`` + ``weights.pt`` (vlda's own format, also used
    by the demo model) safely (``weights_only=True``)."""
    from open_clip.model import CLIP

    from vlda.models.open_clip_backbone import OpenClipBackbone

    cfg_path = directory / "open_clip_config.json"
    weights = next(
        (directory / n for n in ("weights.pt", "open_clip_pytorch_model.bin") if (directory / n).is_file()),
        None,
    )
    if not cfg_path.is_file() or weights is None:
        raise WeightsNotFoundError(
            f"{directory} must hold open_clip_config.json and weights.pt (a state_dict); "
            f"found: {sorted(p.name for p in directory.iterdir())}."
        )
    cfg = json.loads(cfg_path.read_text())
    model = CLIP(**cfg["model_cfg"])
    state = load_weights_file(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise local_weights_error(weights, str(directory), err) from err
    pre = cfg.get("preprocess_cfg", {})
    size = pre.get("size", cfg["model_cfg"]["vision_cfg"].get("image_size", 224))
    size = size[0] if isinstance(size, list) else size
    return OpenClipBackbone(
        model,
        f"open_clip:{directory}",
        _file_id(weights),
        size,
        tuple(pre.get("mean", CLIP_MEAN)),
        tuple(pre.get("std", CLIP_STD)),
    )


def _load_hf(spec: BackboneSpec) -> VisionLanguageBackbone:
    try:
        from transformers import CLIPModel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Hugging Face backbones need `pip install vlda[hf]` (transformers)") from err

    from vlda.models.hf_backbone import HFClipBackbone

    path = Path(spec.name).expanduser()
    local = path.is_dir()
    if not local and looks_like_path(spec.name) and not spec.name.count("/") == 1:
        raise WeightsNotFoundError(f"Hugging Face model directory {path} does not exist.")
    hub = contextlib.nullcontext(False) if local else offline_unless_hub_reachable()
    try:
        with hub as offline:
            model = CLIPModel.from_pretrained(str(path) if local else spec.name)
    except Exception as err:  # transformers / safetensors raise many types for a bad file
        if local:
            raise weights_file_error(path, err, what="Hugging Face model folder") from err
        if not isinstance(err, OSError):
            raise
        raise WeightsNotFoundError(
            f"Could not load Hugging Face CLIP {spec.name!r}: not a local directory, not in the "
            f"hub cache, and {unavailable_reason(offline, err)}; download it once with network "
            f"access or pass a local directory saved with save_pretrained, e.g. "
            f"model.name=/path/to/clip."
        ) from err
    mean, std = CLIP_MEAN, CLIP_STD
    pre = path / "preprocessor_config.json"
    if local and pre.is_file():
        cfg = json.loads(pre.read_text())
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    weights_id = _file_id(path / "config.json") if local else spec.name
    return HFClipBackbone(model, str(spec), weights_id, mean, std)

"""What the data layer needs of an image encoder (the feature cache), without importing models.

:class:`ImageEncoder` is a structural type: any object with these members is one. Every
vision-language backbone (:class:`vlda.models.backbone.VisionLanguageBackbone`: open_clip,
Hugging Face, tiny) already has them; nothing needs to subclass this.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ImageEncoder(Protocol):
    """A frozen image encoder, as the feature cache uses it.

    Attributes:
        fingerprint: stable id of architecture + weights; part of the cache key, so it must not
            change for the same weights (backbones: a 16-hex-digit sha256 prefix).
        embed_dim: ``D``, the size of the features ``encode_image`` returns.
        device: where ``encode_image`` expects its input.
        training: the ``nn.Module`` training flag (the cache encodes in eval mode and restores it).

    An optional ``name`` (a string) is shown in progress bars and stored in the cache's
    ``meta.json``; without one the class name is used.
    """

    training: bool

    @property
    def fingerprint(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def encode_image(self, images: Tensor) -> Tensor:
        """Normalised images ``[B, 3, H, W]`` -> unnormalised features ``[B, D]``."""
        ...

    def train(self, mode: bool = True) -> object: ...

    def eval(self) -> object: ...

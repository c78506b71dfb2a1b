"""Environment fixes applied once, before anything imports torchvision.

The PyPI ``torchvision==0.28.0`` wheel that matches torch 2.13 is a CUDA build; on a CPU-only
torch its fake-kernel registrations (``torchvision._meta_registrations``) fail at import with
``operator torchvision::nms does not exist``, which also breaks open_clip, timm and transformers.
Those registrations only matter for ``torch.compile`` of torchvision ops, which vlda never uses,
so on a CPU torch we stand in an empty module for them. On a CUDA torch nothing is changed.
"""

from __future__ import annotations

import sys
import types


def apply_torchvision_shim() -> None:
    """Let a CUDA-built torchvision import on a CPU-only torch (no-op elsewhere)."""
    import torch

    if torch.version.cuda is None and "torchvision" not in sys.modules:
        sys.modules.setdefault(
            "torchvision._meta_registrations",
            types.ModuleType("torchvision._meta_registrations"),
        )

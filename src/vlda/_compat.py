"""Environment fixes applied once, before anything imports torchvision.

The PyPI ``torchvision==0.28.0`` wheel that matches torch 2.13 is a CUDA build; on a CPU-only
torch its fake-kernel registrations (``torchvision._meta_registrations``) fail at import with
``operator torchvision::nms does not exist``, which also breaks open_clip, timm and transformers.
Those registrations only matter for ``torch.compile`` of torchvision ops, which vlda never uses,
so on a CPU torch we stand in an empty module for them. On a CUDA torch nothing is changed.

The check runs when torchvision imports that module, not when vlda is imported, so that
``import vlda.config`` (and a config mistake on the command line) does not pay for importing
torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

_TARGET = "torchvision._meta_registrations"


class _EmptyMetaRegistrations(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision._meta_registrations`` as an empty module on a CPU-only torch."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        import torch  # torchvision is being imported, so torch already is

        if torch.version.cuda is not None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def apply_torchvision_shim() -> None:
    """Let a CUDA-built torchvision import on a CPU-only torch (no-op elsewhere). Idempotent."""
    if not any(isinstance(f, _EmptyMetaRegistrations) for f in sys.meta_path):
        sys.meta_path.insert(0, _EmptyMetaRegistrations())

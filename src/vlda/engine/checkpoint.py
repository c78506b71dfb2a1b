"""Atomic checkpoint writes and safe loads.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then
renamed over the old one (``os.replace`` is atomic on POSIX), so a run killed at any moment
leaves either the previous checkpoint or the new one, never half a file (:mod:`vlda.files`
does the writing; ``save_atomic`` and ``write_text_atomic`` are its functions under the names
the engine has always used). Loading uses ``torch.load(weights_only=True)``: a checkpoint
cannot execute code.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from vlda.files import save_torch_atomic as save_atomic
from vlda.files import write_text_atomic

__all__ = ["link_atomic", "load_safe", "save_atomic", "write_text_atomic"]


def load_safe(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err


def link_atomic(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a second name of the file ``src`` (a hard link: no byte written
    twice), or an atomically replaced copy where the file system has no hard links. Replacing
    ``src`` later (an atomic write renames a new file over it) leaves ``dst`` unchanged."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

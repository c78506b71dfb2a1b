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

from vlda.files import save_torch_atomic as save_atomic
from vlda.files import write_text_atomic
from vlda.models.weights_file import load_weights_file

__all__ = ["RUN_WEIGHTS_ADVICE", "link_atomic", "load_safe", "resume_advice", "save_atomic", "write_text_atomic"]


RUN_WEIGHTS_ADVICE = "check the path, or use another of the run's weights files (selected.pt, last.pt)"


def load_safe(path: Path, what: str = "weights file", advice: str = RUN_WEIGHTS_ADVICE) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU. A missing file raises
    ``FileNotFoundError``; a damaged one (truncated, corrupt, holding pickled code) one sentence
    naming it, the cause and ``advice`` (:class:`~vlda.models.weights_file.DamagedWeightsError`,
    a ``ValueError``)."""
    return load_weights_file(path, what, advice)


def resume_advice(out: Path) -> str:
    """What to do when ``out/checkpoint.pt`` cannot be loaded on ``--resume``."""
    advice = "the run cannot be resumed from it: restart it with --overwrite (or another --out)"
    if (Path(out) / "last.pt").is_file():
        advice += "; its final weights in last.pt are intact (vlda eval --run DIR --weights last)"
    return advice


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

"""Atomic checkpoint writes and safe loads.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then
renamed over the old one (``os.replace`` is atomic on POSIX), so a run killed at any moment
leaves either the previous checkpoint or the new one, never half a file (:mod:`vlda.files`
does the writing; ``save_atomic`` and ``write_text_atomic`` are its functions under the names
the engine has always used). Loading uses ``torch.load(weights_only=True)``: a checkpoint
cannot execute code.

The resume state is two files: ``checkpoint.pt`` (step, optimizer state, history, RNG) and the
weights it names, ``checkpoint.weights-<step>.pt`` (the trainable state as every weights file
holds it: dense, or an RST sparse residual). The weights of an evaluation are written once:
``selected.pt`` and ``last.pt`` are hard links to that file (:func:`link_atomic`), so full
fine-tuning writes one copy of the encoder per evaluation, not one per file. The weights file is
written before ``checkpoint.pt`` and the previous one removed after it, so a run killed at any
moment still has a checkpoint whose weights exist.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from vlda.files import save_torch_atomic as save_atomic
from vlda.files import write_text_atomic
from vlda.models.weights_file import DamagedWeightsError, load_weights_file

__all__ = [
    "CHECKPOINT", "RUN_WEIGHTS_ADVICE", "WEIGHTS_PATTERN", "link_atomic", "load_checkpoint", "load_safe",
    "remove_stale_weights", "resume_advice", "save_atomic", "weights_name", "write_text_atomic",
]

CHECKPOINT = "checkpoint.pt"
_WEIGHTS_NAME = "checkpoint.weights-{}.pt"
WEIGHTS_PATTERN = _WEIGHTS_NAME.format("*")


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


def weights_name(step: int) -> str:
    """The file name of the checkpoint's weights at ``step``."""
    return _WEIGHTS_NAME.format(step)


def load_checkpoint(out: Path, advice: str | None = None) -> dict[str, Any]:
    """``out/checkpoint.pt`` with its weights under ``"trainable"`` (read from the file it names;
    a checkpoint of an older vlda holds them itself). A missing or damaged file raises one
    sentence (a ``ValueError``) ending with ``advice`` (default: :func:`resume_advice`)."""
    out = Path(out)
    advice = resume_advice(out) if advice is None else advice
    state = load_safe(out / CHECKPOINT, "checkpoint", advice)
    if not isinstance(state, dict) or "step" not in state or not ({"weights", "trainable"} & set(state)):
        raise DamagedWeightsError(f"{out / CHECKPOINT} is not a vlda checkpoint (no step and weights in it); {advice}")
    if "weights" in state:
        path = out / str(state["weights"])
        if not path.is_file():
            raise DamagedWeightsError(f"the checkpoint's weights file {path} is missing; {advice}")
        state["trainable"] = load_safe(path, "checkpoint weights file", advice)
    return state


def remove_stale_weights(out: Path, keep: str | None = None) -> None:
    """Delete the checkpoint weights files of ``out`` other than ``keep`` (a name; ``None``:
    every one). Names that ``selected.pt`` or ``last.pt`` share with them stay: a hard link is
    its own name."""
    for path in Path(out).glob(WEIGHTS_PATTERN):
        if path.name != keep:
            path.unlink(missing_ok=True)


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

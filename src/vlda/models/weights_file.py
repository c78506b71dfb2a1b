"""A weights file that cannot be loaded becomes one sentence: which file, what is wrong, what
to do — never torch's advice to load it with ``weights_only=False`` (which would run any code
the file holds).

:func:`load_weights_file` is ``torch.load(path, map_location="cpu", weights_only=True)`` with
that translation; :func:`weights_file_error` translates an error raised while a library
(open_clip, timm, transformers) loaded the file. Both raise :class:`DamagedWeightsError`, a
``ValueError``, which the command line prints as one line (exit code 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "DOWNLOAD_AGAIN",
    "DamagedWeightsError",
    "error_reason",
    "local_weights_error",
    "load_weights_file",
    "weights_file_error",
]

DOWNLOAD_AGAIN = "download it again or check the path"
# Lines of torch's weights_only message that are advice or boilerplate, not the cause.
_BOILERPLATE = (
    "weights only load failed",
    "please file an issue",
    "check the documentation",
    "re-running `torch.load`",
)


class DamagedWeightsError(ValueError):
    """A weights or checkpoint file exists but cannot be loaded (truncated, corrupt, or holding
    pickled code)."""


def error_reason(err: BaseException) -> tuple[str, bool]:
    """``(reason, holds_code)``: a short cause of a failed ``torch.load`` (its first
    informative sentence, torch's advice removed), and whether the file holds Python objects
    other than tensors (which a weights-only load refuses)."""
    text = str(err).strip()
    if "weights only load failed" in text.lower():
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        causes = [ln for ln in lines if not ln.lower().startswith(_BOILERPLATE)]
        cause = causes[0] if causes else "refused by the weights-only loader"
        cause = re.sub(r"^WeightsUnpickler error:\s*", "", cause)
        return _first_sentence(cause), "GLOBAL" in cause
    if not text:
        return ("the file ends early" if isinstance(err, EOFError) else type(err).__name__), False
    return _first_sentence(text.splitlines()[0]), False


def _first_sentence(text: str) -> str:
    head = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0]
    return head.rstrip(". ")


def weights_file_error(
    path: str | os.PathLike, err: BaseException, what: str = "weights file", advice: str = DOWNLOAD_AGAIN
) -> DamagedWeightsError:
    """The one-sentence error for ``path`` (``what``: e.g. ``checkpoint``) that failed to load
    with ``err``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    reason, holds_code = error_reason(err)
    if size == 0:
        reason = "the file is empty"
    if holds_code:
        return DamagedWeightsError(
            f"the {what} {path} holds pickled Python code or objects, not only tensors ({reason}); "
            "vlda loads weights only: use a plain state dict saved with torch.save, or "
            f"{advice}"
        )
    return DamagedWeightsError(f"the {what} {path} is damaged ({reason}); {advice}")


def local_weights_error(path: str | os.PathLike, model: str, err: BaseException) -> ValueError:
    """A library failed to load the local weights file ``path`` into ``model``: the weights do
    not fit the architecture (a state-dict mismatch), or the file is damaged."""
    if "Error(s) in loading state_dict" in str(err):
        return ValueError(
            f"the weights file {path} does not fit model {model} ({error_reason(err)[0]}); "
            "check that model.name is the architecture the weights were saved from"
        )
    return weights_file_error(path, err)


def load_weights_file(
    path: str | os.PathLike, what: str = "weights file", advice: str = DOWNLOAD_AGAIN
) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a missing file raises
    ``FileNotFoundError``, one that cannot be loaded :class:`DamagedWeightsError`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the {what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise weights_file_error(path, err, what, advice) from err

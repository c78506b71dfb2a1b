"""Random-number state that a resumed run must restore to continue bit for bit.

Batches and augmentations are pure functions of (seed, step, sample) and need no state; what
does is PyTorch's global generator (dropout in the classic methods' networks and
discriminators, random initialisations drawn after the start) and, on GPU, CUDA's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """The global CPU generator's state, and every CUDA device's when CUDA is initialised."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

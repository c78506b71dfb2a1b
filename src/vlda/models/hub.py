"""Named weights versus local files, and failing fast when named weights are wanted offline.

:func:`looks_like_path` tells a local path from a name (both loaders, CLIP and timm, use it).

open_clip, timm and transformers fetch named weights through ``huggingface_hub``, which retries a
failed connection with back-off (about 50 s before it gives up on an offline machine). When the
hub cannot be reached at all, :func:`offline_unless_hub_reachable` switches ``huggingface_hub``
to offline mode for the duration of a load: files already in the local cache are used as usual,
and a missing file fails at once, so vlda can say what is missing and where to put it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def looks_like_path(text: str) -> bool:
    """Whether a model name or weights tag means a local file or folder rather than a name to
    look up (an open_clip tag, a timm tag, a hub id): it holds a path separator, starts with
    ``.``, or ends with a weights-file suffix."""
    return "/" in text or os.sep in text or text.startswith(".") or text.endswith(WEIGHTS_SUFFIXES)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co:443) opens
    within ``timeout`` seconds. Behind a proxy the direct probe means nothing: assume yes."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_unless_hub_reachable() -> Iterator[bool]:
    """Run the body with ``huggingface_hub`` offline when the hub is unreachable; yields whether
    it went offline. A no-op when offline mode is already on or ``huggingface_hub`` is absent."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of open_clip and timm
        yield False
        return
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield False
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def drop_root_log(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` for the duration (open_clip logs a
    failed download on the root logger just before raising it; vlda's own error says it better)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def unavailable_reason(offline: bool, err: BaseException) -> str:
    """The end of a missing-weights sentence: why a named file could not be had."""
    return "the hub cannot be reached (offline?)" if offline else f"the download failed ({err})"

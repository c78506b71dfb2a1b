"""Placeholder: replaced by the shared file helpers."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    env = os.environ.get("VLDA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlda"

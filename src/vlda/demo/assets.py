"""The offline demo's assets: the digits benchmark and the small pretrained stand-in CLIP.

:func:`ensure_demo_assets` builds whatever is missing under ``<cache>/demo-v<N>/`` (``<cache>``:
the ``cache_dir`` argument, else ``$VLDA_CACHE``, else ``~/.cache/vlda``) and returns where
they are. The first call takes a few minutes on a laptop CPU (render the data, pretrain the
model); later calls return at once. The version folder changes whenever the recipe does, so
stale assets are never reused.

Layout::

    demo-v5/
      digits/inverted/<0..9>/*.png       source: inverted renders and half of scikit-learn's digits
      digits/faded/<0..9>/*.png          target: the other half, faded (vlda.demo.digits)
      clip/open_clip_config.json         {"model_cfg": ..., "preprocess_cfg": ...}
      clip/weights.pt                    open_clip CLIP state dict (weights_only loadable)
      clip/meta.json                     seed, recipe, build time, quality numbers, checks
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vlda.demo.digits import build_demo_data
from vlda.demo.jobs import torch_threads
from vlda.demo.pretrain import PretrainRecipe, pretrain_demo_clip
from vlda.files import default_cache_dir

__all__ = ["DEMO_VERSION", "DemoAssets", "default_cache_dir", "ensure_demo_assets"]

# Bump when the data or the pretraining recipe changes: old caches are then rebuilt.
DEMO_VERSION = "demo-v5"
DEMO_SEED = 0
# The world is built with this many torch threads whatever the machine (the thread count
# changes the float rounding, hence the world): two, so that the build fits 5 minutes on 2 cores.
BUILD_THREADS = 2
# What ensure_demo_assets builds (tests swap these for tiny versions).
DATA_KWARGS: dict = {"per_class": 100}
RECIPE: PretrainRecipe | None = None  # None: PretrainRecipe()
BUDGET_S = 300.0


@dataclass(frozen=True)
class DemoAssets:
    """Where the demo's assets are.

    Attributes:
        data_root: the benchmark folder, holding ``inverted/`` and ``faded/``.
        model_dir: the stand-in CLIP (``open_clip_config.json``, ``weights.pt``, ``meta.json``).
    """

    data_root: Path
    model_dir: Path

    @property
    def meta(self) -> dict:
        """The model's ``meta.json`` (seed, recipe, build time, quality numbers)."""
        return json.loads((self.model_dir / "meta.json").read_text())


def _model_complete(model_dir: Path) -> bool:
    return all((model_dir / f).is_file() for f in ("open_clip_config.json", "weights.pt",
                                                    "meta.json"))


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; no locking elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_demo_assets(cache_dir: Path | None = None, progress: bool = True) -> DemoAssets:
    """Build the demo's data and stand-in CLIP if missing; return where they are.

    Deterministic (fixed seed and number of steps) and idempotent; safe to call from several
    processes at once (the build is serialised by a lock file). Everything is generated
    offline from matplotlib's fonts and scikit-learn's bundled digits.

    Args:
        cache_dir: the cache root (default :func:`default_cache_dir`); assets go to
            ``cache_dir / DEMO_VERSION``.
        progress: print what is being built and show a progress bar while pretraining.
    """
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    base = base / DEMO_VERSION
    assets = DemoAssets(data_root=base / "digits", model_dir=base / "clip")
    if _model_complete(assets.model_dir) and (assets.data_root / "demo_data.json").is_file():
        return assets
    base.mkdir(parents=True, exist_ok=True)
    with _lock(base / ".lock"), torch_threads(BUILD_THREADS):
        t0 = time.perf_counter()
        if progress:
            print(f"vlda demo: building the demo assets in {base} (once; a few minutes)",
                  file=sys.stderr, flush=True)
        build_demo_data(assets.data_root, seed=DEMO_SEED, **DATA_KWARGS)
        if not _model_complete(assets.model_dir):
            pretrain_demo_clip(
                assets.model_dir, seed=DEMO_SEED, budget_s=BUDGET_S, progress=progress,
                recipe=RECIPE, data_root=assets.data_root,
            )
        if progress:
            print(f"vlda demo: assets ready ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    return assets

"""Shared fixtures: tiny random CLIPs (real architectures, real tokenizer), small threads."""

from __future__ import annotations

import pytest
import torch

import vlda  # noqa: F401  (applies the torchvision shim before anything imports it)

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_vit():
    from vlda.models.loading import load_backbone

    return load_backbone("tiny:vit")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch the user's ~/.cache/vlda from a test.
    monkeypatch.setenv("VLDA_CACHE", str(tmp_path / "vlda-cache"))


def make_color_domains(root, domains=("src", "tgt"), classes=("red", "green", "blue"), per_class=4, size=16):
    """Tiny folder-per-domain/folder-per-class tree whose classes differ by colour (so training
    has signal); the second domain is darker (a domain shift)."""
    import numpy as np
    from PIL import Image

    colors = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    rng = np.random.default_rng(0)
    for d, dom in enumerate(domains):
        for c in classes:
            folder = root / dom / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.array(colors.get(c, (100, 100, 100)), dtype=float) * (1.0 - 0.4 * d)
                img = base + rng.normal(0, 20, (size, size, 3))
                Image.fromarray(img.clip(0, 255).astype("uint8")).save(folder / f"{i}.png")
    return root


def kill_after_first_checkpoint(monkeypatch):
    """Make the trainer raise KeyboardInterrupt right after its first ``checkpoint.pt`` (a run
    killed there); returns the real writer, to put back before resuming."""
    from vlda.engine import trainer

    real = trainer.save_atomic
    calls = {"n": 0}

    def save_then_die(obj, path):
        real(obj, path)
        if path.name == "checkpoint.pt":
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_atomic", save_then_die)
    return real


@pytest.fixture
def color_data(tmp_path):
    return make_color_domains(tmp_path / "data")

"""A killed and resumed run ends bitwise equal to an uninterrupted one, for the classic methods
too: dropout's RNG state, the optimizer, the strategy's state and the bad-image tally are in
the checkpoint."""

import json

import pytest
import torch

from conftest import kill_after_first_checkpoint
from vlda.config import build_config
from vlda.engine import trainer as trainer_mod
from vlda.engine.checkpoint import load_checkpoint
from vlda.engine.experiment import run


def _config(data_root, out, gradients="pcgrad"):
    return build_config({
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32},
        # discriminator without BatchNorm: ReLU + Dropout(0.5), which draws from the global RNG
        "method": {"name": "dann", "bottleneck_dim": 16, "discriminator_hidden": 16, "discriminator_bn": False},
        "gradients": {"name": gradients},
        "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "progress": False, "seed": 5},
        "optim": {"name": "sgd", "lr": 0.01},
        "schedule": {"name": "inv"},
        "output": str(out),
    })


def test_killed_and_resumed_dann_pcgrad_run_is_bitwise_equal(color_data, tmp_path, monkeypatch):
    (color_data / "tgt" / "red" / "1.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning):
        run(_config(color_data, tmp_path / "straight"))
    want = load_checkpoint(tmp_path / "straight")

    real = kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):
        run(_config(color_data, tmp_path / "killed"))
    half = load_checkpoint(tmp_path / "killed")
    assert half["step"] == 3 and half["stepper"]["strategy"] == {"calls": 3}
    monkeypatch.setattr(trainer_mod, "save_atomic", real)
    torch.manual_seed(1234)  # whatever the process did in between must not matter
    run(_config(color_data, tmp_path / "killed"), resume=True)  # no second warning: tally restored
    got = load_checkpoint(tmp_path / "killed")

    assert set(got["trainable"]) == set(want["trainable"])
    for k, v in want["trainable"].items():
        assert torch.equal(got["trainable"][k], v), k
    assert got["stepper"]["strategy"] == want["stepper"]["strategy"] == {"calls": 6}
    assert got["bad_images"] == want["bad_images"] and want["bad_images"]["skipped"] > 0
    assert _without_time(got["history"]) == _without_time(want["history"])


def _without_time(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in json.loads(history)]

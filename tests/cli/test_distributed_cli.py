"""``vlda train --nproc 2`` (through PyTorch's torchrun, standalone rendezvous) on CPU: one run
directory, written by rank 0, one report; a global batch that does not divide is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli.test_cli import write_config
from vlda.cli.launch import torchrun_args, without_nproc


def test_a_batch_that_does_not_divide_is_refused_in_one_sentence(monkeypatch):
    from vlda import distributed as D
    from vlda.config import ConfigError
    from vlda.engine.experiment import _check_divisible

    monkeypatch.setattr(D, "world_size", lambda: 2)
    _check_divisible([2, 2], [4])  # every part divides: accepted
    with pytest.raises(ConfigError, match=r"\(per source domain \[3, 3\], target \[6\]\) does not divide into 2"):
        _check_divisible([3, 3], [6])


def test_the_launcher_passes_the_command_to_torchrun_without_nproc():
    argv = ["train", "-c", "x.yaml", "--nproc", "4", "train.steps=3", "--nproc=4"]
    assert without_nproc(argv) == ["train", "-c", "x.yaml", "train.steps=3"]
    assert torchrun_args(4, argv) == ["--standalone", "--nproc-per-node", "4", "-m", "vlda",
                                      "train", "-c", "x.yaml", "train.steps=3"]


def _vlda(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vlda", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_vlda_train_nproc_two(color_data, tmp_path):
    cfg = write_config(tmp_path, color_data, method={"name": "dapl", "n_ctx": 4, "n_domain_ctx": 2})
    done = _vlda("train", "-c", str(cfg), "--nproc", "2", "-q", "train.steps=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {"config.json", "task.json", "metrics.jsonl", "summary.json",
                                              "checkpoint.pt", "checkpoint.weights-2.pt", "last.pt", "selected.pt"}
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [2]


@pytest.mark.slow
def test_vlda_train_nproc_two_refuses_a_batch_that_does_not_divide(color_data, tmp_path):
    cfg = write_config(tmp_path, color_data, method={"name": "dapl", "n_ctx": 4, "n_domain_ctx": 2})
    refused = _vlda("train", "-c", str(cfg), "--nproc", "2", "-q", "train.batch_size=3",
                    f"output={tmp_path / 'odd'}")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("vlda train: error:")]
    assert errors and "does not divide into 2 equal slices" in errors[0]
    assert "Traceback" not in refused.stderr

"""Real ``vlda`` processes for the reliability suite: start one, watch its files from outside,
SIGKILL it, and compare what finished runs leave behind.

Nothing here reaches into vlda's code: a kill is timed by the clock or by a file appearing in
the run (or cache) directory, as a user's ``kill -9``, an OOM killer or a pre-empted job would
land.

Each command runs in its own process, forked from a ``multiprocessing`` fork server that has
imported torch and vlda once (and run no tensor operation): a process runs
``vlda.cli.main.main(argv)``, as the ``vlda`` script does, without paying the imports again
(seconds each on a small machine). A SIGKILL ends it like any other process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from vlda.engine.checkpoint import load_checkpoint, load_safe

POLL_S = 0.001
# One thread: the same arithmetic in every process (the reference and each resumed piece), and
# polite on a small shared machine.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_config(path: Path, data_root: Path, out: Path, cache_dir: Path, **sections: Any) -> Path:
    """A run config on a fake colour tree (``tests/conftest.py::make_color_domains``); each
    keyword is a config section (merged into the default one, or replacing it if named)."""
    cfg: dict[str, Any] = {
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "coop", "n_ctx": 4},
        "train": {"steps": 8, "batch_size": 4, "eval_every": 2, "seed": 3},
        "cache": {"views": 2, "dir": str(cache_dir)},
        "augment": {"flip": True},
        "output": str(out),
    }
    for name, section in sections.items():  # a section with a name replaces the default one
        cfg[name] = section if "name" in section else {**cfg.get(name, {}), **section}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _vlda(argv: list[str], log: str, env: dict[str, str]) -> None:
    """The body of a vlda process: ``vlda ARGV`` with its output appended to ``log``."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)  # the same arithmetic in every process
    from vlda.cli.main import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: only the command's own work counts


# vlda first: it mends torchvision on a CPU torch before timm imports it.
_PRELOAD = ["vlda", "torch", "timm", "open_clip", "vlda.cli.main", "vlda.cli.commands", "vlda.engine.experiment", "reliability.procs"]
_context = None


def _ctx():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _nothing() -> None:
    pass


def start_server() -> None:
    """Start the fork server (its imports take seconds) so that the next process starts at once."""
    p = _ctx().Process(target=_nothing)
    p.start()
    p.join()


# The run of the kill and full-disk tests: DANN + PCGrad on a small random ResNet, dropout in the
# discriminator (the global RNG), SGD with momentum, a checkpoint every EVAL_EVERY steps. The
# discriminator is wide (2048 hidden units: the weights 18 MB, checkpoint.pt with the momentum 19 MB)
# so that a checkpoint write lasts long enough for a kill, or a small disk, to hit it.
STEPS, EVAL_EVERY = 12, 3


def dann_config(tmp: Path, data: Path, out: Path, hidden: int = 2048) -> Path:
    return write_config(
        tmp / f"{out.name}.yaml", data, out, tmp / "cache",
        model={"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32},
        method={"name": "dann", "bottleneck_dim": 16, "discriminator_hidden": hidden, "discriminator_bn": False},
        gradients={"name": "pcgrad"},
        train={"steps": STEPS, "batch_size": 4, "eval_every": EVAL_EVERY, "seed": 5},
        optim={"name": "sgd", "lr": 0.01},
        schedule={"name": "inv"},
    )


@dataclass
class Proc:
    """A running ``vlda`` command; its output goes to ``log``."""

    process: multiprocessing.process.BaseProcess
    log: Path

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL (no handler, no cleanup: what ``kill -9`` or the OOM killer does)."""
        if self.process.pid is not None and self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()

    def run_for(self, seconds: float) -> bool:
        """Let it run ``seconds`` (less if it ends); True if it still runs."""
        self.process.join(seconds)
        return self.alive()

    def wait(self, timeout: float = 300) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            raise TimeoutError(f"still running after {timeout} s:\n{self.output()[-3000:]}")
        return self.process.exitcode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """``vlda ARGS`` in a new process, with the test's environment (``VLDA_CACHE``) and ``env``."""
    full_env = {**os.environ, **THREADS, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = _ctx().Process(target=_vlda, args=(list(args), str(log), full_env), daemon=True)
    process.start()
    return Proc(process, log)


def run_to_end(args: list[str], log: Path, timeout: float = 300) -> str:
    """Run a command to its end; fail the test with its output if it does not exit 0."""
    p = start(args, log)
    rc = p.wait(timeout)
    assert rc == 0, f"vlda {' '.join(args)} exited {rc}:\n{p.output()[-3000:]}"
    return p.output()


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll ``ready()`` every millisecond while ``proc`` runs; True once it holds, False if the
    process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return True
        if not proc.alive():
            return ready()
        time.sleep(POLL_S)
    raise TimeoutError(f"nothing happened in {timeout} s:\n{proc.output()[-3000:]}")


def temp_files(directory: Path, name: str) -> list[Path]:
    """The temporary files of atomic writes of ``name`` under way (or left by a kill)."""
    return sorted(directory.glob(f".{name}.*.tmp")) if directory.is_dir() else []


# -- what a finished run leaves ---------------------------------------------------------------


def without_times(x: Any) -> Any:
    """``x`` with every ``time_s`` entry (wall-clock, differs between runs) left out."""
    if isinstance(x, dict):
        return {k: without_times(v) for k, v in x.items() if k != "time_s"}
    if isinstance(x, list):
        return [without_times(v) for v in x]
    return x


def final_state(run: Path) -> dict[str, Any]:
    """Everything a finished run's result is made of, timings left out."""
    ckpt = load_checkpoint(run)
    summary = json.loads((run / "summary.json").read_text())
    return {
        "step": ckpt["step"],
        "trainable": ckpt["trainable"],
        "stepper": ckpt["stepper"],
        "last": load_safe(run / "last.pt"),
        "selected": load_safe(run / "selected.pt"),
        "metrics": without_times([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]),
        "history": without_times(json.loads(ckpt["history"])),
        "results": without_times(summary["results"]),
    }


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().flatten().view(torch.uint8)


def assert_bitwise_equal(got: Any, want: Any, where: str = "") -> None:
    """Tensors equal bit for bit (dtype, shape and bytes), everything else ``==``."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert torch.equal(_bytes(got), _bytes(want)), f"{where} differs"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_bitwise_equal(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_bitwise_equal(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"

"""SIGKILL a real ``vlda train`` process during a step or inside a checkpoint write, then
``--resume``: the run ends with parameters, optimizer state, metrics and results bitwise equal
to an uninterrupted run's (CPU), and the checkpoint left by every kill loads.

The run (:func:`reliability.procs.dann_config`): DANN + PCGrad on a small random ResNet, dropout
in the discriminator (global RNG), SGD with momentum, a checkpoint every 3 steps; its
discriminator is wide, so that a checkpoint write lasts long enough to be hit.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from reliability.procs import (
    EVAL_EVERY,
    STEPS,
    assert_bitwise_equal,
    dann_config,
    final_state,
    run_to_end,
    start,
    temp_files,
    wait_until,
)
from vlda.engine.checkpoint import load_checkpoint


def resume_args(cfg):
    return ["train", "-c", str(cfg), "-q", "--resume"]


def checkpoint_step(out):
    """The step of ``out/checkpoint.pt`` (None if there is none); it must load."""
    return load_checkpoint(out)["step"] if (out / "checkpoint.pt").exists() else None


def last_logged_step(out):
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):  # not there yet, or a line being appended
        return None


def kill_at_random(cfg, out, log, delay):
    """Start the run (``--resume``: a fresh start when nothing was saved), SIGKILL it ``delay``
    seconds after its loop has begun (a checkpoint exists); True if it was still running."""
    p = start(resume_args(cfg), log)
    if not wait_until(p, lambda: (out / "checkpoint.pt").is_file()):
        return False
    time.sleep(delay)
    alive = p.alive()
    p.kill()
    return alive


def kill_inside_checkpoint_write(cfg, out, log, step):
    """Start (resume) the run and SIGKILL it inside the write of the checkpoint of ``step``:
    as soon as that evaluation is logged and a temporary checkpoint file exists. True if the
    kill landed inside the write (the temporary file is left)."""
    p = start(resume_args(cfg), log)
    if not wait_until(p, lambda: last_logged_step(out) == step and bool(temp_files(out, "checkpoint.pt"))):
        return False
    p.kill()
    return bool(temp_files(out, "checkpoint.pt"))


def test_sigkill_during_a_step_then_resume_is_bitwise_equal(tmp_path, dann_data, dann_reference):
    want, loop_seconds, _ = dann_reference
    rng = random.Random(0)
    for attempt in range(5):  # a kill after the last checkpoint teaches little: draw again
        out = tmp_path / f"run{attempt}"
        cfg = dann_config(tmp_path, dann_data, out)
        if kill_at_random(cfg, out, tmp_path / "log.txt", rng.uniform(0, 0.6 * loop_seconds)):
            if checkpoint_step(out) < STEPS:
                break
    else:
        pytest.fail("the run always reached its last checkpoint before the kill")
    assert EVAL_EVERY <= checkpoint_step(out) < STEPS and not (out / "summary.json").exists()
    run_to_end(resume_args(cfg), tmp_path / "log.txt")
    assert_bitwise_equal(final_state(out), want)


def test_sigkill_inside_a_checkpoint_write_leaves_the_previous_one(tmp_path, dann_data, dann_reference):
    want, _, _ = dann_reference
    for attempt in range(3):  # a poll can miss a fast write: try again
        out = tmp_path / f"run{attempt}"
        cfg = dann_config(tmp_path, dann_data, out)
        if kill_inside_checkpoint_write(cfg, out, tmp_path / "log.txt", 2 * EVAL_EVERY):
            break
    else:
        pytest.fail("every kill missed the write")
    assert checkpoint_step(out) == EVAL_EVERY  # the previous checkpoint, whole
    (partial,) = temp_files(out, "checkpoint.pt")
    run_to_end(resume_args(cfg), tmp_path / "log.txt")
    assert_bitwise_equal(final_state(out), want)
    assert not partial.exists() and not list(out.glob(".*.tmp"))  # the killed write's leftover is gone


@pytest.mark.slow
def test_sigkill_inside_every_checkpoint_write(tmp_path, dann_data, dann_reference):
    """Each of the run's checkpoint writes killed once (the first one too: then there is no
    checkpoint, and --resume starts afresh)."""
    want, _, _ = dann_reference
    out = tmp_path / "run"
    cfg = dann_config(tmp_path, dann_data, out)
    for step in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY):
        assert kill_inside_checkpoint_write(cfg, out, tmp_path / "log.txt", step), f"missed the write of step {step}"
        assert checkpoint_step(out) == (step - EVAL_EVERY or None)
        assert len(temp_files(out, "checkpoint.pt")) == 1  # each resume removed the one before
    run_to_end(resume_args(cfg), tmp_path / "log.txt")
    assert_bitwise_equal(final_state(out), want)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_many_sigkills_at_random_times(tmp_path, dann_data, dann_reference, seed):
    """Up to 8 kills at random times from the process start (data loading, model building,
    steps, evaluations, writes), each followed by --resume."""
    want, _, run_seconds = dann_reference
    out, rng = tmp_path / "run", random.Random(seed)
    cfg = dann_config(tmp_path, dann_data, out)
    kills = []
    for _ in range(8):
        p = start(resume_args(cfg), tmp_path / "log.txt")
        delay = rng.uniform(0.05, 0.4 * run_seconds)
        if not p.run_for(delay):
            assert p.wait() == 0, p.output()[-3000:]
            break
        p.kill()
        kills.append((round(delay, 2), checkpoint_step(out)))
        assert kills[-1][1] in (None, *range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert len(kills) >= 3, f"too few kills landed before the run's end: {kills} (run: {run_seconds:.1f} s)"
    if not (out / "summary.json").exists():
        run_to_end(resume_args(cfg), tmp_path / "log.txt")
    assert_bitwise_equal(final_state(out), want)

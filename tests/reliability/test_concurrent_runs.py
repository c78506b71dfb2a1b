"""Two real processes on one run directory: while a run writes it, a second ``vlda train`` on it
is refused (exit code 2, naming the first one's pid) and changes nothing; the first run ends as
an undisturbed one."""

from __future__ import annotations

from reliability.procs import assert_bitwise_equal, dann_config, final_state, start, wait_until


def test_a_second_process_is_refused_while_a_run_writes(tmp_path, dann_data, dann_reference):
    want, _, _ = dann_reference
    out = tmp_path / "run"
    cfg = dann_config(tmp_path, dann_data, out)
    first = start(["train", "-c", str(cfg), "-q"], tmp_path / "first.txt")
    assert wait_until(first, lambda: (out / "run.lock").is_file())

    holder = f"pid {first.process.pid}"
    resume = start(["train", "-c", str(cfg), "-q", "--resume"], tmp_path / "resume.txt")
    assert resume.wait() == 2 and holder in resume.output()
    # without --resume: refused by the lock, or (once the first run has written its config) as
    # a directory that holds a run
    fresh = start(["train", "-c", str(cfg), "-q"], tmp_path / "fresh.txt")
    assert fresh.wait() == 2
    assert holder in fresh.output() or "already holds a run" in fresh.output()
    assert first.alive(), "the run ended before the second processes were refused"

    assert first.wait() == 0, first.output()[-3000:]
    assert_bitwise_equal(final_state(out), want)
    assert not (out / "run.lock").exists()

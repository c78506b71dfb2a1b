"""What a write killed half-way leaves (its temporary file) is removed when the run directory is
next locked, and nothing else is."""

from __future__ import annotations

import multiprocessing
import os
import signal

from vlda.engine.run_dir import RunLock
from vlda.files import remove_partial_writes, write_atomic


def _killed_while_writing(path: str) -> None:
    def write(f):
        f.write(b"x" * 4096)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    write_atomic(path, write)


def test_a_write_killed_half_way_leaves_a_temporary_file_that_is_then_removed(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"old")
    p = multiprocessing.get_context("fork").Process(target=_killed_while_writing, args=(str(tmp_path / "checkpoint.pt"),))
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    (left,) = [q for q in tmp_path.iterdir() if q.name != "checkpoint.pt"]
    assert left.name.startswith(".checkpoint.pt.") and left.stat().st_size == 4096
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"old"
    assert remove_partial_writes(tmp_path) == [left]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_taking_the_run_lock_removes_only_partial_writes(tmp_path):
    run = tmp_path / "run"
    (run / "outputs").mkdir(parents=True)
    partial = [run / ".checkpoint.pt.ab_c1x9z.tmp", run / ".summary.json.0123abcd.tmp",
               run / "outputs" / ".step_0000003.pt.zz9_zz9z.tmp"]
    kept = [run / "checkpoint.pt", run / "notes.tmp", run / ".hidden", run / ".x.short.tmp",
            run / ".x.ABCDEFGH.tmp", run / "outputs" / "step_0000003.pt"]
    for p in partial + kept:
        p.write_bytes(b"")
    (run / "run.lock").write_text("999999999")  # a killed run's lock (no such pid)
    with RunLock(run):
        assert not any(p.exists() for p in partial)
    assert all(p.exists() for p in kept)

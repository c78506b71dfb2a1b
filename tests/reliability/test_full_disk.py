"""A full disk during a run: the command fails saying so, the last checkpoint stays whole and
loadable, no partial file is left, and once there is space ``--resume`` ends bitwise equal to an
uninterrupted run.

Two ways: ``ENOSPC`` raised half-way through a write (in-process, every machine), and a real
full disk, a small tmpfs mounted in a private mount namespace (``unshare``; slow: a fresh
``python -m vlda.cli.main`` process; skipped where the machine does not allow it).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys

import pytest

from conftest import make_color_domains
from reliability.procs import (
    EVAL_EVERY,
    THREADS,
    assert_bitwise_equal,
    dann_config,
    final_state,
    run_to_end,
    temp_files,
    write_config,
)
from vlda import files
from vlda.cli.main import main
from vlda.engine.checkpoint import load_checkpoint

NO_SPACE = "no space left"


def cli(argv, capsys):
    """``vlda ARGV`` in-process: (exit code, what it printed on stderr). An exception that
    escapes counts as the interpreter's exit code 1 with its message."""
    try:
        code = main(argv)
    except OSError as err:
        return 1, f"{capsys.readouterr().err}{type(err).__name__}: {err}"
    return code, capsys.readouterr().err


def fill_disk_while_writing(monkeypatch, name, nth):
    """Make the ``nth`` atomic write of a file called ``name`` write half its bytes and then fail
    with ``ENOSPC``, as a disk that fills up under it."""
    real = files.write_atomic
    seen = {"n": 0}

    def write_atomic(path, write, *, text=False, encoding="utf-8"):
        if os.path.basename(path) == name:
            seen["n"] += 1
            if seen["n"] == nth:
                def half_then_full(f):
                    buf = io.StringIO() if text else io.BytesIO()
                    write(buf)
                    data = buf.getvalue()
                    f.write(data[: len(data) // 2])
                    f.flush()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                return real(path, half_then_full, text=text, encoding=encoding)
        return real(path, write, text=text, encoding=encoding)

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    return seen


def small_config(tmp_path, data, out):
    return write_config(
        tmp_path / f"{out.name}.yaml", data, out, tmp_path / "cache",
        train={"steps": 6, "batch_size": 4, "eval_every": 2, "seed": 4},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_color_domains(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("reference")
    assert main(["train", "-c", str(small_config(tmp, data, tmp / "run")), "-q"]) == 0
    return final_state(tmp / "run")


# the second resume state; the final weights (last.pt is a link to them); the summary
@pytest.mark.parametrize(("name", "nth"), [("checkpoint.pt", 2), ("checkpoint.weights-6.pt", 1), ("summary.json", 1)])
def test_enospc_inside_a_write_keeps_the_last_checkpoint(tmp_path, data, reference, monkeypatch, capsys, name, nth):
    out = tmp_path / "run"
    cfg = small_config(tmp_path, data, out)
    real = files.write_atomic
    seen = fill_disk_while_writing(monkeypatch, name, nth)
    code, err = cli(["train", "-c", str(cfg), "-q"], capsys)
    assert seen["n"] == nth and code == 2 and NO_SPACE in err.lower() and "Traceback" not in err
    assert not list(out.glob(".*.tmp")), "a partial file was left"
    ckpt = load_checkpoint(out)  # whole
    assert ckpt["step"] == {"checkpoint.pt": 2, "checkpoint.weights-6.pt": 4, "summary.json": 6}[name]
    assert not (out / "summary.json").exists()

    monkeypatch.setattr(files, "write_atomic", real)  # space again
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 0
    assert_bitwise_equal(final_state(out), reference)


def _unshare_tmpfs_works(tmp_path):
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    mnt = tmp_path / "probe"
    mnt.mkdir()
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         'mount -t tmpfs -o size=1m tmpfs "$1" && touch "$1/x"', "sh", str(mnt)],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_keeps_the_last_checkpoint(tmp_path, dann_data, dann_reference):
    """DANN with an 18 MB weights file and a 19 MB checkpoint.pt (momentum) in a 60 MB tmpfs: the
    first checkpoint fits (37 MB), the second's weights fit beside it, its checkpoint.pt not."""
    if not _unshare_tmpfs_works(tmp_path):
        pytest.skip("cannot mount a tmpfs here (unshare --user --mount is not allowed)")
    want, _, _ = dann_reference
    mnt, kept = tmp_path / "disk", tmp_path / "kept"
    mnt.mkdir()
    cfg = dann_config(tmp_path, dann_data, mnt / "run")
    script = (
        'mount -t tmpfs -o size=60m tmpfs "$1" || exit 99; '
        'shift; mnt="$1"; kept="$2"; shift 2; "$@"; rc=$?; cp -a "$mnt/run" "$kept"; exit $rc'
    )
    env = {**os.environ, **THREADS}
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mnt), str(mnt),
         str(kept), sys.executable, "-m", "vlda.cli.main", "train", "-c", str(cfg), "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode not in (0, 99), proc.stderr[-3000:]
    assert NO_SPACE in proc.stderr.lower(), proc.stderr[-3000:]
    assert not temp_files(kept, "checkpoint.pt")
    ckpt = load_checkpoint(kept)
    assert ckpt["step"] == EVAL_EVERY and not (kept / "summary.json").exists()

    # On a disk with space, the copy resumes (`output` may change on --resume).
    run_to_end(["train", "-c", str(cfg), "-q", "--resume", "--out", str(kept)], tmp_path / "resume.txt")
    assert_bitwise_equal(final_state(kept), want)

"""A run directory belongs to one run: refused before anything is written if it already holds
one, and locked while a process writes it.

* :func:`claim_run_dir` — a directory that holds a run (any of :data:`RUN_FILES`) is refused
  unless the run is resumed (``--resume``) or replaced (``--overwrite``, which removes the old
  run's files first). It runs before anything is written, so a refused command changes nothing.
* :func:`check_resume_config` — ``--resume`` with a config that changes the result (anything
  but the settings in :data:`NO_EFFECT`) is refused with the list of differences, unless the
  changes are accepted (``--resume-with-changes``); they are then appended to
  ``resume_changes.jsonl`` in the run directory.
* :class:`RunLock` — ``run.lock`` (created exclusively, holding the writer's pid) for as long
  as a process writes the directory; a second process is refused with the first one's pid. A
  lock left by a killed process (its pid no longer runs) is taken over. Taking the lock removes
  the temporary files of atomic writes a killed process left half-written
  (:func:`vlda.files.remove_partial_writes`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from vlda.engine.checkpoint import CHECKPOINT, remove_stale_weights
from vlda.files import remove_partial_writes

RUN_FILES = ("config.json", CHECKPOINT, "metrics.jsonl", "summary.json", "last.pt", "selected.pt")
RUN_DIRS = ("outputs", "tensorboard")
LOCK = "run.lock"
CHANGES = "resume_changes.jsonl"
# Settings that do not change what a run computes (where it prints, how fast it loads data).
NO_EFFECT = frozenset({
    "output", "train.progress", "train.tensorboard", "train.device", "train.eval_batch_size",
    "data.num_workers", "cache.dir", "eval.save_outputs", "eval.outputs_dtype", "train.save_outputs",
})


def holds_run(out: Path) -> bool:
    return any((out / f).exists() for f in RUN_FILES)


def check_run_dir(out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to write ``out`` when it holds a run and the run is neither resumed nor replaced."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in the output directory and --overwrite replaces it; give one")
    if holds_run(out) and not (resume or overwrite):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or choose another output directory"
        )


def clear_run_dir(out: Path) -> None:
    """Remove a previous run's files (``--overwrite``), just before the new run writes."""
    out = Path(out)
    for name in (*RUN_FILES, "task.json"):
        (out / name).unlink(missing_ok=True)
    remove_stale_weights(out)
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every setting that changes the result."""
    a, b = _flat(saved), _flat(new)
    keys = sorted((set(a) | set(b)) - NO_EFFECT)
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def check_resume_config(
    out: Path, new: Mapping[str, Any], accept_changes: bool = False, record: bool = True
) -> None:
    """Refuse to resume the run in ``out`` with a config that changes its result, unless
    ``accept_changes`` (the changes are then appended to ``resume_changes.jsonl`` when
    ``record``: by one process of a distributed run)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        raise ValueError(f"{path} is damaged (not JSON); the run cannot be resumed safely") from None
    changes = config_changes(saved, new)
    if not changes:
        return
    listed = ", ".join(f"{k}: {old!r} -> {cur!r}" for k, (old, cur) in changes.items())
    if not accept_changes:
        raise ValueError(
            f"--resume with a config that differs from the run's ({listed}); undo the changes, "
            "or pass --resume-with-changes to continue anyway (they are recorded in the run)"
        )
    if not record:
        return
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: list(v) for k, v in changes.items()}}
    with open(Path(out) / CHANGES, "a") as f:
        f.write(json.dumps(line, default=str) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


class RunLock:
    """``with RunLock(out):`` — exclusive use of a run directory by this process. A directory
    it created is removed again when the run wrote nothing else in it (a refused run)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._holder()
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise FileExistsError(
                        f"{self.path.parent} is being written by another vlda process (pid {pid}); "
                        "wait for it to finish or choose another output directory"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            for d in (self.path.parent, self.path.parent / "outputs"):  # left by a killed run
                remove_partial_writes(d)
            return self
        raise FileExistsError(f"could not lock {self.path.parent}; remove {self.path} if no vlda run uses it")

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0") or None
        except (OSError, ValueError):
            return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)
            if self._created and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()  # a refused run leaves no empty directory behind


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError, ValueError):
    """A write of a run failed for lack of space; the message says what and how to go on (a
    ``ValueError`` too: the command line prints it as one sentence, exit code 2)."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_error(out: Path, err: OSError) -> DiskFullError:
    """The one-sentence error for a run in ``out`` that could not write ``err.filename``."""
    what = err.filename or f"a file in {out}"
    ckpt = Path(out) / CHECKPOINT
    if ckpt.is_file():
        then = (
            f"the last checkpoint {ckpt} is intact (checkpoints are replaced atomically): free "
            "some space, then run the same command with --resume"
        )
    else:
        then = "no checkpoint had been written yet: free some space, then run the command again with --overwrite"
    return DiskFullError(err.errno, f"no space left on the device: {what} could not be written; {then}")

"""A run directory belongs to one run: refused before anything is written if it already holds
one, and locked while a process writes it.

* :func:`claim_run_dir` — a directory that holds a run (any of :data:`RUN_FILES`) is refused
  unless the run is resumed (``--resume``) or replaced (``--overwrite``, which removes the old
  run's files first). It runs before anything is written, so a refused command changes nothing.
* :class:`RunLock` — ``run.lock`` (created exclusively, holding the writer's pid) for as long
  as a process writes the directory; a second process is refused with the first one's pid. A
  lock left by a killed process (its pid no longer runs) is taken over.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from types import TracebackType

RUN_FILES = ("config.json", "checkpoint.pt", "metrics.jsonl", "summary.json", "last.pt", "selected.pt")
RUN_DIRS = ("outputs", "tensorboard")
LOCK = "run.lock"


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
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


class RunLock:
    """``with RunLock(out):`` — exclusive use of a run directory by this process."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK

    def __enter__(self) -> RunLock:
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

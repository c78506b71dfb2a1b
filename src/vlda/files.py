"""Files vlda writes: atomic single-file writes and the default cache directory.

Outside the layers of DESIGN.md (any of them may use it) and imports nothing from vlda.

An atomic write goes to a temporary file with a unique name in the destination's directory
(``.<name>.<random>.tmp``), is flushed and ``fsync``-ed, then renamed over the destination with
``os.replace`` (atomic on POSIX, and on Windows within one volume). A process killed at any
moment leaves either the old file or the new one, never half a file; on any error the
temporary file is removed, and an ``OSError`` (a full disk) names the destination. Two writers
of the same file never share a temporary name; the last rename wins. The file gets the permissions a plain ``open(path, "w")`` would give it
(``0o666`` less the umask), not the ``0o600`` of :func:`tempfile.mkstemp`.

A process killed *during* a write (SIGKILL, power loss) cannot remove its temporary file: it stays
next to the intact old file, as large as the checkpoint it was to become.
:func:`remove_partial_writes` deletes such leftovers from a directory that no other process is
writing (a run directory, under its lock).

Writing a whole directory at once (the feature cache) is a different job: build it under a
temporary directory and rename that (see :mod:`vlda.data.feature_cache`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "default_cache_dir",
    "make_temp_dir",
    "remove_partial_writes",
    "save_torch_atomic",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it, which is not thread-safe).
_UMASK = _read_umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


# The temporary names write_atomic makes: "." + destination name + "." + mkstemp's 8 characters + ".tmp".
_PARTIAL = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def default_cache_dir() -> Path:
    """``$VLDA_CACHE`` (``~`` expanded) if set and not empty, else ``~/.cache/vlda``."""
    env = os.environ.get("VLDA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlda"


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new directory ``parent/<prefix><random>`` with the permissions of a plain ``mkdir``
    (``0o777`` less the umask), not the ``0o700`` of :func:`tempfile.mkdtemp`: a directory built
    there and renamed into a shared cache stays readable by the cache's other users."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, _DIR_MODE)
    return tmp


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, text: bool = False,
    encoding: str = "utf-8",
) -> None:
    """Atomically replace ``path`` with what ``write(file)`` writes to an open file object.

    Args:
        path: the destination; its parent directories are created if needed.
        write: called once with the temporary file, opened ``"wb"`` (or ``"w"`` when ``text``).
        text: open the temporary file in text mode with ``encoding``.
        encoding: the text encoding (text mode only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        f: IO[Any] = os.fdopen(fd, "w", encoding=encoding) if text else os.fdopen(fd, "wb")
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno is not None and err.filename is None:  # a failed write (a full disk)
            raise OSError(err.errno, err.strerror, str(path)) from err  # names no file: name it
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> None:
    """Atomically replace ``path`` with ``data``."""
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(text: str, path: str | os.PathLike[str], encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (text mode: newlines as ``open(path, "w")``)."""
    write_atomic(path, lambda f: f.write(text), text=True, encoding=encoding)


def save_torch_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """Atomically replace ``path`` with ``torch.save(obj)`` (load it with
    ``torch.load(path, weights_only=True)``)."""
    import torch  # here, so that importing vlda.files needs nothing but the standard library

    write_atomic(path, lambda f: torch.save(obj, f))


def remove_partial_writes(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that atomic writes killed half-way left in ``directory``
    (not in its subdirectories); returns them. Only for a directory no other process is writing
    to: a live writer's temporary file looks the same."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [p for p in directory.iterdir() if _PARTIAL.fullmatch(p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed

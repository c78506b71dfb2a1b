"""vlda.files: atomic writes (content, unique temporary names, nothing left on failure,
permissions) and the default cache directory."""

from __future__ import annotations

import ast
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
import torch

import vlda.files as files
from vlda.files import (
    default_cache_dir,
    make_temp_dir,
    save_torch_atomic,
    write_atomic,
    write_bytes_atomic,
    write_text_atomic,
)


def test_writes_content_and_replaces(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "dir" / "a.bin"  # parents are created
    write_bytes_atomic(b"\x00one", p)
    assert p.read_bytes() == b"\x00one"
    write_bytes_atomic(b"two", p)
    assert p.read_bytes() == b"two"
    t = tmp_path / "a.txt"
    write_text_atomic("héllo\nworld\n", t)
    assert t.read_text(encoding="utf-8") == "héllo\nworld\n"
    w = tmp_path / "w.pt"
    save_torch_atomic({"x": torch.arange(3)}, w)
    assert torch.equal(torch.load(w, weights_only=True)["x"], torch.arange(3))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.txt", "sub", "w.pt"]


def test_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "keep.txt"
    write_text_atomic("old", p)

    def boom(f) -> None:
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomic(p, boom)
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["keep.txt"]

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle")

    with pytest.raises(TypeError):
        save_torch_atomic(Unpicklable(), tmp_path / "x.pt")
    assert [q.name for q in tmp_path.iterdir()] == ["keep.txt"]


def test_failed_replace_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replace(src, dst) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_text_atomic("x", tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_unique_and_beside_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(name)
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", spy)
    p = tmp_path / "same.json"
    threads = [threading.Thread(target=write_text_atomic, args=(f"{i}", p)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and len(set(seen)) == 8
    assert all(Path(s).parent == tmp_path and Path(s).name.startswith(".same.json.") for s in seen)
    assert p.read_text() in {str(i) for i in range(8)}
    assert [q.name for q in tmp_path.iterdir()] == ["same.json"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_permissions_as_a_plain_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    for writer, name in ((write_text_atomic, "a.txt"), (save_torch_atomic, "a.pt")):
        writer("x", tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_temp_dirs_get_a_plain_mkdirs_permissions(tmp_path: Path) -> None:
    """Not mkdtemp's 0700: a directory renamed into a shared cache stays readable."""
    plain = tmp_path / "plain"
    plain.mkdir()
    a, b = make_temp_dir(tmp_path, ".x."), make_temp_dir(tmp_path, ".x.")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.") and a.is_dir()
    assert stat.S_IMODE(a.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(Path(tempfile.mkdtemp(dir=tmp_path)).stat().st_mode) == 0o700


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLDA_CACHE", "~/somewhere/vlda")
    assert default_cache_dir() == Path.home() / "somewhere" / "vlda"
    monkeypatch.setenv("VLDA_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("VLDA_CACHE")
        else:
            monkeypatch.setenv("VLDA_CACHE", unset)
        assert default_cache_dir() == Path.home() / ".cache" / "vlda"


def test_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlda.demo import assets
    from vlda.engine import checkpoint, sources

    assert assets.default_cache_dir is default_cache_dir
    assert sources.default_cache_dir is default_cache_dir
    assert checkpoint.write_text_atomic is write_text_atomic
    assert checkpoint.save_atomic is save_torch_atomic


def test_imports_nothing_from_vlda() -> None:
    tree = ast.parse(Path(files.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.split(".")[0] == "vlda"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and (node.module or "").split(".")[0] != "vlda"


def test_a_failed_write_names_the_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fd) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError) as err:
        write_text_atomic("x", tmp_path / "a.txt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []

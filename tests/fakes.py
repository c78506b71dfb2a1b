"""Tiny fake benchmark trees on disk, in each benchmark's real layout, for tests.

Test code only (not installed with vlda; was ``vlda.data.fake``): test modules import it as
``from fakes import ...`` (``tests/`` is on ``sys.path`` through ``tests/conftest.py``).

``make_fake_benchmark("officehome", tmp_path)`` writes a few small PNGs per class (and the
image lists where the layout has them, numbered in the benchmark's label order), so readers,
``vlda data check`` and anything built on :func:`vlda.data.readers.load_domain` can be tested
without the real data. Images differ by domain, class and index, so they are told apart.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vlda.data.benchmarks import Benchmark, get_benchmark
from vlda.data.layouts import FolderLayout, Layout, ListLayout

CORRUPT_BYTES = b"\x89PNG\r\n\x1a\n this is not an image"


def fake_image_bytes(seed: Iterable[int], size: int = 8) -> bytes:
    """PNG bytes of a small RGB pattern that depends on ``seed`` (a few ints)."""
    rng = np.random.default_rng(list(seed))
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def fake_layout(b: Benchmark, domain: str, layout: str | None = None) -> Layout:
    """The layout a fake tree of ``domain`` is written in: the first of the benchmark's layouts
    that provides every split of the domain (whose ``origin`` contains ``layout``, if given)."""
    for lay in b.layouts:
        if layout is not None and layout.lower() not in lay.origin.lower():
            continue
        if all(lay.provides(domain, s) for s in b.splits[domain]):
            return lay
    raise ValueError(f"{b.id} has no layout {layout!r} that provides every split of {domain!r}")


def _stored_parts(lay: Layout, splits: Sequence[str]) -> list[str]:
    parts: list[str] = []
    for s in splits:
        parts += [p for p in lay.parts(s) if p not in parts]
    return parts


def expected_fake_counts(
    benchmark_id: str | Benchmark,
    per_class: int = 2,
    domains: Sequence[str] | None = None,
    layout: str | None = None,
) -> dict[tuple[str, str], int]:
    """Image counts per ``(domain, split)`` of the tree :func:`make_fake_benchmark` writes."""
    b = get_benchmark(benchmark_id)
    names = [b.resolve_domain(d) for d in domains] if domains else list(b.domains)
    counts = {}
    for d in names:
        lay = fake_layout(b, d, layout)
        for s in b.splits[d]:
            counts[(d, s)] = per_class * b.num_classes * len(lay.parts(s))
    return counts


def make_fake_benchmark(
    benchmark_id: str | Benchmark,
    root: str | os.PathLike,
    per_class: int = 2,
    image_size: int = 8,
    domains: Sequence[str] | None = None,
    corrupt: int = 0,
    layout: str | None = None,
) -> Path:
    """Write a tiny tree of ``benchmark_id`` under ``root`` and return ``root``.

    Each domain gets ``per_class`` images per class and stored split, in the benchmark's first
    layout that provides all its splits (or the first whose origin contains ``layout``, e.g.
    ``"official"``, ``"Dassl"``, ``"DomainBed"``). List files use the benchmark's label order,
    offsets (1-based PACS) and codes (SVHN's 10 for digit 0). ``corrupt`` images, spread over
    the tree, are overwritten with bytes that are not an image.
    """
    b = get_benchmark(benchmark_id)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [b.resolve_domain(d) for d in domains] if domains else list(b.domains)
    written: list[Path] = []
    for di, d in enumerate(names):
        lay = fake_layout(b, d, layout)
        ddir = b.domain_dirs[d][0]
        for pi, part in enumerate(_stored_parts(lay, b.splits[d])):
            spelling = lay.split_spellings(part)[0]
            if isinstance(lay, FolderLayout):
                written += _write_folders(
                    b, lay, root, ddir, spelling, per_class, image_size, (di, pi)
                )
            else:
                written += _write_list(
                    b, lay, root, d, ddir, spelling, per_class, image_size, (di, pi)
                )
    if corrupt:
        step = max(1, len(written) // corrupt)
        for path in written[::step][:corrupt]:
            path.write_bytes(CORRUPT_BYTES)
    return root


def _write_folders(
    b: Benchmark,
    lay: FolderLayout,
    root: Path,
    ddir: str,
    split: str,
    per_class: int,
    size: int,
    seed: tuple[int, int],
) -> list[Path]:
    base = root / lay.path.format(domain=ddir, split=split)
    out = []
    for ci, cname in enumerate(b.classnames):
        folder = base / cname
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            path = folder / f"{split}_{ci:03d}_{k}.png"
            path.write_bytes(fake_image_bytes((*seed, ci, k), size))
            out.append(path)
    return out


def _write_list(
    b: Benchmark,
    lay: ListLayout,
    root: Path,
    domain: str,
    ddir: str,
    split: str,
    per_class: int,
    size: int,
    seed: tuple[int, int],
) -> list[Path]:
    images = root / lay.images.format(domain=ddir, split=split) if lay.images else root
    code = {new: old for old, new in b.label_remap.get(domain, {}).items()}
    lines, out = [], []
    for ci, cname in enumerate(b.classnames):
        for k in range(per_class):
            file = f"{split}_{ci:03d}_{k}.png"
            rel = lay.entry.format(domain=ddir, split=split, file=file, **{"class": cname})
            path = images / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(fake_image_bytes((*seed, ci, k), size))
            out.append(path)
            number = code.get(ci, ci) - lay.label_offset
            lines.append(f"{rel} {number}" if lay.numbered else rel)
    list_file = root / lay.path.format(domain=ddir, split=split)
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def make_fake_folder_domains(
    root: str | os.PathLike,
    domains: Mapping[str, Sequence[str]],
    per_class: int = 2,
    image_size: int = 8,
) -> Path:
    """Write ``root/<domain>/<class>/<k>.png`` for each domain and its class list; return root."""
    root = Path(root)
    for di, (domain, classes) in enumerate(domains.items()):
        for ci, cname in enumerate(classes):
            folder = root / domain / cname
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                (folder / f"{k}.png").write_bytes(fake_image_bytes((di, ci, k), image_size))
    return root

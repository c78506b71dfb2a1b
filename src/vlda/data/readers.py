"""Read a domain's image paths and labels from disk.

Two on-disk layouts are read: a folder per class, and image lists (``relative/path label`` per
line). For a registered benchmark, :func:`load_domain` finds which of the benchmark's known
layouts is present under the user's root and reads it. Labels always follow the benchmark's
class list: a class folder is matched to a class *by name* (exactly, then ignoring case, spaces,
underscores and hyphens), never by its position in a sorted listing, so a folder sort can never
shift the labels against the prompt names.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlda.data.benchmarks import Benchmark, get_benchmark
from vlda.data.layouts import (
    FolderLayout,
    Layout,
    ListLayout,
    find_child,
    is_image_file,
    norm_name,
    resolve_relpath,
)

logger = logging.getLogger("vlda.data")

Sample = tuple[Path, int]


@dataclass
class DomainData:
    """The images of one domain (and split) with their labels and the names to prompt with."""

    name: str  # domain id
    samples: list[tuple[Path, int]]  # absolute image paths and labels (label order = classnames)
    classnames: tuple[str, ...]
    prompt_names: tuple[str, ...]
    domain_prompt_name: str
    split: str = "all"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def class_counts(self) -> list[int]:
        """Number of images per class, in label order."""
        counts = [0] * len(self.classnames)
        for _, label in self.samples:
            counts[label] += 1
        return counts


# ---------------------------------------------------------------------------------------------
# Folder per class


class ClassMatcher:
    """Maps a folder name to a label: exact name, then alias, then loose match."""

    def __init__(self, classnames: Sequence[str], aliases: Mapping[str, str] | None = None):
        self.classnames = tuple(classnames)
        index = {c: i for i, c in enumerate(self.classnames)}
        self._exact = dict(index)
        self._loose = {norm_name(c): i for c, i in index.items()}
        for alias, target in (aliases or {}).items():
            self._exact.setdefault(alias, index[target])
            self._loose.setdefault(norm_name(alias), index[target])

    def get(self, folder: str) -> int | None:
        label = self._exact.get(folder)
        return label if label is not None else self._loose.get(norm_name(folder))


def list_class_dirs(directory: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``directory``."""
    return sorted(
        e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith((".", "__"))
    )


def walk_images(directory: Path) -> list[Path]:
    """All image files under ``directory`` (recursively, hidden entries skipped), sorted."""
    found: list[str] = []
    for top, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        found.extend(os.path.join(top, f) for f in sorted(files) if is_image_file(f))
    return [Path(p) for p in found]


@dataclass
class FolderMatch:
    """How the class folders of a directory line up with a class list."""

    labels: dict[str, int]  # folder name -> label
    missing: list[str]  # classes without a folder
    unknown: list[str]  # folders that name no class
    duplicates: list[str]  # folders that name a class another folder already names


def match_class_folders(
    directory: Path, classnames: Sequence[str], aliases: Mapping[str, str] | None = None
) -> FolderMatch:
    """Match the class folders in ``directory`` to ``classnames`` (see :class:`ClassMatcher`)."""
    matcher = ClassMatcher(classnames, aliases)
    labels: dict[str, int] = {}
    unknown, duplicates = [], []
    for folder in list_class_dirs(directory):
        label = matcher.get(folder)
        if label is None:
            unknown.append(folder)
        elif label in labels.values():
            duplicates.append(folder)
        else:
            labels[folder] = label
    present = set(labels.values())
    missing = [c for i, c in enumerate(classnames) if i not in present]
    return FolderMatch(labels, missing, unknown, duplicates)


def class_mismatch_message(directory: Path, match: FolderMatch) -> str:
    parts = []
    if match.missing:
        parts.append(f"no folder for {len(match.missing)} class(es) {_short(match.missing)}")
    if match.unknown:
        parts.append(f"folder(s) {_short(match.unknown)} name no class")
    if match.duplicates:
        parts.append(f"folder(s) {_short(match.duplicates)} repeat a class another folder names")
    return f"Class folders in {directory} do not match the class list: " + "; ".join(parts) + "."


def read_class_folders(
    directory: str | os.PathLike,
    classnames: Sequence[str] | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """Read a folder per class: ``directory/<class>/**/<image>``.

    With ``classnames``, labels follow that order and each folder is matched to a class by name
    (exactly, then by ``aliases``, then ignoring case/spaces/underscores/hyphens); a folder that
    names no class, or a class with no folder, is an error. Without, the classes are the sorted
    folder names. Returns the samples (absolute paths, sorted by label then path) and the class
    names.
    """
    directory = Path(os.path.abspath(os.path.expanduser(directory)))
    if not directory.is_dir():
        raise FileNotFoundError(f"Image folder {directory} does not exist.")
    if classnames is None:
        names = tuple(list_class_dirs(directory))
        if not names:
            raise ValueError(
                f"{directory} has no class folders; expected one folder per class "
                f"({directory}/<class>/<image>)."
            )
        labels = {name: i for i, name in enumerate(names)}
    else:
        names = tuple(classnames)
        match = match_class_folders(directory, names, aliases)
        if match.missing or match.unknown or match.duplicates:
            raise ValueError(class_mismatch_message(directory, match))
        labels = match.labels
    samples: list[Sample] = []
    for folder, label in sorted(labels.items(), key=lambda kv: (kv[1], kv[0])):
        samples.extend((p, label) for p in walk_images(directory / folder))
    return samples, names


# ---------------------------------------------------------------------------------------------
# Image lists


@dataclass
class ListEntry:
    """One line of an image list."""

    rel: str  # path as written (``\\`` turned into ``/``)
    label: int | None  # the number at the end of the line, if any
    line: int  # 1-based line number
    text: str  # the line, for messages


def parse_image_list(list_file: str | os.PathLike) -> list[ListEntry]:
    """Lines ``relative/path [label]``; blank lines and ``#`` comments are skipped.

    The label is the last whitespace-separated token when it is an integer, so paths may
    contain spaces (``Real World/Mug/001.jpg 21``).
    """
    entries = []
    with open(list_file, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2 and _is_int(parts[1]):
                rel, label = parts[0].strip(), int(parts[1])
            else:
                rel, label = line, None
            entries.append(ListEntry(rel.replace("\\", "/"), label, lineno, line))
    return entries


def _is_int(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def _list_error(list_file: str | os.PathLike, entry: ListEntry, why: str) -> ValueError:
    return ValueError(f"{list_file}:{entry.line}: {why}, got {entry.text!r}")


def read_image_list(
    list_file: str | os.PathLike,
    image_root: str | os.PathLike,
    label_offset: int = 0,
    num_classes: int | None = None,
) -> list[tuple[Path, int]]:
    """Read ``relative/path label`` lines; paths are taken relative to ``image_root``.

    ``label_offset`` is added to every label (``-1`` for 1-based lists). A line without an
    integer label, or a label outside ``0..num_classes-1`` (when given; negative otherwise), is
    an error naming ``file:line``.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"Image list {list_file} does not exist.")
    root = os.path.abspath(os.path.expanduser(image_root))
    samples = []
    for e in parse_image_list(list_file):
        if e.label is None:
            raise _list_error(list_file, e, "expected 'relative/path label' with an integer label")
        label = e.label + label_offset
        if label < 0:
            raise _list_error(list_file, e, f"label {e.label} + offset {label_offset} is negative")
        if num_classes is not None and label >= num_classes:
            raise _list_error(
                list_file, e, f"label {label} is outside 0..{num_classes - 1} ({num_classes} classes)"
            )
        samples.append((Path(os.path.join(root, e.rel)), label))
    return samples


def _any_exists(root: Path, rels: Sequence[str]) -> bool:
    probe = [rels[0], rels[len(rels) // 2], rels[-1]]
    return any(os.path.exists(os.path.join(root, r)) for r in probe)


def pick_image_root(rels: Sequence[str], candidates: Sequence[Path]) -> Path:
    """The first candidate folder under which some of the listed paths exist (else the first)."""
    if rels:
        for cand in candidates:
            if _any_exists(cand, rels):
                return cand
    return candidates[0]


# ---------------------------------------------------------------------------------------------
# Benchmarks: find the layout present on disk, then read it


@dataclass
class SourcePart:
    """One stored split of a domain: a class-folder root or a list file."""

    split: str
    path: Path
    image_roots: tuple[Path, ...] = ()  # lists: where the listed paths may be relative to


@dataclass
class DomainSource:
    """Where a benchmark domain's split was found on disk, in which layout."""

    benchmark: Benchmark
    domain: str
    split: str
    base: Path  # the dataset folder the layout was found in
    layout: Layout
    parts: list[SourcePart]

    @property
    def kind(self) -> str:
        return self.layout.kind

    def describe(self, relative_to: Path | None = None) -> str:
        """The file(s) or folder(s) read and the layout's origin, e.g. for messages."""

        def show(path: Path) -> str:
            if relative_to is not None and relative_to in path.parents:
                return path.relative_to(relative_to).as_posix()
            return str(path)

        paths = ", ".join(show(p.path) for p in self.parts)
        return f"{paths} ({self.layout.origin or self.kind})"


@dataclass
class SourceRead:
    """What reading a :class:`DomainSource` gave, with the irregularities met on the way."""

    samples: list[Sample]
    listed: int = 0  # entries before known-broken files were dropped
    known_broken: list[Path] = field(default_factory=list)
    duplicates: int = 0
    label_disagreements: dict[Path, int] = field(default_factory=dict)  # list file -> lines
    folder_matches: dict[Path, FolderMatch] = field(default_factory=dict)
    image_roots: dict[Path, Path] = field(default_factory=dict)  # list file -> image root
    listed_by_file: dict[Path, list[Path]] = field(default_factory=dict)  # list file -> paths


def _dataset_bases(b: Benchmark, root: Path) -> list[Path]:
    bases = [root]
    for name in b.root_dirs:
        cand = find_child(root, name)
        if cand is not None and cand.is_dir() and cand not in bases:
            bases.append(cand)
    return bases


def _find_part(
    b: Benchmark, layout: Layout, base: Path, domain: str, part: str
) -> SourcePart | None:
    want_dir = isinstance(layout, FolderLayout)
    for ddir in b.domain_dirs[domain]:
        for spelling in layout.split_spellings(part):
            found = resolve_relpath(base, layout.path.format(domain=ddir, split=spelling))
            if found is None or not (found.is_dir() if want_dir else found.is_file()):
                continue
            if isinstance(layout, FolderLayout):
                return SourcePart(part, found)
            roots = []
            if layout.images:
                rel = layout.images.format(domain=ddir, split=spelling)
                roots.append(resolve_relpath(base, rel) or base / rel)
            roots += [base, found.parent]
            return SourcePart(part, found, tuple(dict.fromkeys(roots)))
    return None


def locate_domain(
    benchmark: Benchmark | str, domain: str, root: str | os.PathLike, split: str = "all"
) -> DomainSource:
    """Find ``split`` of ``domain`` under ``root`` in one of the benchmark's layouts.

    ``root`` may be the dataset folder itself or a folder holding it under one of its usual
    names. Raises ``FileNotFoundError`` with one sentence saying what was expected where.
    """
    b = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
    domain = b.resolve_domain(domain)
    root = Path(os.path.abspath(os.path.expanduser(root)))
    bases = _dataset_bases(b, root)
    layouts = [lay for lay in b.layouts if lay.provides(domain, split)]
    for base in bases:
        for layout in layouts:
            parts = [_find_part(b, layout, base, domain, p) for p in layout.parts(split)]
            found = [p for p in parts if p is not None]
            if parts and len(found) == len(parts):
                return DomainSource(b, domain, split, base, layout, found)
    ddir = b.domain_dirs[domain][0]
    expected = " or ".join(
        f"{root}{os.sep}{lay.describe(ddir, lay.parts(split)[0])} ({lay.origin})" for lay in layouts
    )
    also_txt = f" (or a sub-folder named {' or '.join(b.root_dirs)})" if b.root_dirs else ""
    raise FileNotFoundError(
        f"Could not find {b.name} domain '{domain}' (split '{split}') under {root}{also_txt}: "
        f"expected {expected or 'a layout that provides it'}."
    )


def _label_from_path(rel: str, matcher: ClassMatcher) -> int | None:
    parts = rel.rsplit("/", 2)
    return matcher.get(parts[-2]) if len(parts) >= 2 else None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a domain's samples are built (restored
    as it was, also on an error). Its passes grow with the objects alive, and reading DomainNet's
    lists (586k lines, a path and a tuple each, none in a reference cycle) spent a quarter to a
    third of its time in them (measured: ``docs/benchmarks.md``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@gc_paused()
def read_source(src: DomainSource, strict: bool = True) -> SourceRead:
    """Read the samples of a located domain.

    A malformed list line raises ``ValueError``. With ``strict``, so do class folders that do
    not match the class list, and a list none of whose probed images exists raises
    ``FileNotFoundError``; without, folder mismatches are recorded in the result (for
    ``vlda data check``) and the matching folders read.
    """
    b = src.benchmark
    matcher = ClassMatcher(b.classnames, b.class_aliases)
    out = SourceRead(samples=[])
    seen: set[Path] = set()

    def add(path: Path, label: int) -> None:
        if path in seen:
            out.duplicates += 1
            return
        seen.add(path)
        out.samples.append((path, label))

    for part in src.parts:
        if isinstance(src.layout, FolderLayout):
            match = match_class_folders(part.path, b.classnames, b.class_aliases)
            if match.missing or match.unknown or match.duplicates:
                if strict:
                    raise ValueError(class_mismatch_message(part.path, match))
                out.folder_matches[part.path] = match
            for folder, label in sorted(match.labels.items(), key=lambda kv: (kv[1], kv[0])):
                for p in walk_images(part.path / folder):
                    add(p, label)
        else:
            _read_list_part(src, src.layout, part, matcher, add, out, strict)
    out.listed = len(out.samples)
    if b.known_broken:
        kept = []
        for path, label in out.samples:
            posix = path.as_posix()
            if any(posix == k or posix.endswith("/" + k) for k in b.known_broken):
                out.known_broken.append(path)
            else:
                kept.append((path, label))
        out.samples = kept
    return out


def _read_list_part(
    src: DomainSource,
    layout: ListLayout,
    part: SourcePart,
    matcher: ClassMatcher,
    add: Callable[[Path, int], None],
    out: SourceRead,
    strict: bool,
) -> None:
    """Read one list file of ``src`` (whose layout is ``layout``) into ``out`` through ``add``."""
    b = src.benchmark
    remap = b.label_remap.get(src.domain, {})
    entries = parse_image_list(part.path)
    image_root = pick_image_root([e.rel for e in entries], part.image_roots)
    out.image_roots[part.path] = image_root
    if strict and entries and not _any_exists(image_root, [e.rel for e in entries]):
        roots = ", ".join(str(r) for r in part.image_roots)
        raise FileNotFoundError(
            f"The images listed in {part.path} are not on disk: looked under {roots} "
            f"for e.g. {entries[0].rel!r}."
        )
    root = str(image_root)
    paths = out.listed_by_file.setdefault(part.path, [])
    disagreements = 0
    for e in entries:
        by_name = None if layout.labels == "column" else _label_from_path(e.rel, matcher)
        by_number = None
        if e.label is not None and layout.labels != "path":
            by_number = remap.get(e.label, e.label) + layout.label_offset
        if layout.labels == "path" and by_name is None:
            raise _list_error(part.path, e, f"expected a path whose folder is a {b.name} class")
        label = by_name if by_name is not None else by_number
        if label is None:
            raise _list_error(part.path, e, "expected 'relative/path label' with an integer label")
        if not 0 <= label < len(b.classnames):
            raise _list_error(part.path, e, f"label {label} is outside 0..{len(b.classnames) - 1}")
        if by_name is not None and e.label is not None:
            number = remap.get(e.label, e.label) + layout.label_offset
            disagreements += number != by_name
        path = Path(os.path.join(root, e.rel))
        paths.append(path)
        add(path, label)
    if disagreements:
        out.label_disagreements[part.path] = disagreements


def load_domain(
    benchmark: Benchmark | str, domain: str, root: str | os.PathLike, split: str = "all"
) -> DomainData:
    """Read ``split`` of ``domain`` of a registered benchmark from under ``root``.

    Any of the benchmark's known layouts is accepted (official archive, TLlib image lists,
    Dassl, DomainBed; folder names matched loosely, e.g. ``Real World`` / ``Real_World`` /
    ``real_world``). Labels follow ``benchmark.classnames``. A missing root or domain raises
    ``FileNotFoundError`` saying what was expected where; an empty domain ``ValueError``.
    """
    b = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
    domain = b.resolve_domain(domain)
    if split not in b.splits[domain]:
        raise ValueError(
            f"{b.name} domain '{domain}' has no split {split!r}; "
            f"it has {', '.join(b.splits[domain])}."
        )
    root_path = Path(os.path.expanduser(root))
    if not root_path.is_dir():
        raise FileNotFoundError(
            f"The {b.name} root folder {root_path} does not exist; pass the folder that holds "
            f"the {b.name} domains ({', '.join(b.domain_dirs[d][0] for d in b.domains)})."
        )
    src = locate_domain(b, domain, root_path, split)
    read = read_source(src, strict=True)
    for list_file, n in read.label_disagreements.items():
        logger.warning(
            "%d line(s) of %s give a class number that differs from the class folder in the "
            "path; vlda labels by the folder name, in %s's class order.",
            n,
            list_file,
            b.name,
        )
    if not read.samples:
        raise ValueError(
            f"{b.name} domain '{domain}' (split '{split}') in {src.describe()} has no images."
        )
    data = DomainData(
        name=domain,
        samples=read.samples,
        classnames=b.classnames,
        prompt_names=b.prompt_names,
        domain_prompt_name=b.domain_prompt_names[domain],
        split=split,
    )
    empty = [c for c, n in zip(b.classnames, data.class_counts(), strict=True) if n == 0]
    if empty:
        logger.warning(
            "warning: %s domain '%s' (split '%s') has no image of class(es) %s in %s; they stay in "
            "the class list (%d classes)",
            b.name, domain, split, _short(empty), src.describe(), b.num_classes,
        )
    return data


def _short(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
    return f"[{shown}{more}]"

"""``vlda data check``: is a benchmark on disk complete and readable?

For each domain and split the check finds the layout in use, then reports as *problems*:
files a list names that are absent, image files beside the listed ones that no list names,
counts that differ from the benchmark's expected counts, images PIL cannot decode, and class
folders that do not match the class list. Things worth knowing but not wrong (a known broken
file that is skipped by design, a list that numbers classes differently from vlda, a split the
benchmark's protocol does not use) are *notes*.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from vlda.data.benchmarks import Benchmark, get_benchmark
from vlda.data.decode import decode, is_high_bit_depth
from vlda.data.readers import locate_domain, read_source, walk_images

_EXAMPLES = 5  # paths shown per problem in messages; the report keeps them all
_PROGRESS_MIN = 500  # show a progress bar when verifying at least this many images


_COUNTED = {  # per-domain lists the summary counts
    "missing": "missing file(s)",
    "extra": "extra file(s)",
    "unreadable": "unreadable file(s)",
    "high_bit_depth": "high-bit-depth image(s)",
    "empty": "empty class folder(s)",
}


@dataclass
class CheckReport:
    """The outcome of :func:`check_benchmark`; ``ok`` when there are no problems."""

    benchmark: str
    root: Path
    problems: list[str] = field(default_factory=list)
    per_domain: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A human-readable report: one line per domain and split, then problems and notes."""
        lines = [f"{self.benchmark} at {self.root}"]
        for domain, info in self.per_domain.items():
            for split, c in info.get("counts", {}).items():
                exp = c.get("expected")
                counts = f"{c['found']:>7}" + (f" / {exp:<7}" if exp is not None else " " * 10)
                source = info.get("sources", {}).get(split, "")
                lines.append(f"  {domain:<13} {split:<6} {counts} {source}")
            for key, what in _COUNTED.items():
                if info.get(key):
                    lines.append(f"  {domain:<13} {len(info[key])} {what}")
            if info.get("class_counts"):
                lines.append(f"  {'':<13} per class: {class_counts_text(info['class_counts'])}")
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {n}" for n in self.notes]
        if self.problems:
            lines.append(f"Problems ({len(self.problems)}):")
            lines += [f"  - {p}" for p in self.problems]
            lines.append("Result: NOT OK")
        else:
            total = sum(
                c["found"]
                for info in self.per_domain.values()
                for s, c in info.get("counts", {}).items()
                if s == "all"
            )
            lines.append(f"Result: OK ({len(self.per_domain)} domain(s), {total} images)")
        return "\n".join(lines)


def class_counts_text(counts: dict[str, int], limit: int = 40) -> str:
    """``mug 12, pen 0, ...`` (all classes up to ``limit``; beyond, the range and the empty ones)."""
    if len(counts) <= limit:
        return ", ".join(f"{c} {n}" for c, n in counts.items())
    lo = min(counts, key=lambda c: counts[c])
    hi = max(counts, key=lambda c: counts[c])
    empty = [c for c, n in counts.items() if n == 0]
    text = f"{len(counts)} classes, {counts[lo]} ({lo}) to {counts[hi]} ({hi}) images"
    return text + (f"; none of {examples(empty)}" if empty else "")


def inspect_image(path: str | os.PathLike) -> tuple[str | None, bool]:
    """``(error, high_bit_depth)``: ``error`` is ``None`` when the image decodes the way a run
    reads it (:func:`vlda.data.decode.load_image`: a mode that cannot be converted to RGB
    counts as unreadable), else the error as text; ``high_bit_depth`` when its pixels hold more
    than 8 bits (they are scaled into 0..255)."""
    try:
        _, mode = decode(path)
    except Exception as err:  # PIL raises many types for corrupt files
        return f"{type(err).__name__}: {err}", False
    return None, is_high_bit_depth(mode)


def verify_image(path: str | os.PathLike) -> str | None:
    """``None`` if the image can be read as a run reads it, else the error as text."""
    return inspect_image(path)[0]


@dataclass
class ImageScan:
    """What decoding a list of images found: the unreadable ones (with the error) and the
    high-bit-depth ones (readable; scaled into 8 bits)."""

    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    high_bit: list[Path] = field(default_factory=list)


def scan_images(
    paths: Sequence[Path], workers: int | None = None, desc: str = "verifying", progress: bool = True
) -> ImageScan:
    """Decode every image (a few threads: decoding releases the GIL; a progress bar when there
    are many, unless not ``progress``) and report the unreadable and the high-bit-depth ones."""
    workers = workers or min(8, os.cpu_count() or 1)
    scan = ImageScan()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(inspect_image, paths, chunksize=64)
        bar = tqdm(
            zip(paths, results, strict=True),
            total=len(paths),
            desc=desc,
            unit="img",
            disable=not progress or len(paths) < _PROGRESS_MIN,
            leave=False,
        )
        for path, (err, high) in bar:
            if err is not None:
                scan.unreadable.append((Path(path), err))
            elif high:
                scan.high_bit.append(Path(path))
    return scan


def find_unreadable(
    paths: Sequence[Path], workers: int | None = None, desc: str = "verifying", progress: bool = True
) -> list[tuple[Path, str]]:
    """The paths that cannot be read as a run reads them, with the error."""
    return scan_images(paths, workers, desc, progress).unreadable


def examples(paths: Sequence[object]) -> str:
    """The first few items, then how many more."""
    shown = ", ".join(str(p) for p in paths[:_EXAMPLES])
    return shown + (f", ... (+{len(paths) - _EXAMPLES})" if len(paths) > _EXAMPLES else "")


def _check_domain(
    b: Benchmark, domain: str, root: Path, report: CheckReport, verify: bool, workers: int | None
) -> None:
    info: dict = {
        "counts": {},
        "sources": {},
        "missing": [],
        "extra": [],
        "unreadable": [],
        "class_mismatch": {},
        "label_disagreements": 0,
        "known_broken": [],
    }
    report.per_domain[domain] = info
    needed = {b.train_split, b.test_split, "all"}
    files: dict[Path, None] = {}  # every file a split names (ordered, unique)
    listed: set[Path] = set()
    scan_dirs: set[Path] = set()
    seen_lists: set[Path] = set()  # list files already reported on (splits share them)
    for split in b.splits[domain]:
        try:
            src = locate_domain(b, domain, root, split)
            read = read_source(src, strict=False)
        except FileNotFoundError as err:
            (report.problems if split in needed else report.notes).append(str(err))
            continue
        except ValueError as err:  # a malformed list line
            report.problems.append(str(err))
            continue
        info["sources"][split] = src.describe(relative_to=root)
        if split == b.train_split:
            counts = dict.fromkeys(b.classnames, 0)
            for _, label in read.samples:
                counts[b.classnames[label]] += 1
            info["class_counts"] = counts
        expected = b.expected_counts.get((domain, split))
        info["counts"][split] = {"found": read.listed, "expected": expected}
        if expected is not None and read.listed != expected:
            report.problems.append(
                f"{domain}/{split}: found {read.listed} images, expected {expected} "
                f"({src.describe(relative_to=root)})."
            )
        for folder, match in read.folder_matches.items():
            info["class_mismatch"][str(folder)] = {
                "missing": match.missing,
                "unknown": match.unknown + match.duplicates,
            }
            if match.missing:
                report.problems.append(
                    f"{folder}: no folder for class(es) {examples(match.missing)}."
                )
            if match.unknown or match.duplicates:
                report.problems.append(
                    f"{folder}: folder(s) that name no {b.name} class (or repeat one): "
                    f"{examples(match.unknown + match.duplicates)}."
                )
        for list_file, n in read.label_disagreements.items():
            if list_file in seen_lists:
                continue
            info["label_disagreements"] += n
            report.notes.append(
                f"{list_file}: {n} line(s) number the class differently from vlda's "
                f"{b.name} order; vlda labels these images by their class folder."
            )
        if read.duplicates:
            report.notes.append(f"{domain}/{split}: {read.duplicates} duplicate line(s) ignored.")
        for p in read.known_broken:
            if p not in info["known_broken"]:
                info["known_broken"].append(p)
                report.notes.append(f"{p} is a known broken file; vlda skips it.")
        paths = [p for p, _ in read.samples]
        files.update(dict.fromkeys(paths))
        listed.update(read.known_broken)
        seen_lists.update(read.label_disagreements)
        for list_file, part_paths in read.listed_by_file.items():
            listed.update(part_paths)
            if not part_paths:
                continue
            common = Path(os.path.commonpath([str(p) for p in part_paths]))
            common = common.parent if len(set(part_paths)) == 1 else common
            # Only a folder strictly inside the dataset folder can be scanned for extras.
            if common != src.base and src.base in common.parents:
                scan_dirs.add(common)
            elif b.lists_cover_all_images:
                report.notes.append(
                    f"{list_file}: the listed images share no folder of their own; "
                    "extra files were not looked for."
                )
    missing = [p for p in files if not p.exists()]
    if missing:
        info["missing"] = missing
        report.problems.append(
            f"{domain}: {len(missing)} listed file(s) do not exist: {examples(missing)}."
        )
    if b.lists_cover_all_images:
        for folder in sorted(scan_dirs):
            extra = [p for p in walk_images(folder) if p not in listed]
            if extra:
                info["extra"].extend(extra)
                report.problems.append(
                    f"{domain}: {len(extra)} image file(s) under {folder} are in no list: "
                    f"{examples(extra)}."
                )
    if verify:
        gone = set(missing)
        present = [p for p in files if p not in gone]
        report_images(domain, present, report, info, workers, f"{b.id}/{domain}")


def report_images(
    domain: str, paths: Sequence[Path], report: CheckReport, info: dict, workers: int | None,
    desc: str,
) -> None:
    """Decode ``paths`` of ``domain``; unreadable images are problems, high-bit-depth ones a note
    (vlda scales them into 8 bits)."""
    scan = scan_images(paths, workers, desc=desc)
    bad = scan.unreadable
    if bad:
        info["unreadable"] = [p for p, _ in bad]
        shown = "; ".join(f"{p} ({e})" for p, e in bad[:_EXAMPLES])
        more = f"; ... (+{len(bad) - _EXAMPLES})" if len(bad) > _EXAMPLES else ""
        report.problems.append(f"{domain}: {len(bad)} image(s) cannot be decoded: {shown}{more}.")
    if scan.high_bit:
        info["high_bit_depth"] = scan.high_bit
        report.notes.append(
            f"{domain}: {len(scan.high_bit)} high-bit-depth image(s) (16-bit or float), scaled "
            f"into 8 bits when read: {examples(scan.high_bit)}."
        )


def check_benchmark(
    benchmark: str,
    root: str | os.PathLike,
    domains: Sequence[str] | None = None,
    verify_images: bool = True,
    workers: int | None = None,
) -> CheckReport:
    """Check a benchmark's files under ``root``; see the module docstring for what is checked.

    ``domains`` limits the check (ids or aliases); ``verify_images`` decodes every image with
    PIL (slow on large benchmarks; a progress bar shows). An unknown benchmark or domain raises
    ``ValueError``; everything found on disk goes into the report.
    """
    b = get_benchmark(benchmark)
    names = [b.resolve_domain(d) for d in domains] if domains else list(b.domains)
    root_path = Path(os.path.abspath(os.path.expanduser(root)))
    report = CheckReport(benchmark=b.id, root=root_path)
    if not root_path.is_dir():
        report.problems.append(f"Root folder {root_path} does not exist.")
        return report
    for domain in dict.fromkeys(names):
        _check_domain(b, domain, root_path, report, verify_images, workers)
    report.notes = list(dict.fromkeys(report.notes))
    report.problems = list(dict.fromkeys(report.problems))
    return report

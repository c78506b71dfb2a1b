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

from PIL import Image
from tqdm import tqdm

from vlda.data.benchmarks import Benchmark, get_benchmark
from vlda.data.readers import locate_domain, read_source, walk_images

_EXAMPLES = 5  # paths shown per problem in messages; the report keeps them all
_PROGRESS_MIN = 500  # show a progress bar when verifying at least this many images


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
            for key in ("missing", "extra", "unreadable"):
                if info.get(key):
                    lines.append(f"  {domain:<13} {len(info[key])} {key} file(s)")
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


def verify_image(path: str | os.PathLike) -> str | None:
    """``None`` if PIL can fully decode the image, else the error as text."""
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # PIL raises many types for corrupt files
        return f"{type(err).__name__}: {err}"
    return None


def find_unreadable(
    paths: Sequence[Path], workers: int | None = None, desc: str = "verifying"
) -> list[tuple[Path, str]]:
    """The paths PIL cannot decode, with the error; a progress bar when there are many.

    Decoding releases the GIL, so a few threads speed this up on large benchmarks.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    bad = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(verify_image, paths, chunksize=64)
        bar = tqdm(
            zip(paths, results, strict=True),
            total=len(paths),
            desc=desc,
            unit="img",
            disable=len(paths) < _PROGRESS_MIN,
            leave=False,
        )
        for path, err in bar:
            if err is not None:
                bad.append((path, err))
    return bad


def _examples(paths: Sequence[object]) -> str:
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
                    f"{folder}: no folder for class(es) {_examples(match.missing)}."
                )
            if match.unknown or match.duplicates:
                report.problems.append(
                    f"{folder}: folder(s) that name no {b.name} class (or repeat one): "
                    f"{_examples(match.unknown + match.duplicates)}."
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
            f"{domain}: {len(missing)} listed file(s) do not exist: {_examples(missing)}."
        )
    if b.lists_cover_all_images:
        for folder in sorted(scan_dirs):
            extra = [p for p in walk_images(folder) if p not in listed]
            if extra:
                info["extra"].extend(extra)
                report.problems.append(
                    f"{domain}: {len(extra)} image file(s) under {folder} are in no list: "
                    f"{_examples(extra)}."
                )
    if verify:
        gone = set(missing)
        present = [p for p in files if p not in gone]
        bad = find_unreadable(present, workers, desc=f"{b.id}/{domain}")
        if bad:
            info["unreadable"] = [p for p, _ in bad]
            shown = "; ".join(f"{p} ({e})" for p, e in bad[:_EXAMPLES])
            more = f"; ... (+{len(bad) - _EXAMPLES})" if len(bad) > _EXAMPLES else ""
            report.problems.append(
                f"{domain}: {len(bad)} image(s) cannot be decoded: {shown}{more}."
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

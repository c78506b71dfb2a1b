"""``vlda data check`` for a bring-your-own dataset (a ``data.custom`` spec, see
:mod:`vlda.data.custom`), with the same report as for a registered benchmark.

Problems: a spec that cannot be read, class folders or list labels that do not match the class
list (the class lists of the domains differ), class folders without images, list lines without
a label or with a label outside the class list (``file:line``), files a list names that do not
exist, images that cannot be decoded, prompt names that cannot be attached to classes for
certain. Notes: high-bit-depth images (scaled into 8 bits when read), classes a domain lacks
when ``allow_missing_classes`` is set. Counts: per domain and per class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vlda.data.check import CheckReport, examples, report_images
from vlda.data.custom import ParsedSpec, parse_custom_spec, resolve_prompt_names
from vlda.data.readers import match_class_folders, parse_image_list, walk_images

__all__ = ["check_custom"]


def check_custom(
    spec: Mapping, verify_images: bool = True, workers: int | None = None, name: str = "custom data"
) -> CheckReport:
    """Check every domain of ``spec``; everything found goes into the report (nothing raises)."""
    report = CheckReport(benchmark=name, root=Path(os.path.expanduser(str(spec.get("root", ".")))))
    try:
        parsed = parse_custom_spec(spec)
    except (ValueError, FileNotFoundError) as err:
        report.problems.append(str(err))
        return report
    report.root = parsed.root
    try:
        resolve_prompt_names(spec.get("prompt_names"), parsed.classnames, parsed.classnames_given)
    except ValueError as err:
        report.problems.append(str(err))
    for domain, src in parsed.sources.items():
        info: dict = {"counts": {}, "sources": {}, "missing": [], "unreadable": [], "empty": []}
        report.per_domain[domain] = info
        if "folder" in src:
            paths, labels = _check_folder(domain, src["folder"], parsed, report, info)
        else:
            paths, labels = _check_list(domain, src, parsed, report, info)
        counts = [0] * len(parsed.classnames)
        for label in labels:
            counts[label] += 1
        info["counts"]["all"] = {"found": len(paths), "expected": None}
        info["class_counts"] = dict(zip(parsed.classnames, counts, strict=True))
        if not paths:
            report.problems.append(f"{domain}: no images.")
        if verify_images and paths:
            report_images(domain, paths, report, info, workers, f"{name}/{domain}")
    report.notes = list(dict.fromkeys(report.notes))
    return report


def _lacking(domain: str, lacking: list[str], parsed: ParsedSpec, report: CheckReport) -> None:
    if not lacking:
        return
    text = f"{domain}: no images of class(es) {examples(lacking)} (compared with {parsed.reference})"
    if parsed.allow_missing:
        report.notes.append(text + "; allowed by allow_missing_classes.")
    else:
        report.problems.append(text + ".")


def _check_folder(
    domain: str, folder: Path, parsed: ParsedSpec, report: CheckReport, info: dict
) -> tuple[list[Path], list[int]]:
    info["sources"]["all"] = f"{folder} (a folder per class)"
    match = match_class_folders(folder, parsed.classnames)
    _lacking(domain, match.missing, parsed, report)
    if match.unknown or match.duplicates:
        report.problems.append(
            f"{domain}: folder(s) that name no class of {parsed.reference} (or repeat one): "
            f"{examples(match.unknown + match.duplicates)}."
        )
    paths: list[Path] = []
    labels: list[int] = []
    for sub, label in sorted(match.labels.items(), key=lambda kv: kv[1]):
        images = walk_images(folder / sub)
        if not images:
            info["empty"].append(folder / sub)
        paths += images
        labels += [label] * len(images)
    if info["empty"]:
        report.problems.append(
            f"{domain}: {len(info['empty'])} class folder(s) hold no image: {examples(info['empty'])}."
        )
    return paths, labels


def _check_list(
    domain: str, src: dict, parsed: ParsedSpec, report: CheckReport, info: dict
) -> tuple[list[Path], list[int]]:
    list_file, root = src["list"], Path(os.path.abspath(src["images"]))
    info["sources"]["all"] = f"{list_file} (image list)"
    n, offset = len(parsed.classnames), int(src.get("label_offset", 0))
    bad_lines = []
    paths: list[Path] = []
    labels: list[int] = []
    for e in parse_image_list(list_file):
        label = None if e.label is None else e.label + offset
        if label is None or not 0 <= label < n:
            why = "no integer label" if label is None else f"label {label} outside 0..{n - 1}"
            bad_lines.append(f"{list_file}:{e.line} ({why})")
            continue
        paths.append(root / e.rel)
        labels.append(label)
    if bad_lines:
        report.problems.append(f"{domain}: {len(bad_lines)} bad line(s): {examples(bad_lines)}.")
    missing = [p for p in paths if not p.exists()]
    if missing:
        info["missing"] = missing
        report.problems.append(
            f"{domain}: {len(missing)} listed file(s) do not exist: {examples(missing)}."
        )
        gone = set(missing)
        kept = [(p, y) for p, y in zip(paths, labels, strict=True) if p not in gone]
        paths, labels = [p for p, _ in kept], [y for _, y in kept]
    present = set(labels)
    _lacking(domain, [c for i, c in enumerate(parsed.classnames) if i not in present], parsed, report)
    return paths, labels

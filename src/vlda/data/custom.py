"""Bring your own data, without code: domains described by a small mapping (from YAML).

Example::

    root: /data/mine
    domains:
      studio: studio                      # a folder per class: studio/<class>/*.jpg
      phone: {list: lists/phone.txt, images: phone}   # "relative/path label" lines
    classnames: [mug, pen, stapler]       # optional for folder domains (then: sorted folders)
    prompt_names: {mug: coffee mug}       # optional: class (folder) name -> name in prompts
    domain_prompt_names: {studio: studio photo}       # optional

All domains must have the same classes; when they do not, the error lists, per domain, the
classes it lacks and the folders that name no class. A list domain's labels index the class
list, so list-only specs must give ``classnames``; a label outside it is an error naming the
file and line. A class folder without images is kept (the class count stays that of the class
list) with a warning naming it.

Class names cannot be misattached to prompt names. ``prompt_names`` is best a mapping
``class (folder) name -> prompt name`` (classes it leaves out use their own name, ``_`` ->
space; a key that names no class is an error). A *list* is taken in label order, and refused
when that order is not certain: when a listed name is another class's name (it would label
that class's images with the wrong name), or when the order comes only from sorting the folder
names (no ``classnames``) and the list is not those names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlda.data.benchmarks import default_prompt_name
from vlda.data.layouts import norm_name
from vlda.data.readers import (
    ClassMatcher,
    DomainData,
    FolderMatch,
    list_class_dirs,
    match_class_folders,
    read_class_folders,
    read_image_list,
)

logger = logging.getLogger("vlda.data")

_TOP_KEYS = {
    "root",
    "domains",
    "classnames",
    "prompt_names",
    "domain_prompt_names",
    "allow_missing_classes",
}
_DOMAIN_KEYS = {"folder", "list", "images", "label_offset", "prompt_name"}


@dataclass
class ParsedSpec:
    """A data spec with its domains located and its class list decided (nothing read yet).

    Attributes: the data root; per domain, its parsed entry (``folder``, or ``list`` and
    ``images``; ``label_offset``, ``prompt_name``); the class list in label order; what it came
    from (for messages); whether the spec gave it (else: the first folder domain's sorted
    folders); ``allow_missing_classes``.
    """

    root: Path
    sources: dict[str, dict]
    classnames: tuple[str, ...]
    reference: str
    classnames_given: bool
    allow_missing: bool


def parse_custom_spec(spec: Mapping) -> ParsedSpec:
    """Check the spec's keys, locate every domain's folder or list file and decide the class
    list; a spec that cannot be read this far raises ``ValueError`` / ``FileNotFoundError``."""
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise ValueError(
            f"Unknown key(s) {sorted(unknown)} in data spec; known: {sorted(_TOP_KEYS)}"
        )
    domains = spec.get("domains")
    if not isinstance(domains, Mapping) or not domains:
        raise ValueError(
            "The data spec needs `domains`: a mapping of domain name -> folder or list."
        )
    root = Path(os.path.expanduser(str(spec.get("root", "."))))
    if not root.is_dir():
        raise FileNotFoundError(f"Data root {root} does not exist.")
    sources = {str(name): _parse_domain(str(name), value, root) for name, value in domains.items()}
    given = spec.get("classnames")
    if given is not None:
        classnames = tuple(str(c) for c in given)
        if len(set(map(norm_name, classnames))) != len(classnames):
            raise ValueError(f"`classnames` has duplicates: {list(classnames)}")
        reference = "the given classnames"
    else:
        folder_domains = [n for n, s in sources.items() if "folder" in s]
        if not folder_domains:
            raise ValueError(
                "List-file domains label images by number, so the spec must give `classnames` "
                "(label i = classnames[i])."
            )
        first = folder_domains[0]
        classnames = tuple(list_class_dirs(sources[first]["folder"]))
        if not classnames:
            raise ValueError(f"Domain {first!r}: {sources[first]['folder']} has no class folders.")
        reference = f"domain {first!r}"
    allow_missing = bool(spec.get("allow_missing_classes", False))
    return ParsedSpec(root, sources, classnames, reference, given is not None, allow_missing)


def load_custom_domains(spec: Mapping) -> dict[str, DomainData]:
    """Read the domains described by ``spec`` (see the module docstring), in spec order.

    Relative paths are taken from ``spec["root"]`` (default: the current folder). Class lists
    are checked to agree across domains; ``allow_missing_classes: true`` accepts a domain that
    lacks some classes (e.g. a partial target), but never a folder that names no class.
    """
    parsed = parse_custom_spec(spec)
    sources, classnames = parsed.sources, parsed.classnames
    reference, allow_missing, given = parsed.reference, parsed.allow_missing, parsed.classnames_given
    _check_classes(sources, classnames, reference, allow_missing)

    prompt_names = resolve_prompt_names(spec.get("prompt_names"), classnames, given)
    domain_prompts = dict(spec.get("domain_prompt_names") or {})

    out: dict[str, DomainData] = {}
    for name, src in sources.items():
        if "folder" in src:
            match = match_class_folders(src["folder"], classnames)
            present = [c for c in classnames if c not in match.missing]
            samples, _ = read_class_folders(src["folder"], present)
            # read_class_folders labels by position in `present`: map back to the full list.
            index = [classnames.index(c) for c in present]
            samples = [(p, index[label]) for p, label in samples]
            _warn_empty_folders(name, src["folder"], match, samples, len(classnames))
        else:
            samples = src["samples"]
        if not samples:
            raise ValueError(f"Domain {name!r} ({src.get('folder') or src['list']}) has no images.")
        prompt = src.get("prompt_name") or domain_prompts.get(name) or default_prompt_name(name)
        out[name] = DomainData(name, samples, classnames, prompt_names, prompt)
    return out


def _parse_domain(name: str, value: object, root: Path) -> dict:
    if isinstance(value, str | os.PathLike):
        value = {"folder": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"Domain {name!r}: expected a folder path or a mapping, got {value!r}.")
    unknown = set(value) - _DOMAIN_KEYS
    if unknown:
        raise ValueError(
            f"Domain {name!r}: unknown key(s) {sorted(unknown)}; known: {sorted(_DOMAIN_KEYS)}."
        )
    if ("folder" in value) == ("list" in value):
        raise ValueError(f"Domain {name!r}: give exactly one of `folder` or `list`.")
    src: dict = {k: value[k] for k in ("label_offset", "prompt_name") if k in value}
    if "folder" in value:
        folder = root / os.path.expanduser(str(value["folder"]))
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Domain {name!r}: folder {folder} does not exist "
                "(expected one sub-folder per class)."
            )
        src["folder"] = folder
    else:
        lst = root / os.path.expanduser(str(value["list"]))
        if not lst.is_file():
            raise FileNotFoundError(f"Domain {name!r}: list file {lst} does not exist.")
        src["list"] = lst
        src["images"] = root / os.path.expanduser(str(value.get("images", ".")))
    return src


def _check_classes(
    sources: Mapping[str, dict], classnames: Sequence[str], reference: str, allow_missing: bool
) -> None:
    """Raise one error listing, per domain, missing classes and folders that name no class."""
    lines = []
    for name, src in sources.items():
        if "folder" in src:
            match = match_class_folders(src["folder"], classnames)
            missing = [] if allow_missing else match.missing
            extra = match.unknown + match.duplicates
        else:
            src["samples"] = read_image_list(
                src["list"], src["images"], src.get("label_offset", 0), num_classes=len(classnames)
            )
            labels = {label for _, label in src["samples"]}
            extra = []
            missing = (
                [] if allow_missing else [c for i, c in enumerate(classnames) if i not in labels]
            )
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"extra {extra}")
            lines.append(f"  {name}: " + ", ".join(parts))
    if lines:
        raise ValueError(
            f"The domains do not share one class list (compared with {reference}; "
            f"{len(classnames)} classes):\n"
            + "\n".join(lines)
            + "\nRename or remove folders, or set `allow_missing_classes: true` for partial "
            "domains."
        )


def resolve_prompt_names(
    given: object, classnames: Sequence[str], order_given: bool
) -> tuple[str, ...]:
    """The prompt name of each class, in label order, from ``prompt_names`` (see the module
    docstring); ``order_given``: the spec gave ``classnames`` (else the order is the sorted
    folder names)."""
    defaults = [default_prompt_name(c) for c in classnames]
    if given is None:
        return tuple(defaults)
    matcher = ClassMatcher(classnames)
    if isinstance(given, Mapping):
        return _prompt_names_from_mapping(given, classnames, matcher, defaults)
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise ValueError(
            "`prompt_names` must be a mapping class (folder) name -> prompt name, or a list in "
            f"label order; got {given!r}."
        )
    names = tuple(str(p) for p in given)
    if len(names) != len(classnames):
        raise ValueError(f"`prompt_names` has {len(names)} names for {len(classnames)} classes.")
    for i, name in enumerate(names):
        j = matcher.get(name)
        if j is not None and j != i:
            raise ValueError(
                f"`prompt_names` would misname a class: entry {i} is {name!r}, the name of class "
                f"{classnames[j]!r} (label {j}), but label {i} is class {classnames[i]!r}; give "
                "prompt_names as a mapping class (folder) name -> prompt name."
            )
    unsure = [i for i, name in enumerate(names) if matcher.get(name) != i]
    if unsure and not order_given:
        raise ValueError(
            "`prompt_names` is a list, but the label order comes only from sorting the folder "
            f"names ({list(classnames)}), so which name goes with which class is not certain; "
            "give prompt_names as a mapping class (folder) name -> prompt name, e.g. "
            f"{{{classnames[unsure[0]]}: {names[unsure[0]]}}}, or give `classnames` in the "
            "order of the list."
        )
    return names


def _prompt_names_from_mapping(
    given: Mapping, classnames: Sequence[str], matcher: ClassMatcher, defaults: list[str]
) -> tuple[str, ...]:
    names = list(defaults)
    seen: dict[int, str] = {}
    unknown = []
    for key, value in given.items():
        label = matcher.get(str(key))
        if label is None:
            unknown.append(str(key))
        elif label in seen:
            raise ValueError(
                f"`prompt_names` names class {classnames[label]!r} twice ({seen[label]!r} and "
                f"{str(key)!r})."
            )
        else:
            seen[label] = str(key)
            names[label] = str(value)
    if unknown:
        raise ValueError(
            f"`prompt_names` has key(s) {unknown} that name no class; the classes are "
            f"{list(classnames)}."
        )
    return tuple(names)


def _warn_empty_folders(
    domain: str, folder: Path, match: FolderMatch, samples: Sequence[tuple[Path, int]], n: int
) -> None:
    """Warn about the class folders of ``domain`` that hold no image."""
    counts = [0] * n
    for _, label in samples:
        counts[label] += 1
    for name, label in sorted(match.labels.items(), key=lambda kv: kv[1]):
        if counts[label] == 0:
            logger.warning(
                "warning: the class folder %s of domain %r holds no image; the class stays in the "
                "class list (%d classes) but this domain has no image of it",
                folder / name, domain, n,
            )

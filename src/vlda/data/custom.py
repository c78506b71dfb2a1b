"""Bring your own data, without code: domains described by a small mapping (from YAML).

Example::

    root: /data/mine
    domains:
      studio: studio                      # a folder per class: studio/<class>/*.jpg
      phone: {list: lists/phone.txt, images: phone}   # "relative/path label" lines
    classnames: [mug, pen, stapler]       # optional for folder domains (then: sorted folders)
    prompt_names: [coffee mug, pen, stapler]          # optional ("_" -> " " by default)
    domain_prompt_names: {studio: studio photo}       # optional

All domains must have the same classes; when they do not, the error lists, per domain, the
classes it lacks and the folders that name no class. A list domain's labels index the class
list, so list-only specs must give ``classnames``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vlda.data.benchmarks import default_prompt_name
from vlda.data.layouts import norm_name
from vlda.data.readers import (
    DomainData,
    list_class_dirs,
    match_class_folders,
    read_class_folders,
    read_image_list,
)

_TOP_KEYS = {
    "root",
    "domains",
    "classnames",
    "prompt_names",
    "domain_prompt_names",
    "allow_missing_classes",
}
_DOMAIN_KEYS = {"folder", "list", "images", "label_offset", "prompt_name"}


def load_custom_domains(spec: Mapping) -> dict[str, DomainData]:
    """Read the domains described by ``spec`` (see the module docstring), in spec order.

    Relative paths are taken from ``spec["root"]`` (default: the current folder). Class lists
    are checked to agree across domains; ``allow_missing_classes: true`` accepts a domain that
    lacks some classes (e.g. a partial target), but never a folder that names no class.
    """
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
    allow_missing = bool(spec.get("allow_missing_classes", False))
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

    _check_classes(sources, classnames, reference, allow_missing)

    prompt_names = spec.get("prompt_names")
    if prompt_names is None:
        prompt_names = tuple(default_prompt_name(c) for c in classnames)
    else:
        prompt_names = tuple(str(p) for p in prompt_names)
        if len(prompt_names) != len(classnames):
            raise ValueError(
                f"`prompt_names` has {len(prompt_names)} names for {len(classnames)} classes."
            )
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
            src["samples"] = read_image_list(src["list"], src["images"], src.get("label_offset", 0))
            labels = {label for _, label in src["samples"]}
            bad = sorted(x for x in labels if x >= len(classnames))
            extra = [f"label {x}" for x in bad]
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

"""How a benchmark's images lie on disk, and how to find them under a user's root folder.

Two layouts exist (see ``DESIGN.md``): a folder per class (:class:`FolderLayout`) and image
lists with one ``relative/path label`` line per image (:class:`ListLayout`). A benchmark
declares the layouts its common distributions use (official archive, TLlib, Dassl, DomainBed,
...) in the order they are tried. Folder and file names are matched exactly first and then
ignoring case, spaces, underscores and hyphens, so ``Real World``, ``Real_World`` and
``real_world`` are the same folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def norm_name(name: str) -> str:
    """Key for loose name matching: case-folded, without spaces, underscores and hyphens."""
    return name.casefold().replace(" ", "").replace("_", "").replace("-", "")


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with a common image extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_child(parent: Path, name: str) -> Path | None:
    """``parent/name`` if it exists, else the one entry of ``parent`` whose name matches loosely."""
    exact = parent / name
    if exact.exists():
        return exact
    if not parent.is_dir():
        return None
    key = norm_name(name)
    matches = sorted(e for e in os.listdir(parent) if not e.startswith(".") and norm_name(e) == key)
    return parent / matches[0] if matches else None


def resolve_relpath(base: Path, rel: str) -> Path | None:
    """Follow ``rel`` (``/``-separated) from ``base`` component by component, matching loosely."""
    current = base
    for part in (p for p in rel.split("/") if p):
        found = find_child(current, part)
        if found is None:
            return None
        current = found
    return current


@dataclass(frozen=True)
class _Layout:
    """Fields shared by both layouts.

    ``splits`` are the splits this layout stores separately on disk; ``all_from`` names the
    splits whose union is the split ``"all"`` when ``"all"`` is not stored itself.
    ``split_names`` gives the on-disk spelling of a split where it differs (PACS ``crossval``).
    ``domains`` restricts the layout to some domains (``None``: every domain).
    """

    splits: tuple[str, ...] = ("all",)
    all_from: tuple[str, ...] = ()
    split_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    domains: tuple[str, ...] | None = None
    origin: str = ""  # where this layout comes from ("official", "TLlib", ...), for messages

    def provides(self, domain: str, split: str) -> bool:
        """Whether this layout can give ``split`` of ``domain``."""
        if self.domains is not None and domain not in self.domains:
            return False
        return split in self.splits or (split == "all" and bool(self.all_from))

    def parts(self, split: str) -> tuple[str, ...]:
        """The stored splits that make up ``split``."""
        return (split,) if split in self.splits else self.all_from

    def split_spellings(self, split: str) -> tuple[str, ...]:
        return tuple(self.split_names.get(split, ())) or (split,)


@dataclass(frozen=True)
class FolderLayout(_Layout):
    """A folder per class under ``path`` (relative to the dataset folder).

    ``path`` may use ``{domain}`` (one of the domain's folder names) and ``{split}``.
    """

    path: str = "{domain}"

    kind = "folders"

    def describe(self, domain_dir: str, split: str = "all") -> str:
        split = self.split_spellings(split)[0] if "{split}" in self.path else split
        return self.path.format(domain=domain_dir, split=split) + "/<class>/"


@dataclass(frozen=True)
class ListLayout(_Layout):
    """Image lists: a text file of ``relative/path label`` lines per domain (and split).

    ``path`` is the list file, ``images`` the folder the listed paths are relative to (both
    relative to the dataset folder, with ``{domain}`` / ``{split}``). If the listed files are
    not found there, the list's own folder and the dataset folder are tried. ``entry`` shows
    how a listed path looks (used by the tests' fake trees and in messages; ``{class}`` marks a
    class folder). ``labels`` says where a label comes from: ``"auto"`` (the class folder in the
    path when there is one, else the number), ``"path"`` (the class folder, required: lists with
    no numbers or numbers we do not trust) or ``"column"`` (the number only).
    ``label_offset`` is added to the numbers (``-1`` for 1-based lists); ``numbered`` is
    False for lists that hold paths only.
    """

    path: str = "image_list/{domain}.txt"
    images: str = ""
    entry: str = "{domain}/{class}/{file}"
    labels: str = "auto"
    label_offset: int = 0
    numbered: bool = True

    kind = "lists"

    def __post_init__(self) -> None:
        if self.labels not in ("auto", "path", "column"):
            raise ValueError(f"labels must be 'auto', 'path' or 'column', not {self.labels!r}")
        if not self.numbered and self.labels != "path":
            raise ValueError("a list without numbers must take its labels from the path")

    def describe(self, domain_dir: str, split: str = "all") -> str:
        split = self.split_spellings(split)[0]
        return self.path.format(domain=domain_dir, split=split)


Layout = FolderLayout | ListLayout

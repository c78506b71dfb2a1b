"""Benchmark registry: what each benchmark *is* (domains, classes in label order, prompt names,
metric, splits, expected image counts) and where its files lie on disk.

Facts come from ``reference/benchmarks.md``; the long class lists live in
:mod:`vlda.data.catalog`. A benchmark declares its facts once so that every part of vlda (the
readers, the prompt builder, the evaluator, ``vlda data check``) uses the same ones: labels and
prompt names always come from the same list.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from vlda.data import catalog
from vlda.data.layouts import FolderLayout, Layout, ListLayout, norm_name

METRICS = ("accuracy", "mean_class_accuracy")


def default_prompt_name(classname: str) -> str:
    """The usual prompt form of a folder-style class name: ``_`` becomes a space."""
    return classname.replace("_", " ")


@dataclass(frozen=True)
class Benchmark:
    """Facts about one benchmark, plus the on-disk layouts its readers accept.

    The first fields are the public contract. The rest describe the disk: ``layouts`` are tried
    in order; ``domain_dirs`` gives each domain's folder name(s) (the first is canonical and is
    also the ``{domain}`` token in list-file names); ``root_dirs`` are names of the dataset
    folder a user may point *above* (``--root /data`` finds ``/data/office_home``).
    """

    id: str
    name: str
    domains: tuple[str, ...]
    classnames: tuple[str, ...]
    prompt_names: tuple[str, ...]
    domain_prompt_names: dict[str, str]
    metric: str = "accuracy"
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expected_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    # --- layout on disk
    layouts: tuple[Layout, ...] = (FolderLayout(origin="folder per class"),)
    domain_dirs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    root_dirs: tuple[str, ...] = ()
    class_aliases: dict[str, str] = field(default_factory=dict)  # folder name -> class name
    label_remap: dict[str, dict[int, int]] = field(default_factory=dict)  # domain -> {old: new}
    known_broken: tuple[str, ...] = ()  # paths (ending) of listed files that cannot be read
    lists_cover_all_images: bool = True  # False: the lists pick a subset of the image folders
    # --- protocol
    domain_aliases: dict[str, str] = field(default_factory=dict)  # short name -> domain id
    train_split: str = "all"  # split of a domain used for training / adaptation
    test_split: str = "all"  # split a target domain is evaluated on
    also_report: tuple[str, ...] = ()  # metrics reported next to `metric` in papers
    notes: str = ""

    def __post_init__(self) -> None:
        splits = {d: tuple(self.splits.get(d, ("all",))) for d in self.domains}
        object.__setattr__(self, "splits", splits)
        dirs = {d: tuple(self.domain_dirs.get(d, (d,))) for d in self.domains}
        object.__setattr__(self, "domain_dirs", dirs)
        problems = []
        if len(self.classnames) != len(self.prompt_names):
            problems.append(
                f"{len(self.classnames)} classnames but {len(self.prompt_names)} prompt_names"
            )
        keys = [norm_name(c) for c in self.classnames]
        if len(set(keys)) != len(keys):
            dup = sorted(
                {c for c, k in zip(self.classnames, keys, strict=True) if keys.count(k) > 1}
            )
            problems.append(f"class names that differ only in case/spaces/underscores: {dup}")
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            problems.append(f"domains must be distinct and non-empty: {self.domains}")
        missing = [d for d in self.domains if d not in self.domain_prompt_names]
        if missing:
            problems.append(f"no domain_prompt_names for {missing}")
        if self.metric not in METRICS:
            problems.append(f"metric {self.metric!r} is not one of {METRICS}")
        unknown = sorted({d for d, _ in self.expected_counts} - set(self.domains))
        if unknown:
            problems.append(f"expected_counts name unknown domains {unknown}")
        for alias, target in self.class_aliases.items():
            if target not in self.classnames:
                problems.append(f"class alias {alias!r} -> {target!r}: no such class")
        if problems:
            raise ValueError(f"Invalid benchmark {self.id!r}: " + "; ".join(problems))

    def __hash__(self) -> int:  # the dict fields are unhashable; ids are unique in the registry
        return hash(self.id)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def resolve_domain(self, name: str) -> str:
        """The domain id for ``name``: an id, an alias, or a folder name, matched loosely.

        Raises ``ValueError`` naming the domains (and a close match) for an unknown name.
        """
        if name in self.domains:
            return name
        key = norm_name(name)
        for d in self.domains:
            if key == norm_name(d) or key in (norm_name(x) for x in self.domain_dirs[d]):
                return d
        for alias, d in self.domain_aliases.items():
            if key == norm_name(alias):
                return d
        known = list(self.domains) + sorted(self.domain_aliases)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{self.name} has no domain {name!r}; its domains are {', '.join(self.domains)}.{hint}"
        )


_REGISTRY: dict[str, Benchmark] = {}


def register_benchmark(b: Benchmark, overwrite: bool = False) -> None:
    """Add ``b`` to the registry. Registering an equal benchmark again is a no-op; a different
    one under a taken id is an error unless ``overwrite``."""
    old = _REGISTRY.get(b.id)
    if old is not None and old != b and not overwrite:
        raise ValueError(f"A different benchmark is already registered as {b.id!r}")
    _REGISTRY[b.id] = b


def list_benchmarks() -> list[str]:
    """The registered benchmark ids, sorted."""
    return sorted(_REGISTRY)


def get_benchmark(id: str) -> Benchmark:
    """The benchmark registered as ``id`` (also found as e.g. ``"office-home"`` or ``"Office31"``).

    Raises ``ValueError`` naming the known ids, and a close match if there is one.
    """
    if isinstance(id, Benchmark):
        return id
    if id in _REGISTRY:
        return _REGISTRY[id]
    key = norm_name(id)
    for bid, b in _REGISTRY.items():
        if key in (norm_name(bid), norm_name(b.name)):
            return b
    close = difflib.get_close_matches(id.lower(), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown benchmark {id!r}.{hint} Known benchmarks: {', '.join(list_benchmarks())}."
    )


def _counts(split: str, **per_domain: int) -> dict[tuple[str, str], int]:
    return {(d, split): n for d, n in per_domain.items()}


def _prompts(
    classnames: tuple[str, ...], fixes: Mapping[str, str] | None = None, lower: bool = False
) -> tuple[str, ...]:
    fixes = dict(fixes or {})
    names = (fixes.get(c, default_prompt_name(c)) for c in classnames)
    return tuple(n.lower() if lower else n for n in names)


# ---------------------------------------------------------------------------------------------
# Built-in benchmarks. Layouts are listed most specific first: image lists (exact definitions)
# before folder walks.

OFFICE31 = Benchmark(
    id="office31",
    name="Office-31",
    domains=("amazon", "dslr", "webcam"),
    classnames=catalog.OFFICE31_CLASSES,
    prompt_names=_prompts(catalog.OFFICE31_CLASSES),
    domain_prompt_names={"amazon": "amazon", "dslr": "dslr", "webcam": "webcam"},
    expected_counts=_counts("all", amazon=2817, dslr=498, webcam=795),
    layouts=(
        ListLayout(
            path="image_list/{domain}.txt", entry="{domain}/images/{class}/{file}", origin="TLlib"
        ),
        FolderLayout(path="{domain}/images", origin="official archive"),
        FolderLayout(path="{domain}", origin="Dassl"),
    ),
    root_dirs=("office31", "domain_adaptation_images"),
    domain_aliases={"a": "amazon", "d": "dslr", "w": "webcam"},
)

OFFICEHOME = Benchmark(
    id="officehome",
    name="Office-Home",
    domains=("art", "clipart", "product", "real_world"),
    classnames=catalog.OFFICEHOME_CLASSES,
    # Lower case, as DAPL / AD-CLIP / PGA-Dassl prompt them ("tv", "alarm clock").
    prompt_names=_prompts(catalog.OFFICEHOME_CLASSES, lower=True),
    domain_prompt_names={
        "art": "art",
        "clipart": "clipart",
        "product": "product",
        "real_world": "real world",
    },
    expected_counts=_counts("all", art=2427, clipart=4365, product=4439, real_world=4357),
    layouts=(
        ListLayout(path="image_list/{domain}.txt", origin="TLlib"),
        FolderLayout(path="{domain}", origin="official zip / Dassl / DomainBed"),
    ),
    # "Real World" also finds Real_World, real_world (names match loosely).
    domain_dirs={
        "art": ("Art",),
        "clipart": ("Clipart",),
        "product": ("Product",),
        "real_world": ("Real_World", "Real World"),
    },
    root_dirs=("office_home", "OfficeHomeDataset_10072016"),
    domain_aliases={"ar": "art", "cl": "clipart", "pr": "product", "rw": "real_world"},
)

VISDA2017 = Benchmark(
    id="visda2017",
    name="VisDA-2017",
    domains=("synthetic", "real"),
    classnames=catalog.VISDA2017_CLASSES,
    prompt_names=_prompts(catalog.VISDA2017_CLASSES),
    domain_prompt_names={"synthetic": "synthetic", "real": "real"},
    # The official metric is the mean of per-class accuracies; overall accuracy is also reported.
    metric="mean_class_accuracy",
    also_report=("accuracy",),
    expected_counts=_counts("all", synthetic=152397, real=55388),
    layouts=(
        ListLayout(
            path="{domain}/image_list.txt",
            images="{domain}",
            entry="{class}/{file}",
            origin="official (Dassl)",
        ),
        ListLayout(path="image_list/{domain}.txt", origin="TLlib"),
        FolderLayout(path="{domain}", origin="folder per class"),
    ),
    domain_dirs={"synthetic": ("train",), "real": ("validation",)},
    root_dirs=("visda17", "visda2017", "visda"),
    domain_aliases={"syn": "synthetic", "val": "real"},
    notes="Source = train (synthetic renders), target = validation (COCO); test (YT-BB) unused.",
)

_DOMAINNET_DIRS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
_DOMAINNET_ALIASES = {
    "clp": "clipart",
    "inf": "infograph",
    "pnt": "painting",
    "qdr": "quickdraw",
    "rel": "real",
    "skt": "sketch",
    "c": "clipart",
    "i": "infograph",
    "p": "painting",
    "q": "quickdraw",
    "r": "real",
    "s": "sketch",
}


def _split_lists(folder: str, origin: str, labels: str = "auto") -> ListLayout:
    return ListLayout(
        path=f"{folder}{{domain}}_{{split}}.txt",
        splits=("train", "test"),
        all_from=("train", "test"),
        labels=labels,
        origin=origin,
    )


DOMAINNET = Benchmark(
    id="domainnet",
    name="DomainNet",
    domains=_DOMAINNET_DIRS,
    classnames=catalog.DOMAINNET_CLASSES,
    # "_" -> " ", keeping case and hyphens ("The Eiffel Tower", "t-shirt"), as Dassl's lists do.
    prompt_names=_prompts(catalog.DOMAINNET_CLASSES),
    domain_prompt_names={d: d for d in _DOMAINNET_DIRS},
    splits={d: ("all", "train", "test") for d in _DOMAINNET_DIRS},
    expected_counts={
        **_counts(
            "all",
            clipart=48129,
            infograph=51605,
            painting=72266,
            quickdraw=172500,
            real=172947,
            sketch=69128,
        ),
        **_counts(
            "train",
            clipart=33525,
            infograph=36023,
            painting=50416,
            quickdraw=120750,
            real=120906,
            sketch=48212,
        ),
        **_counts(
            "test",
            clipart=14604,
            infograph=15582,
            painting=21850,
            quickdraw=51750,
            real=52041,
            sketch=20916,
        ),
    },
    layouts=(
        _split_lists("", "official split files"),
        _split_lists("splits/", "Dassl"),
        _split_lists("image_list/", "TLlib"),
        # Without split files only "all" can be read, from the folders: that is whatever images
        # are on disk (PGA's protocol uses all *uncleaned* images), not the official split.
        FolderLayout(path="{domain}", origin="folder per class (no split files)"),
    ),
    root_dirs=("domainnet", "domain_net"),
    domain_aliases=_DOMAINNET_ALIASES,
    train_split="train",
    test_split="test",
    notes="Cleaned images with the official split files; class 327 (t-shirt) is absent from "
    "painting_train.txt.",
)

_MINI_DOMAINS = ("clipart", "painting", "real", "sketch")
MINIDOMAINNET = Benchmark(
    id="minidomainnet",
    name="mini-DomainNet",
    domains=_MINI_DOMAINS,
    classnames=catalog.MINIDOMAINNET_CLASSES,
    prompt_names=_prompts(catalog.MINIDOMAINNET_CLASSES),
    domain_prompt_names={d: d for d in _MINI_DOMAINS},
    splits={d: ("all", "train", "test") for d in _MINI_DOMAINS},
    # Labels come from the class folder of each listed path (see catalog.MINIDOMAINNET_CLASSES).
    # Only splits_mini/: the root-level <domain>_train.txt files are full DomainNet's.
    layouts=(_split_lists("splits_mini/", "Dassl splits_mini", labels="path"),),
    root_dirs=("domainnet", "domain_net"),
    domain_aliases={k: v for k, v in _DOMAINNET_ALIASES.items() if v in _MINI_DOMAINS},
    lists_cover_all_images=False,
    train_split="train",
    test_split="test",
    notes="126-class subset of DomainNet (Dassl splits_mini). Expected counts are not in our "
    "notes; the class order is pinned from one public loader and labels follow class names.",
)

_CLEF_NAMES = {"c": "Caltech", "i": "ImageNet", "p": "PASCAL"}
IMAGECLEF = Benchmark(
    id="imageclef",
    name="ImageCLEF-DA",
    domains=("c", "i", "p"),
    classnames=catalog.IMAGECLEF_CLASSES,
    prompt_names=_prompts(catalog.IMAGECLEF_CLASSES),
    domain_prompt_names=_CLEF_NAMES,
    expected_counts=_counts("all", c=600, i=600, p=600),
    layouts=tuple(
        ListLayout(path=p, entry="{domain}/{file}", labels="column", origin="list files")
        for p in (
            "list/{domain}List.txt",
            "{domain}List.txt",
            "list/{domain}.txt",
            "{domain}.txt",
            "image_list/{domain}.txt",
        )
    )
    + (FolderLayout(path="{domain}", origin="folder per class (PGA reformat.py)"),),
    root_dirs=("image_CLEF", "imageclef", "image-clef", "ImageCLEF-DA"),
    class_aliases=dict(catalog.IMAGECLEF_FOLDER_ALIASES),
    domain_aliases={"caltech": "c", "imagenet": "i", "pascal": "p"},
    notes="PGA's class folders convert to p = 591 images (basename collisions).",
)

_PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS = Benchmark(
    id="pacs",
    name="PACS",
    domains=_PACS_DOMAINS,
    classnames=catalog.PACS_CLASSES,
    prompt_names=_prompts(catalog.PACS_CLASSES),
    domain_prompt_names={
        "art_painting": "art painting",
        "cartoon": "cartoon",
        "photo": "photo",
        "sketch": "sketch",
    },
    splits={d: ("all", "train", "val") for d in _PACS_DOMAINS},
    expected_counts=_counts("all", photo=1670, art_painting=2048, cartoon=2344, sketch=3929),
    layouts=(
        ListLayout(
            path="splits/{domain}_{split}_kfold.txt",
            images="images",
            splits=("train", "val"),
            all_from=("train", "val"),
            split_names={"val": ("crossval",)},
            label_offset=-1,
            origin="official splits (Dassl)",
        ),
        ListLayout(
            path="image_list/{domain}_{split}.txt",
            splits=("all", "train", "val"),
            label_offset=-1,
            origin="TLlib",
        ),
        FolderLayout(path="images/{domain}", origin="Dassl images/ (no split files)"),
        FolderLayout(path="{domain}", origin="DomainBed"),
    ),
    root_dirs=("pacs", "PACS"),
    # Listed in the official splits but unreadable; Dassl skips it and so do we.
    known_broken=("sketch/dog/n02103406_4068-1.png",),
    domain_aliases={
        "a": "art_painting",
        "art": "art_painting",
        "c": "cartoon",
        "p": "photo",
        "s": "sketch",
    },
    notes="Domain-generalisation benchmark; split-file labels are 1-based.",
)

_VLCS_DOMAINS = ("caltech101", "labelme", "sun09", "voc2007")
VLCS = Benchmark(
    id="vlcs",
    name="VLCS",
    domains=_VLCS_DOMAINS,
    classnames=catalog.VLCS_CLASSES,
    prompt_names=_prompts(catalog.VLCS_CLASSES),
    domain_prompt_names={
        "caltech101": "Caltech-101",
        "labelme": "LabelMe",
        "sun09": "SUN",
        "voc2007": "PASCAL VOC",
    },
    splits={d: ("all", "train", "val", "test") for d in _VLCS_DOMAINS},
    expected_counts=_counts("all", caltech101=1415, labelme=2656, sun09=3282, voc2007=3376),
    layouts=(
        FolderLayout(
            path="{domain}/{split}",
            splits=("train", "val", "test"),
            all_from=("train", "val", "test"),
            split_names={"val": ("crossval",)},
            origin="Dassl",
        ),
        FolderLayout(path="{domain}", origin="DomainBed (no splits)"),
    ),
    domain_dirs={
        "caltech101": ("Caltech101", "CALTECH"),
        "labelme": ("LabelMe",),
        "sun09": ("SUN09", "SUN"),
        "voc2007": ("VOC2007", "PASCAL"),
    },
    root_dirs=("VLCS",),
    domain_aliases={"c": "caltech101", "l": "labelme", "s": "sun09", "v": "voc2007"},
    notes="Domain-generalisation benchmark.",
)


def _s2rda(id: str, name: str, classes: tuple[str, ...], counts: dict, folder: str) -> Benchmark:
    return Benchmark(
        id=id,
        name=name,
        domains=("synthetic", "real"),
        classnames=classes,
        prompt_names=_prompts(classes, catalog.S2RDA_PROMPT_FIXES),
        domain_prompt_names={"synthetic": "synthetic", "real": "real"},
        # Papers report both; PGA's headline S2RDA number is plain accuracy.
        also_report=("mean_class_accuracy",),
        splits={"synthetic": ("all",), "real": ("all", "val", "test")},
        expected_counts=counts,
        layouts=(
            # The official split files hold paths only ("real/airplane/x.jpg"), no numbers.
            ListLayout(
                path="splits/{domain}_{split}.txt",
                splits=("val", "test"),
                all_from=("val", "test"),
                labels="path",
                numbered=False,
                domains=("real",),
                origin="official splits",
            ),
            FolderLayout(path="{domain}", origin="folder per class"),
        ),
        root_dirs=(folder,),
        domain_aliases={"syn": "synthetic"},
        notes="The ObjectNet part of the real images may not be used to tune models (license).",
    )


S2RDA49 = _s2rda(
    "s2rda49",
    "S2RDA-49",
    catalog.S2RDA49_CLASSES,
    {
        ("synthetic", "all"): 588000,
        ("real", "all"): 60535,
        ("real", "val"): 30262,
        ("real", "test"): 30273,
    },
    "S2RDA-49",
)
S2RDA_MS39 = _s2rda(
    "s2rda_ms39",
    "S2RDA-MS-39",
    catalog.S2RDA_MS39_CLASSES,
    {
        ("synthetic", "all"): 468000,
        ("real", "all"): 41735,
        ("real", "val"): 20859,
        ("real", "test"): 20876,
    },
    "S2RDA-MS-39",
)

_DIGIT_DOMAINS = ("mnist", "usps", "svhn", "mnistm")
DIGITS = Benchmark(
    id="digits",
    name="Digits",
    domains=_DIGIT_DOMAINS,
    classnames=catalog.DIGIT_CLASSES,
    # Spelled-out words: vlda's generic templates ("a photo of a {}.") read better with a noun
    # than with a bare numeral, and the demo benchmark uses the same names. CLIP's own MNIST
    # setup uses the numerals with a number-specific template ('a photo of the number: "{}".');
    # register a variant with catalog.DIGIT_CLASSES as prompt names to reproduce that.
    prompt_names=catalog.DIGIT_WORDS,
    domain_prompt_names={"mnist": "MNIST", "usps": "USPS", "svhn": "SVHN", "mnistm": "MNIST-M"},
    splits={d: ("all", "train", "test") for d in _DIGIT_DOMAINS},
    expected_counts={
        **_counts("train", mnist=60000, usps=7291, svhn=73257, mnistm=59001),
        **_counts("test", mnist=10000, usps=2007, svhn=26032, mnistm=9001),
        **_counts("all", mnist=70000, usps=9298, svhn=99289, mnistm=68002),
    },
    layouts=(
        ListLayout(
            path="image_list/{domain}_{split}.txt",
            splits=("train", "test"),
            all_from=("train", "test"),
            entry="{domain}_{split}_image/{file}",
            origin="TLlib",
        ),
        FolderLayout(
            path="{domain}/{split}",
            splits=("train", "test"),
            all_from=("train", "test"),
            origin="folder per class",
        ),
    ),
    domain_dirs={"mnistm": ("mnistm", "mnist_m")},
    root_dirs=("digits",),
    class_aliases={"10": "0"},  # SVHN folders named after its labels
    label_remap={"svhn": {10: 0}},  # SVHN stores digit 0 as label 10
    domain_aliases={"m": "mnist", "u": "usps", "s": "svhn", "mm": "mnistm", "mt": "mnist"},
    train_split="train",
    test_split="test",
    notes="Train on source train + target train (unlabelled); test on the target test split.",
)

DEMO_DIGITS = Benchmark(
    id="demo_digits",
    name="Demo digits (inverted -> faded)",
    domains=("inverted", "faded"),
    classnames=catalog.DIGIT_CLASSES,
    prompt_names=catalog.DIGIT_WORDS,
    # Each domain's word names what separates it, in the stand-in CLIP's caption words
    # (vlda.demo.pretrain), as CLIP knows its domains' words: the source is inverted printed and
    # handwritten digits; the target, 8x8 scans (17 grey levels, "scanned") of faded handwriting.
    domain_prompt_names={"inverted": "inverted", "faded": "faded scanned handwritten"},
    layouts=(FolderLayout(path="{domain}", origin="folder per class"),),
    notes="Offline demo: ROOT/<domain>/<class>/*.png, generated by `vlda demo`.",
)

for _b in (
    OFFICE31,
    OFFICEHOME,
    VISDA2017,
    DOMAINNET,
    MINIDOMAINNET,
    IMAGECLEF,
    PACS,
    VLCS,
    S2RDA49,
    S2RDA_MS39,
    DIGITS,
    DEMO_DIGITS,
):
    register_benchmark(_b)

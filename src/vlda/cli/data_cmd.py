"""``vlda data``: commands about datasets on disk.

``vlda data check BENCHMARK --root DIR [--domains a b] [--no-verify-images]`` checks a
registered benchmark; ``vlda data check --config RUN.yaml [key=value ...]`` the data a run
config reads (its benchmark's domains, or its ``data.custom`` dataset);
``vlda data check --custom SPEC.yaml`` a bring-your-own dataset spec (the ``data.custom`` mapping, alone in the file or under
``data: custom:``). Each prints what was found (layout, counts per domain and class, missing /
extra / unreadable / high-bit-depth files, class folders that do not match or hold no image)
and exits 0 when all is well, 1 when there are problems, and 2 for a command that cannot be
run (an unknown benchmark or domain, a spec or config that cannot be read).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlda.data.check import CheckReport


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (with its ``check`` subcommand) to the main CLI's subparsers."""
    data = subparsers.add_parser(
        "data", help="inspect datasets on disk", description="Inspect datasets on disk."
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="{check}")
    data_sub.required = True
    check = data_sub.add_parser(
        "check",
        help="check that a dataset (a benchmark, or your own) is complete and readable",
        description="Check a dataset's files: layout, image counts per domain and class (against "
        "the expected ones for a benchmark), files missing from or absent in the image lists, "
        "images that cannot be decoded or have a high bit depth, class folders that do not "
        "match the class list or hold no image. Give a benchmark with --root, a run config "
        "(--config), or a bring-your-own spec (--custom). Exit code 0 when all is well, 1 "
        "when there are problems.",
    )
    check.add_argument(
        "targets", nargs="*", metavar="BENCHMARK | key=value",
        help="a benchmark id (see `vlda list`) with --root; or, with --config, config overrides "
        "(e.g. data.custom.root=/data/mine)",
    )
    check.add_argument("--root", type=Path, help="folder holding the benchmark (or its parent)")
    check.add_argument("--config", "-c", type=Path, help="a run config: check the data it reads")
    check.add_argument("--custom", type=Path, help="a YAML file holding a data.custom spec")
    check.add_argument("--domains", nargs="+", metavar="DOMAIN", help="check only these domains")
    check.add_argument(
        "--no-verify-images",
        dest="verify_images",
        action="store_false",
        help="do not decode every image (much faster; finds missing but not corrupt files)",
    )
    check.set_defaults(func=run_check)


def _custom_spec(path: Path) -> Mapping[str, Any]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"spec file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("data"), Mapping):
        raw = raw["data"].get("custom", raw["data"])
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} holds no data.custom mapping (root, domains, ...)")
    return raw


def _report(args: argparse.Namespace) -> CheckReport:
    from vlda.data.check import check_benchmark
    from vlda.data.check_custom import check_custom

    overrides = [t for t in args.targets if "=" in t]
    names = [t for t in args.targets if "=" not in t]
    benchmark = names[0] if len(names) == 1 else None
    given = [x for x in (benchmark, args.config, args.custom) if x is not None]
    if len(given) != 1 or len(names) > 1 or (overrides and args.config is None):
        raise ValueError(
            "give one of: a benchmark id with --root, --config RUN.yaml [key=value ...], or "
            "--custom SPEC.yaml"
        )
    if args.custom is not None:
        return check_custom(_custom_spec(args.custom), args.verify_images, name=str(args.custom))
    if args.config is not None:
        from vlda.config import load_config

        data = load_config(args.config, overrides).data
        if data.custom is not None:
            return check_custom(data.custom, args.verify_images, name=str(args.config))
        if not data.root:
            raise ValueError(f"{args.config} gives no data.root: where is {data.benchmark} on disk?")
        domains = args.domains or [*data.source, data.target]
        return check_benchmark(str(data.benchmark), data.root, domains, args.verify_images)
    if args.root is None:
        raise ValueError(f"give --root: the folder that holds {benchmark}")
    return check_benchmark(str(benchmark), args.root, args.domains, args.verify_images)


def run_check(args: argparse.Namespace) -> int:
    """Run ``vlda data check`` for parsed ``args``; print the report; return the exit code."""
    try:
        report = _report(args)
    except (ValueError, FileNotFoundError) as err:  # unknown benchmark or domain, bad spec
        print(f"vlda data check: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1

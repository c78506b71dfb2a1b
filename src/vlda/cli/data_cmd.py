"""``vlda data``: commands about datasets on disk.

``vlda data check BENCHMARK --root DIR [--domains a b] [--no-verify-images]`` prints what was
found (layout, counts against the expected ones, missing / extra / unreadable files, class
folders that do not match) and exits 0 when the benchmark is complete, 1 when it is not, and
2 for an unknown benchmark or domain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlda.data.benchmarks import list_benchmarks
from vlda.data.check import check_benchmark


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (with its ``check`` subcommand) to the main CLI's subparsers."""
    data = subparsers.add_parser(
        "data", help="inspect datasets on disk", description="Inspect datasets on disk."
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="{check}")
    data_sub.required = True
    check = data_sub.add_parser(
        "check",
        help="check that a benchmark is complete and readable",
        description="Check a benchmark's files under --root: layout, image counts against the "
        "expected ones, files missing from or absent in the image lists, images that cannot "
        "be decoded, and class folders that do not match the class list. Exit code 0 when "
        "all is well, 1 when there are problems.",
    )
    check.add_argument("benchmark", help=f"benchmark id: {', '.join(list_benchmarks())}")
    check.add_argument(
        "--root", required=True, type=Path, help="folder holding the benchmark (or its parent)"
    )
    check.add_argument("--domains", nargs="+", metavar="DOMAIN", help="check only these domains")
    check.add_argument(
        "--no-verify-images",
        dest="verify_images",
        action="store_false",
        help="do not decode every image (much faster; finds missing but not corrupt files)",
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Run ``vlda data check`` for parsed ``args``; print the report; return the exit code."""
    try:
        report = check_benchmark(
            args.benchmark, args.root, domains=args.domains, verify_images=args.verify_images
        )
    except ValueError as err:  # unknown benchmark or domain
        print(f"vlda data check: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1

"""``vlda`` command line: train | eval | predict | select | report | cache | sweep | list | data check | demo."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from vlda import __version__


def _add_run_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("--config", "-c", required=config_required, help="YAML run config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=500")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars; log lines only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlda", description="Unsupervised domain adaptation with vision-language models."
    )
    parser.add_argument("--version", action="version", version=f"vlda {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from vlda.cli import commands

    p = sub.add_parser("train", help="train (or evaluate zero-shot) from a config")
    _add_run_args(p)
    p.add_argument("--out", help="run directory (default: the config's `output`)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although the config changed (the changes are recorded in the run)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel in N processes on this machine, through torchrun (docs/distributed.md)")
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("eval", help="evaluate a finished run's weights on its (or another) target")
    p.add_argument("--run", required=True, help="run directory written by `vlda train`")
    p.add_argument("--weights", default="selected", help="selected | last | PATH (default: selected)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.target=product")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=commands.cmd_eval)

    p = sub.add_parser("predict", help="predict a folder of images to a CSV")
    p.add_argument("--run", required=True, help="run directory written by `vlda train`")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--weights", default="selected", help="selected | last | PATH (default: selected)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. method.inference=source_free (AD-CLIP's source-free test)")
    p.set_defaults(func=commands.cmd_predict)

    p = sub.add_parser(
        "select", help="choose a run's checkpoint with validators computed from its saved outputs",
        description="Score every evaluation a run saved (eval.save_outputs) with the named validators "
        "(no target labels) and report the step each chooses; writes RUN/selection.json.",
    )
    p.add_argument("run", help="run directory written by `vlda train` with eval.save_outputs")
    p.add_argument("--validator", "-v", action="append", required=True, metavar="NAME",
                   help="validator name (repeatable), e.g. snd, im, bnm, class_ami, dev, zeroshot_agreement")
    p.add_argument("--no-write", action="store_true", help="print only; do not write RUN/selection.json")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=commands.cmd_select)

    p = sub.add_parser(
        "report", help="paper-style tables (methods x tasks, mean ± std over seeds) from finished runs",
        description="Collect the runs at or under each directory into one table per way of choosing the "
        "checkpoint (last, each validator, oracle), as Markdown, CSV and LaTeX, and a validator-quality "
        "table (judged with target labels); --plots, --html: plots and a self-contained HTML page.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run directories, or folders holding runs")
    p.add_argument("--out", required=True, help="folder to write the tables to")
    p.add_argument("--plots", action="store_true", help="also each run's plots (PNG and SVG) under OUT/plots/")
    p.add_argument("--html", action="store_true", help="also the plots and one self-contained page, OUT/report.html")
    p.add_argument("--tsne-points", type=int, default=300, help="t-SNE subsample per domain (default: 300)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("cache", help="build the feature cache of a config's domains")
    _add_run_args(p)
    p.set_defaults(func=commands.cmd_cache)

    p = sub.add_parser("sweep", help="run a sweep file: tasks x hyper-parameters x seeds, each a run")
    p.add_argument("sweep", help="sweep YAML (see docs/sweeps.md)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="sweep settings, e.g. workers=4")
    p.add_argument("--dry-run", action="store_true", help="print the plan (every trial checked) and stop")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.cmd_sweep)

    p = sub.add_parser("list", help="list benchmarks, methods, gradient strategies, backbones")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_list)

    p = sub.add_parser("demo", help="offline demo: synthetic -> real digits with a small CLIP")
    p.add_argument("--out", default="runs/demo", help="where to write the runs and summary.json")
    p.add_argument("--cache-dir", help="where the demo data and model live (default: ~/.cache/vlda)")
    p.add_argument("--steps", type=int, default=None, help="training steps per method (default: config)")
    p.add_argument("--methods", nargs="*",
                   help="rows to run: method names, or all, clip, classic (default: see docs/demo.md)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per row (1..N); tables show mean ± std over them (default: 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs at once, each in its own process (default: the number of cores, at most 8)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each run (default 1; results are deterministic for a given value; the world is always built with 2)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=commands.cmd_demo)

    from vlda.cli import data_cmd

    data_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # Whether torchrun started this process, from the environment (torch is not imported for
    # `--help`, `list` or a config error).
    world = int(os.environ.get("WORLD_SIZE", "1"))
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        print(f"vlda {args.command}: error: --nproc must be at least 1, got {nproc}", file=sys.stderr)
        return 2
    if nproc > 1 and world <= 1:
        from vlda.cli.launch import launch

        return launch(nproc, argv)
    # vlda's own messages at INFO (rank 0 of a distributed run; the others at WARNING); other
    # libraries (open_clip logs to the root logger) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    logging.getLogger("vlda").setLevel(logging.INFO if main_rank else logging.WARNING)
    if world <= 1:
        return _run(args)
    from vlda import distributed as D

    D.init_from_env()
    try:
        return _run(args)
    finally:
        D.shutdown()


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    # One sentence, exit code 2, for every failure a user can cause: ConfigError and the damaged
    # weights / unreadable images / full disk errors are ValueErrors; missing weights
    # (WeightsNotFoundError) and missing data are FileNotFoundErrors.
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"vlda {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" ({err.filename} could not be written)" if err.filename else ""
        print(f"vlda {args.command}: error: no space left on the device{where}; free some space "
              "and run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

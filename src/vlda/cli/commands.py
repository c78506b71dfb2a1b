"""The work behind each ``vlda`` subcommand (parsing lives in :mod:`vlda.cli.main`)."""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlda.config import RunConfig

log = logging.getLogger("vlda")


def _checked(cfg: RunConfig) -> RunConfig:
    # The registries import torch and the models: only once the fixed sections are valid.
    from vlda.engine.options import check_options

    return check_options(cfg)


def _config(args: argparse.Namespace) -> RunConfig:
    from vlda.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "quiet", False):
        overrides.append("train.progress=false")
    return _checked(load_config(args.config, overrides))


def _line(label: str, r: dict, width: int = 9) -> str:
    sv = r.get("source_val_acc")
    return (
        f"{label:>{width}}: step {r['step']:>6}  target {r['target_metric']:.4f}"
        + (f"  source-val {sv:.4f}" if sv is not None else "")
        + (f"  score {r['score']:.4g}" if r.get("score") is not None else "")
        + (f"  ({r['validator']}: {r['chosen_by']})" if r.get("validator") else f"  ({r['chosen_by']})")
    )


def _print_results(summary: dict) -> None:
    """``last``, ``selected`` (primary validator), ``oracle``, then the other validators' choices."""
    res = summary.get("results", {})
    primary = res.get("selected", {}).get("validator")
    rows = [(name, res[name]) for name in ("last", "selected", "oracle") if res.get(name)]
    rows += [(name, r) for name, r in res.get("selected_by", {}).items() if name != primary]
    width = max((len(name) for name, _ in rows), default=9)
    for name, r in rows:
        print(_line(name, r, width))
    rst = summary.get("rst", {})
    which = next((n for n in ("selected", "last") if n in rst), None)
    if which is not None:
        r = rst[which]
        print(
            f"  rst ({which}.pt): {r['encoder_changed']} of {r['encoder_params']} encoder weights kept "
            f"({r['encoder_changed_pct']:.3f}%), {r['downstream_params']} downstream parameters; "
            f"{r['file_bytes']} bytes vs {r['dense_bytes']} dense"
        )


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from vlda.engine.experiment import run

    summary = run(
        cfg, resume=args.resume, out=Path(args.out) if args.out else None, overwrite=args.overwrite,
        resume_with_changes=args.resume_with_changes,
    )
    from vlda import distributed as D

    if D.is_main():  # one report for a data-parallel run
        _print_results(summary)
        print(f"wrote {Path(args.out or cfg.output) / 'summary.json'}")
    return 0


def _run_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a vlda run directory (no config.json)")
    from vlda.config import apply_override, build_config

    raw = json.loads(path.read_text())
    for o in overrides:
        apply_override(raw, o)
    return _checked(build_config(raw))


def _weights_path(run_dir: Path, which: str) -> Path:
    if which in ("selected", "last"):
        return run_dir / f"{which}.pt"
    return Path(which)


def _load_weights(method, run_dir: Path, which: str) -> None:
    if not method.trains:
        return
    from vlda.engine.artefact import load_weights

    load_weights(method, _weights_path(run_dir, which))


def cmd_eval(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    overrides = list(args.overrides) + (["train.progress=false"] if args.quiet else [])
    cfg = _run_config(run_dir, overrides)
    from vlda.engine.experiment import evaluate_run

    result = evaluate_run(cfg, _weights_path(run_dir, args.weights))
    print(json.dumps({"run": str(run_dir), "weights": args.weights, "target": cfg.data.target, **result}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from vlda.data.dataset import BadImageLog, ImageDataset, collate
    from vlda.data.transforms import eval_transform
    from vlda.engine.build import build_method, load_run_backbone, resolve_device
    from vlda.methods.base import Task

    run_dir = Path(args.run)
    cfg = _run_config(run_dir, list(args.overrides))
    task_path = run_dir / "task.json"
    if not task_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no task.json; was it written by `vlda train`?")
    task = Task.from_dict(json.loads(task_path.read_text()))
    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in exts)
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(exts))}) under {images_dir}")
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)  # as `vlda train` / `eval`: the same randomly initialised layers
    backbone = load_run_backbone(cfg, device)
    method = build_method(cfg, task, backbone).to(device)
    method.setup(device)
    _load_weights(method, run_dir, args.weights)
    method.eval()
    ds = ImageDataset([(p, -1) for p in paths], eval_transform(backbone.image_size, backbone.mean, backbone.std))
    chunks = [list(range(i, min(i + args.batch_size, len(paths)))) for i in range(0, len(paths), args.batch_size)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=chunks, collate_fn=collate)
    bad = BadImageLog()
    rows = []
    with torch.no_grad():
        for batch in loader:
            bad.update(batch["bad_paths"])
            if not len(batch["indices"]):
                continue
            logits = method.logits(method.image_features({"images": batch["images"].to(device)}))
            probs = logits.float().softmax(dim=-1).cpu()
            conf, pred = probs.max(dim=-1)
            for i, c, p in zip(batch["indices"].tolist(), conf.tolist(), pred.tolist(), strict=True):
                rows.append((str(paths[i]), task.classnames[p], p, round(c, 6)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", "label_index", "confidence"])
        w.writerows(rows)
        for p in bad.paths:
            w.writerow([p, "", "", ""])
    print(f"wrote {len(rows)} predictions to {out}" + (f" ({bad.count} unreadable images left blank)" if bad.count else ""))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from vlda.selection.after import SELECTION_FILE, select_run

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    result = select_run(run_dir, args.validator, write=not args.no_write)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_results(result)
    if not args.no_write:
        print(f"wrote {run_dir / SELECTION_FILE}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vlda.report.build import build_report

    if args.tsne_points < 2:
        raise ValueError(f"--tsne-points must be at least 2, got {args.tsne_points}")
    files = build_report(args.runs, Path(args.out), plots=args.plots, html=args.html,
                         tsne_points=args.tsne_points, progress=not args.quiet)
    print((Path(args.out) / "tables.md").read_text())
    if (Path(args.out) / "quality.md").is_file():
        print((Path(args.out) / "quality.md").read_text())
    print(f"wrote {len(files)} files to {args.out}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from vlda.engine.experiment import cache_features

    n = cache_features(cfg)
    print(f"feature cache ready ({n} domain splits)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Exit 0 when every trial finished, 1 when some failed (their logs are named), 2 on bad
    input (nothing runs)."""
    from vlda.config.sweep import load_sweep

    spec, folder = load_sweep(args.sweep, list(args.overrides))
    from vlda.sweep.runner import run_sweep

    record = run_sweep(spec, folder, dry_run=args.dry_run, progress=not args.quiet)
    failed = [t for t in record["trials"] if t["exit_code"] not in (None, 0)]
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from vlda.cli.catalog import METHODS, catalog

    cat = catalog()
    if args.json:
        print(json.dumps(cat))
        return 0
    for key in ("benchmarks", "gradients"):
        print(f"{key}:")
        print("".join(f"  {v}\n" for v in cat[key]), end="")
    print("methods:")
    print("".join(f"  {m:<12} {METHODS[m]}\n" for m in cat["methods"]), end="")
    print("backbones (any other open_clip / Hugging Face / timm name works too):")
    notes = cat["backbone_notes"]
    print("".join(f"  {b:<40} {notes[b]}\n" for b in cat["backbones"]), end="")
    print(f"offline without any download: {', '.join(cat['offline_backbones'])} "
          "(tiny:* are random models for tests), or any backbone from a local weights file")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vlda.demo.run import DEFAULT_SEEDS, run_demo

    run_demo(
        out=Path(args.out), cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        steps=args.steps, methods=args.methods, progress=not args.quiet,
        seeds=DEFAULT_SEEDS if args.seeds is None else args.seeds, workers=args.workers, threads=args.threads,
    )
    return 0

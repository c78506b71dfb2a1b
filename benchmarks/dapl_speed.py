"""DAPL training steps per second: feature cache on/off x prompts cut at EOT on/off.

One run, one model, four settings, each timed the same way:

* ``cache=True``: the batches hold ``features`` gathered (random rows, random augmented views)
  from a prebuilt :class:`vlda.data.feature_cache.FeatureSet` (fp16 ``[N, 1 + K, D]``), so the
  step never runs the image encoder;
* ``cache=False``: what vlda does without the cache, for one of two ``--images`` sources:
  ``disk`` (default) decodes and augments JPEG files (256 px, like the photos of Office-Home)
  with vlda's own dataset and training transform, then runs the frozen image encoder;
  ``tensors`` skips decoding and augmentation (pre-made random tensors), isolating the image
  encoder's share;
* ``cut_at_eot``: ``method.prompt_learner.cut_at_eot`` True (sequences cut after the EOT token)
  or False (padded to the 77-token context).

A step is ``losses = method.losses(src, tgt)``, their weighted sum, ``backward()``, an SGD step
and ``zero_grad``. After warm-up steps, ``--steps`` steps are timed with ``time.perf_counter``;
the settings are interleaved over ``--repeats`` rounds. The rate reported is the best round
(like ``timeit``: on a shared machine the fastest round is the least disturbed one), with its
ratio to the uncached, uncut baseline of the same run; the median round is recorded too.

    python benchmarks/dapl_speed.py                       # tiny ViT (32 px), 65 classes
    python benchmarks/dapl_speed.py --threads 2
    python benchmarks/dapl_speed.py --model vit-b-16      # random ViT-B/16, 224 px: heavy
    python benchmarks/dapl_speed.py --images tensors      # uncached without decoding

Writes ``benchmarks/results/dapl_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from bench_common import TimedSetting, make_bank, make_task

from vlda.data.dataset import ImageDataset, collate
from vlda.data.transforms import train_transform
from vlda.methods.base import Task
from vlda.methods.dapl import DAPL, DAPLParams
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.loading import load_backbone

MODELS = {"tiny": "tiny:vit", "vit-b-16": "open_clip:ViT-B-16"}  # open_clip: random weights
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "dapl_speed.json"


def make_image_files(root: Path, n: int, size: int, seed: int) -> list[tuple[Path, int]]:
    """``n`` smooth random RGB JPEGs of ``size`` px (photo-like file sizes), label 0."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        path = root / f"{i:05d}.jpg"
        img.save(path, quality=90)
        samples.append((path, 0))
    return samples


class Batches:
    """Source and target batches for one setting, produced the way the engine would."""

    def __init__(
        self, cache: bool, backbone: VisionLanguageBackbone, args: argparse.Namespace,
        device: torch.device, n_classes: int,
    ) -> None:
        self.cache, self.batch, self.device = cache, args.batch, device
        self.gen = torch.Generator().manual_seed(args.seed)
        self.n_classes = n_classes
        if cache:
            self.banks = [
                make_bank(args.bank, args.views, backbone.embed_dim, n_classes, args.seed + d)
                for d in range(2)
            ]
        elif args.images == "disk":
            tf = train_transform(backbone.image_size, backbone.mean, backbone.std)
            self.datasets = [ImageDataset(files, tf) for files in args.image_files]
            self.turn = 0
        else:
            s = backbone.image_size
            # Pre-made "decoded, augmented, normalised" images: loading is not what is timed.
            self.images = [
                [torch.randn(args.batch, 3, s, s, generator=self.gen).to(device) for _ in range(2)]
                for _ in range(2)
            ]
            self.turn = 0

    def __call__(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        b, dev = self.batch, self.device
        out = []
        for d in range(2):
            if self.cache:
                bank = self.banks[d]
                idx = torch.randint(len(bank), (b,), generator=self.gen)
                views = bank.random_views(idx, self.gen)
                batch = {"features": bank.gather(idx, views, device=dev)}
            elif hasattr(self, "datasets"):
                ds = self.datasets[d]
                idx = torch.randint(len(ds), (b,), generator=self.gen).tolist()
                seeds = torch.randint(2**31, (b,), generator=self.gen).tolist()
                items = [ds[(i, s)] for i, s in zip(idx, seeds, strict=True)]
                batch = {"images": collate(items)["images"].to(dev)}
            else:
                batch = {"images": self.images[d][self.turn % 2]}
            batch["domains"] = torch.full((b,), d, dtype=torch.long, device=dev)
            if d == 0:
                batch["labels"] = torch.randint(self.n_classes, (b,), generator=self.gen).to(dev)
            out.append(batch)
        if not self.cache:
            self.turn += 1
        return out[0], out[1]


class Setting(TimedSetting):
    def __init__(
        self, cache: bool, cut: bool, backbone: VisionLanguageBackbone, task: Task,
        args: argparse.Namespace, device: torch.device,
    ) -> None:
        self.cache, self.cut = cache, cut
        torch.manual_seed(args.seed)
        self.method = DAPL(backbone, task, DAPLParams()).to(device)
        self.method.setup(device)
        self.method.prompt_learner.cut_at_eot = cut
        self.weights = self.method.loss_weights()
        self.opt = torch.optim.SGD(self.method.trainable_parameters(), lr=2e-3, momentum=0.9)
        self.batches = Batches(cache, backbone, args, device, task.n_classes)
        self.device = device
        self.rates: list[float] = []

    def step(self) -> None:
        src, tgt = self.batches()
        losses = self.method.losses(src, tgt)
        total = sum(self.weights.get(k, 1.0) * v for k, v in losses.items())
        total.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _sig(x: float) -> float:
    """``x`` to 4 significant digits (rates range from hundredths to hundreds)."""
    return float(f"{x:.4g}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--classes", type=int, nargs="+", default=[65, 12],
                   help="class counts to measure (Office-Home: 65, VisDA-2017: 12)")
    p.add_argument("--batch", type=int, default=32, help="source and target batch size (each)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per setting and round")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each timing")
    p.add_argument("--repeats", type=int, default=5, help="rounds over the four settings")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--views", type=int, default=4, help="augmented views K in the feature bank")
    p.add_argument("--bank", type=int, default=2048, help="images per domain in the feature bank")
    p.add_argument("--images", choices=("disk", "tensors"), default="disk",
                   help="uncached batches: JPEG files decoded + augmented, or pre-made tensors")
    p.add_argument("--files", type=int, default=256, help="JPEG files per domain (--images disk)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    heavy = args.model != "tiny" and torch.device(args.device).type == "cpu"
    if args.steps is None:
        args.steps = 3 if heavy else 20
    if args.warmup is None:
        args.warmup = 1 if heavy else 5
    return args


def measure(
    n_classes: int, backbone: VisionLanguageBackbone, args: argparse.Namespace, device: torch.device
) -> list[dict]:
    """The four settings for one class count; ratios against that count's baseline."""
    task = make_task(n_classes)
    settings = [
        Setting(cache, cut, backbone, task, args, device)
        for cache in (False, True)
        for cut in (False, True)
    ]
    for r in range(args.repeats):
        for s in settings:
            rate = s.run(args.warmup, args.steps)
            print(f"{n_classes} classes, round {r + 1}/{args.repeats} cache={s.cache!s:5} "
                  f"cut={s.cut!s:5} {rate:8.2f} steps/s", file=sys.stderr, flush=True)

    base, base_median = max(settings[0].rates), statistics.median(settings[0].rates)
    out = []
    for s in settings:
        rate, median = max(s.rates), statistics.median(s.rates)
        out.append({
            "cache": s.cache,
            "cut_at_eot": s.cut,
            "steps_per_s": _sig(rate),
            "speedup_vs_baseline": round(rate / base, 2),
            "median_steps_per_s": _sig(median),
            "median_speedup_vs_baseline": round(median / base_median, 2),
            "rates": [_sig(x) for x in s.rates],
            "model": args.model,
            "uncached_images": args.images,
            "classes": n_classes,
            "batch": f"{args.batch}+{args.batch}",
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(),
        })
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backbone = load_backbone(MODELS[args.model], device=device)
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="vlda-bench-")
    args.image_files = []
    if args.images == "disk":
        args.image_files = [
            make_image_files(Path(tmp.name) / f"d{d}", args.files, 256, args.seed + d) for d in range(2)
        ]
    rows = []
    for n_classes in args.classes:
        rows.extend(measure(n_classes, backbone, args, device))
    result = {
        "settings": rows,
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv),
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    tmp.cleanup()
    print(f"\nDAPL steps/s — model {args.model}, uncached images: {args.images}, batch "
          f"{args.batch}+{args.batch}, {rows[0]['device']}, {rows[0]['threads']} thread(s), "
          f"best of {args.repeats} rounds x {args.steps} steps (median in brackets)")
    print(f"{'classes':>7} | {'feature cache':>13} | {'cut at EOT':>10} | {'steps/s':>16} | {'vs baseline':>16}")
    print("-" * 76)
    for row in rows:
        print(f"{row['classes']:>7} | {'on' if row['cache'] else 'off':>13} | {'on' if row['cut_at_eot'] else 'off':>10} "
              f"| {row['steps_per_s']:7.4g} ({row['median_steps_per_s']:6.4g}) "
              f"| {row['speedup_vs_baseline']:6.2f}x ({row['median_speedup_vs_baseline']:5.2f}x)")
    for n_classes in args.classes:
        cut = {r["cache"]: r for r in rows if r["cut_at_eot"] and r["classes"] == n_classes}
        ratio = cut[True]["steps_per_s"] / cut[False]["steps_per_s"]
        print(f"{n_classes} classes: cache speed-up at cut=on: {ratio:.2f}x")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

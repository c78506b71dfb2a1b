"""AD-CLIP training steps per second: vlda's step against an official-style step, same model.

Three settings, timed the same way, interleaved over ``--repeats`` rounds:

* ``official``: what the official trainer (``mainaksingha01/AD-CLIP``, ``trainers/adclip_*.py``)
  computes per step: the frozen image encoder on every source and target image (per-layer token
  statistics read on the way), each image's C prompts through the text encoder at the full
  77-token context, one text-encoder call per image, and the entropy term as its double Python
  loop over samples and classes;
* ``vlda_images``: vlda's AD-CLIP step from images (image encoder every step; prompts with the
  shared ``[SOS][ctx]`` prefix encoded once per image and class suffixes cut at the EOT);
* ``vlda_cached``: vlda's step from the feature cache (``[f(x) ‖ statistics]`` gathered from an
  fp16 bank): only the projectors and the text encoder run.

The batches are pre-made random tensors (decoding and augmentation are not what is timed). A
step is the weighted loss, ``backward()``, an Adam step and ``zero_grad``. The rate reported is
the best round, with its ratio to ``official`` in the same run; the median round too.

    python benchmarks/adclip_speed.py                    # tiny ViT, 65 classes, batch 16 + 16
    python benchmarks/adclip_speed.py --model vit-b-16   # random ViT-B/16, 224 px: heavy on CPU

Writes ``benchmarks/results/adclip_speed.json`` (``adclip_speed_vitb16.json`` for ViT-B/16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from bench_common import TimedSetting, make_bank, make_task, provenance, write_result
from torch.nn import functional as F

from vlda.methods.adclip import ADCLIP
from vlda.models.backbone import eot_positions
from vlda.models.layer_stats import encode_with_stats
from vlda.models.loading import load_backbone

MODELS = {"tiny": "tiny:vit", "vit-b-16": "open_clip:ViT-B-16"}  # open_clip: random weights
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("official", "vlda_images", "vlda_cached")


def official_text(method: ADCLIP, full: torch.Tensor, eot: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """One text-encoder call per image, C prompts at the full context: ``[B, C, D]``."""
    out = []
    for ctx_i in ctx:
        emb = full.clone()
        emb[:, 1 : 1 + method.n_ctx] = ctx_i
        out.append(F.normalize(method.backbone.encode_text_embeddings(emb, eot).float(), dim=-1))
    return torch.stack(out)


def official_entropy(p: torch.Tensor) -> torch.Tensor:
    """The official ``entropy_loss``: a double Python loop."""
    p = F.normalize(p, dim=0)
    full = torch.zeros(p.shape[0])
    for i in range(len(p)):
        total = 0
        for j in range(p.shape[1]):
            total = total - p[i][j] * torch.log(p[i][j] + 1e-8)
        full[i] = total
    return full.mean()


def official_losses(method: ADCLIP, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor,
                    full: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    f_s, st_s = encode_with_stats(method.backbone, xs)
    f_t, st_t = encode_with_stats(method.backbone, xt)
    f_s, f_t = F.normalize(f_s.float(), dim=-1), F.normalize(f_t.float(), dim=-1)
    pj = method.projectors
    dom_s, dom_t = pj.domain_tokens(st_s), pj.domain_tokens(st_t)
    text_s = official_text(method, full, eot, torch.cat([dom_s, dom_t, pj.content_tokens(st_s)], 1))
    text_t = official_text(method, full, eot, torch.cat([dom_s, dom_t, pj.content_tokens(st_t)], 1))
    scale = method.backbone.logit_scale
    logits_s = scale * torch.einsum("bd,bcd->bc", f_s, text_s)
    probs_t = (scale * torch.einsum("bd,bcd->bc", f_t, text_t)).softmax(1)
    kl = F.kl_div(F.log_softmax(text_s, dim=1), F.softmax(text_t, dim=1), reduction="batchmean")
    return (F.cross_entropy(logits_s, ys) + 0.1 * F.mse_loss(dom_s, pj.style_tokens(st_s))
            + 0.01 * official_entropy(probs_t) + kl)


class Setting(TimedSetting):
    def __init__(self, name: str, backbone, task, args: argparse.Namespace) -> None:
        self.name, self.rates, self.device = name, [], torch.device(args.device)
        torch.manual_seed(args.seed)
        self.method = ADCLIP(backbone, task, ADCLIP.make_params({})).to(self.device)
        self.opt = torch.optim.Adam(self.method.trainable_parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(args.seed)
        s, b = backbone.image_size, args.batch
        self.xs, self.xt = (torch.randn(b, 3, s, s, generator=g).to(self.device) for _ in range(2))
        self.ys = torch.randint(task.n_classes, (b,), generator=g).to(self.device)
        if name == "official":
            texts = [" ".join(["X"] * self.method.n_ctx) + f" {n}." for n in task.prompt_names]
            tokens = backbone.tokenize(texts).to(self.device)
            self.eot = eot_positions(tokens)
            with torch.no_grad():
                self.full = backbone.embed_tokens(tokens).float()
        if name == "vlda_cached":
            dim = self.method.cache_encoder().embed_dim
            self.banks = [make_bank(args.bank, 4, dim, task.n_classes, args.seed + d) for d in range(2)]
        self.weights = self.method.loss_weights()
        self.gen = g

    def _batches(self) -> tuple[dict, dict]:
        if self.name != "vlda_cached":
            return {"images": self.xs, "labels": self.ys}, {"images": self.xt}
        out = []
        for bank in self.banks:
            idx = torch.randint(len(bank), (len(self.ys),), generator=self.gen)
            out.append({"features": bank.gather(idx, bank.random_views(idx, self.gen), device=self.device)})
        out[0]["labels"] = self.ys
        return out[0], out[1]

    def step(self) -> None:
        if self.name == "official":
            loss = official_losses(self.method, self.xs, self.ys, self.xt, self.full, self.eot)
        else:
            src, tgt = self._batches()
            losses = self.method.losses(src, tgt)
            loss = sum(self.weights.get(k, 1.0) * v for k, v in losses.items())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--classes", type=int, default=None, help="classes (default: 65 tiny, 10 vit-b-16)")
    p.add_argument("--batch", type=int, default=None, help="source and target batch (default: 16 tiny, 4 vit-b-16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per setting and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each timing")
    p.add_argument("--repeats", type=int, default=3, help="rounds over the settings")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--bank", type=int, default=256, help="images per domain in the feature bank")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)
    tiny = args.model == "tiny"
    args.classes = args.classes or (65 if tiny else 10)
    args.batch = args.batch or (16 if tiny else 4)
    args.steps = args.steps or (5 if tiny else 1)
    args.out = args.out or RESULTS / ("adclip_speed.json" if tiny else "adclip_speed_vitb16.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backbone = load_backbone(MODELS[args.model]).to(args.device)
    task = make_task(args.classes)
    settings = [Setting(n, backbone, task, args) for n in SETTINGS]
    for r in range(args.repeats):
        for s in settings:
            rate = s.run(args.warmup, args.steps)
            print(f"round {r + 1}/{args.repeats} {s.name:12} {rate:9.3f} steps/s", file=sys.stderr, flush=True)
    base, base_med = max(settings[0].rates), statistics.median(settings[0].rates)
    rows = [{
        "setting": s.name, "steps_per_s": float(f"{max(s.rates):.4g}"),
        "speedup_vs_official": round(max(s.rates) / base, 2),
        "median_speedup_vs_official": round(statistics.median(s.rates) / base_med, 2),
        "rates": [float(f"{x:.4g}") for x in s.rates],
    } for s in settings]
    result = {
        "model": args.model, "classes": args.classes, "batch": f"{args.batch}+{args.batch}",
        "threads": torch.get_num_threads(), "device": args.device, "settings": rows, **provenance("adclip_speed.py", argv),
    }
    table = [f"{'setting':14}{'steps/s':>10}{'x official':>12}{'median x':>10}"]
    table += [f"{r['setting']:14}{r['steps_per_s']:>10}{r['speedup_vs_official']:>12}{r['median_speedup_vs_official']:>10}"
              for r in rows]
    write_result(result, args.out, "\n".join(table))
    return result


if __name__ == "__main__":
    main()

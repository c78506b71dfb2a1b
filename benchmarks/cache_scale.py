"""DomainNet-scale data: memory and time of a training process at 10k, 100k and 600k images.

For each size ``N`` (default 10k, 100k, 600k; DomainNet has 586,575 images), the script

1. writes DomainNet's official image lists, synthetic: ``domainnet/<domain>_{train,test}.txt``,
   lines ``<domain>/<class>/<file>.jpg <label>``, each domain and split holding its share of
   ``N`` in DomainNet's proportions (e.g. ``real_train.txt``: 120,906 / 586,575 of ``N``). No
   image exists except the three per list that the reader probes to see that the images are
   on disk (first, middle, last line; empty files). Nothing opens an image in what is measured.
2. writes the feature cache of every domain (``cache.views`` = ``K`` augmented views + the clean
   one, 512-d fp16: ViT-B/16's feature size) through ``vlda cache``'s own code
   (:func:`vlda.engine.experiment.cache_features`): the real key, ``paths.txt``, ``meta.json``
   with sha256 sums and the atomic move into place; the one thing replaced is the encoding pass
   (:func:`vlda.data.feature_cache._build`), whose rows are random fp16 numbers written into the
   same ``features.npy`` / ``valid.npy`` (``np.lib.format.open_memmap``, as ``_build`` does). The
   measured processes load it through the real reader, checksums verified, with the encoding
   pass replaced by an error, so a set that did not load as written would stop the benchmark.
3. runs, in a fresh process per (round, size), interleaved over ``--repeats`` rounds, a DAPL
   training run as ``vlda train`` builds it (:func:`vlda.engine.experiment.build_trainer`:
   lists read, cache loaded, source validation held out, ``TrainStream`` of the 5 sources and of
   the target): multi-source DomainNet, 5 sources -> ``real``, every split ``all`` (all ``N``
   images are cached and read), batch 32 + 32, 345 classes x 6 domain blocks of prompts. The
   backbone is a tiny random CLIP whose towers are small but whose embedding is 512-d, like
   ViT-B/16's. Timed: the setup (``build_trainer``), ``--steps`` training steps after
   ``--warmup`` (``Trainer._train_step`` on the batches of ``Trainer._batches``: gather from the
   memory map, text encoder, losses, ``autograd``, optimizer), and one evaluation
   (``Trainer.evaluate``: every target image and the source validation images, view 0).
4. reads the image lists alone in a fresh process per (round, size):
   :func:`vlda.data.readers.load_domain` of each domain's ``train`` and ``test`` list.

Memory: ``anon`` is the process's anonymous resident memory (``RssAnon`` of ``/proc/self/status``,
its peak per phase sampled every 2 ms by a thread): what the process itself allocated, the
figure that should not grow with ``N``. ``peak RSS`` is ``ru_maxrss``: anonymous memory plus the
file pages of the memory-mapped cache that the process touched (clean page cache, shared and
reclaimable; it grows with the rows read, up to the file's size). Both are reported.

Times: per (round, size) the median step; the table gives the best and the median over rounds,
and the load average of the machine before and after.

    python benchmarks/cache_scale.py                         # 10k, 100k, 600k; K = 8
    python benchmarks/cache_scale.py --views 2 --sizes 10000,100000
    python benchmarks/cache_scale.py --quick                 # a smoke run (tests)

Disk: ``N x (1 + K) x 512 x 2`` bytes of features per size (600k, K = 8: 5.5 GB), under
``--work`` (default: a temporary directory, deleted at the end unless ``--keep``).
Writes ``benchmarks/results/cache_scale.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import provenance, write_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cache_scale.json"
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
TARGET = "real"
EMBED_DIM = 512  # ViT-B/16's image and text embedding
MB = 1 << 20


# -- the data ---------------------------------------------------------------------------------


def split_counts(n: int) -> dict[tuple[str, str], int]:
    """Lines of each ``(domain, split)`` list: DomainNet's official counts scaled to ``n`` images
    in all (at least 64 each, so that a batch never repeats an image)."""
    from vlda.data.benchmarks import get_benchmark

    counts = get_benchmark("domainnet").expected_counts
    official = {(d, s): counts[(d, s)] for d in DOMAINS for s in ("train", "test")}
    total = sum(official.values())
    return {k: max(64, round(v * n / total)) for k, v in official.items()}


def write_lists(root: Path, n: int) -> dict[str, int]:
    """DomainNet's official lists under ``root/domainnet`` for ``n`` images (see the module
    docstring); the three images per list the reader probes are created empty."""
    from vlda.data.catalog import DOMAINNET_CLASSES

    base = root / "domainnet"
    base.mkdir(parents=True, exist_ok=True)
    n_cls, lines, size = len(DOMAINNET_CLASSES), 0, 0
    for (domain, split), count in split_counts(n).items():
        labels = np.arange(count) * n_cls // count  # grouped by class, like the real lists
        rels = [f"{domain}/{DOMAINNET_CLASSES[y]}/{domain}_{y:03d}_{split}_{i:06d}.jpg" for i, y in enumerate(labels)]
        path = base / f"{domain}_{split}.txt"
        path.write_text("".join(f"{r} {y}\n" for r, y in zip(rels, labels.tolist(), strict=True)))
        for rel in (rels[0], rels[len(rels) // 2], rels[-1]):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).touch()
        lines, size = lines + count, size + path.stat().st_size
    return {"lines": lines, "list_bytes": size}


def tiny_clip_512():  # -> VisionLanguageBackbone
    """A tiny random CLIP (2-layer towers, width 64) with ViT-B/16's 512-d embedding."""
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from vlda.data.transforms import CLIP_MEAN, CLIP_STD
    from vlda.models.open_clip_backbone import OpenClipBackbone

    with torch.random.fork_rng():
        torch.manual_seed(0)
        vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
        text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
        model = CLIP(embed_dim=EMBED_DIM, vision_cfg=vision, text_cfg=text)
    return OpenClipBackbone(model, "tiny:vit-512", "random-vit-512", 32, CLIP_MEAN, CLIP_STD)


def run_config(work: Path, args: argparse.Namespace):  # -> RunConfig
    from vlda.config import build_config

    return build_config({
        "data": {"benchmark": "domainnet", "root": str(work), "source": [d for d in DOMAINS if d != TARGET],
                 "target": TARGET, "source_split": "all", "target_split": "all", "eval_split": "all"},
        "model": {"backbone": "tiny", "name": "vit"},  # replaced by tiny_clip_512 (see _patch_backbone)
        "method": {"name": "dapl"},
        "cache": {"enabled": True, "views": args.views, "dir": str(work / "cache")},
        "train": {"steps": args.warmup + args.steps, "batch_size": args.batch, "eval_every": 10**9,
                  "eval_batch_size": args.eval_batch, "progress": False, "device": "cpu"},
        "output": str(work / "run"),
    })


def _patch_backbone() -> None:
    from vlda.engine import experiment

    experiment.load_run_backbone = lambda cfg, device="cpu": tiny_clip_512().to(device)  # type: ignore[assignment]


def synthetic_build(backbone, samples, eval_transform, train_transform, n_views, seed, *rest, **kw):
    """Stands in for :func:`vlda.data.feature_cache._build` (same arguments, same result): writes
    ``features.npy`` (random fp16 rows, ``[N, 1 + K, D]``) and ``valid.npy`` (all True) into the
    build directory the way ``_build`` does, without encoding anything."""
    from vlda.data.feature_cache import FEATURES_FILE, VALID_FILE

    out_dir = Path(kw["out_dir"] if "out_dir" in kw else rest[-1])
    n, d = len(samples), int(backbone.embed_dim)
    feats = np.lib.format.open_memmap(out_dir / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(n, 1 + n_views, d))
    rng, chunk = np.random.default_rng(seed), max(1, (64 * MB) // (2 * d * (1 + n_views)))
    for i in range(0, n, chunk):
        rows = min(chunk, n - i)
        feats[i : i + rows] = rng.standard_normal((rows, 1 + n_views, d), dtype=np.float32)
    feats.flush()
    del feats
    np.save(out_dir / VALID_FILE, np.ones(n, dtype=bool))
    return 0, [], d


def _refuse_build(*args: Any, **kw: Any) -> Any:
    raise RuntimeError("cache_scale: the synthetic feature cache did not load (it would be rebuilt)")


# -- memory -----------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemoryWatch:
    """Peak anonymous resident memory per phase (``RssAnon``, sampled every ``every`` s by a
    daemon thread) and the process's peak resident set (``ru_maxrss``)."""

    def __init__(self, every: float = 0.002) -> None:
        self.every, self._peak, self._stop = every, _status_kb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self._peak = max(self._peak, _status_kb("RssAnon"))

    def phase(self) -> float:
        """Peak anonymous MB since the last call (or the start); starts a new phase."""
        now = _status_kb("RssAnon")
        peak, self._peak = max(self._peak, now), now
        return round(peak / 1024, 1)

    def close(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_file_mb": round(_status_kb("RssFile") / 1024, 1)}


# -- the measured processes -------------------------------------------------------------------


def _quiet() -> None:
    """Small sizes leave classes without images and source validation empty: the warnings say
    so on every run; they are not the benchmark's output."""
    import logging

    logging.getLogger("vlda").setLevel(logging.ERROR)


def child_write(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from vlda.data import feature_cache
    from vlda.engine.experiment import cache_features

    _quiet()
    _patch_backbone()
    feature_cache._build = synthetic_build  # type: ignore[assignment]
    t0 = time.perf_counter()
    n_sets = cache_features(run_config(work, args))
    return {"sets": n_sets, "write_s": round(time.perf_counter() - t0, 2)}


def child_train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vlda.data import feature_cache
    from vlda.engine.experiment import build_trainer

    torch.set_num_threads(args.threads)
    _quiet()
    _patch_backbone()
    tiny_clip_512()  # imports open_clip: not part of the setup time
    feature_cache._build = _refuse_build  # type: ignore[assignment]
    out = work / "runs" / f"{os.getpid()}"
    watch = MemoryWatch()
    base = watch.phase()
    t0 = time.perf_counter()
    trainer = build_trainer(run_config(work, args), out)
    setup_s = time.perf_counter() - t0
    setup_mb = watch.phase()
    method = trainer.method.to(trainer.device)
    method.setup(trainer.device)
    stepper = trainer._stepper()
    assert stepper is not None
    total = args.warmup + args.steps
    batches, times, fetch = iter(trainer._batches(0, total)), [], []
    for step in range(total):
        t1 = time.perf_counter()
        src, tgt = next(batches)
        fetch.append(time.perf_counter() - t1)
        trainer._train_step(stepper, step, total, src, tgt)
        times.append(time.perf_counter() - t1)
    steps_mb = watch.phase()
    t2 = time.perf_counter()
    rec = trainer.evaluate(total)
    eval_s = time.perf_counter() - t2
    eval_mb = watch.phase()
    rows = sum(len(s.pool) for name in ("target_eval", "source_val") for s in trainer.evaluator.splits[name])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "setup_s": round(setup_s, 3), "step_ms": round(1000 * statistics.median(times[args.warmup:]), 3),
        "batch_ms": round(1000 * statistics.median(fetch[args.warmup:]), 3),
        "steps_ms": [round(1000 * t, 3) for t in times], "batches_ms": [round(1000 * t, 3) for t in fetch], "eval_s": round(eval_s, 3), "eval_rows": rows,
        "anon_base_mb": base, "anon_setup_mb": setup_mb, "anon_steps_mb": steps_mb, "anon_eval_mb": eval_mb,
        "target_acc": rec["target/acc"], **watch.close(),
    }


def child_lists(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from vlda.data.readers import load_domain

    _quiet()
    watch = MemoryWatch()
    base = watch.phase()
    t0 = time.perf_counter()
    data = [load_domain("domainnet", d, work, split) for d in DOMAINS for split in ("train", "test")]
    read_s = time.perf_counter() - t0
    peak = watch.phase()
    kept = round(_status_kb("RssAnon") / 1024, 1)
    lines = sum(len(x) for x in data)
    return {"read_s": round(read_s, 3), "lines": lines, "anon_base_mb": base, "anon_peak_mb": peak,
            "anon_kept_mb": kept, **watch.close()}


CHILDREN = {"write": child_write, "train": child_train, "lists": child_lists}


def run_child(kind: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result is the last line it prints."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work),
           "--views", str(args.views), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--eval-batch", str(args.eval_batch)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cache_scale child {kind} ({work}) failed:\n{done.stderr[-4000:]}")
    print(f"  {kind} {work.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the parent -------------------------------------------------------------------------------


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def prepare(work: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    info = write_lists(work, n)
    info.update(run_child("write", work, args))
    info["cache_bytes"] = disk_bytes(work / "cache")
    return info


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"best": round(min(values), 3), "median": round(statistics.median(values), 3)}


def aggregate(n: int, info: dict[str, Any], train: list[dict], lists: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"size": n, **info, "eval_rows": train[0]["eval_rows"]}
    for key in ("step_ms", "batch_ms", "setup_s", "eval_s"):
        row[key] = _summary([r[key] for r in train])
    for key in ("anon_setup_mb", "anon_steps_mb", "anon_eval_mb", "peak_rss_mb", "rss_file_mb"):
        row[key] = statistics.median(r[key] for r in train)
    row["lists"] = {"read_s": _summary([r["read_s"] for r in lists]),
                    **{k: statistics.median(r[k] for r in lists) for k in ("anon_base_mb", "anon_peak_mb", "anon_kept_mb")}}
    row["rounds"] = {"train": train, "lists": lists}
    return row


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    works = {n: root / f"n{n}" for n in args.sizes}
    infos = {n: prepare(w, n, args) for n, w in works.items()}
    train: dict[int, list[dict]] = {n: [] for n in args.sizes}
    lists: dict[int, list[dict]] = {n: [] for n in args.sizes}
    for _ in range(args.repeats):  # interleaved: every size once per round
        for n, w in works.items():
            train[n].append(run_child("train", w, args))
            lists[n].append(run_child("lists", w, args))
    return {
        "rows": [aggregate(n, infos[n], train[n], lists[n]) for n in args.sizes],
        "setup": {"views": args.views, "dim": EMBED_DIM, "dtype": "float16", "batch": args.batch,
                  "steps": args.steps, "warmup": args.warmup, "rounds": args.repeats, "threads": args.threads,
                  "eval_batch": args.eval_batch,
                  "method": "dapl", "task": f"DomainNet multi-source -> {TARGET}, splits all",
                  "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }


def format_table(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"DAPL on synthetic DomainNet ({s['task']}), cache {s['dim']}-d {s['dtype']} x (1 + {s['views']}) views, "
        f"batch {s['batch']} + {s['batch']}, {s['threads']} thread(s), {s['rounds']} round(s); "
        f"load average {s['loadavg_before'][0]} -> {s['loadavg_after'][0]} on {s['cpus']} CPUs",
        f"{'images':>8} {'cache GB':>9} {'step ms best/med':>17} {'batch ms':>9} {'anon MB setup/steps/eval':>25} "
        f"{'peak RSS MB':>12} {'setup s':>8} {'eval s (rows)':>16} {'lists s':>8} {'lists MB':>9}",
    ]
    for r in result["rows"]:
        lists = r["lists"]
        lines.append(
            f"{r['lines']:>8} {r['cache_bytes'] / 1e9:>9.2f} {r['step_ms']['best']:>8.1f}/{r['step_ms']['median']:<8.1f}"
            f" {r['batch_ms']['median']:>9.2f} {r['anon_setup_mb']:>8.0f}/{r['anon_steps_mb']:<6.0f}/{r['anon_eval_mb']:<8.0f} {r['peak_rss_mb']:>12.0f}"
            f" {r['setup_s']['median']:>8.2f} {r['eval_s']['median']:>7.2f} ({r['eval_rows']:>6})"
            f" {lists['read_s']['median']:>8.2f} {lists['anon_peak_mb'] - lists['anon_base_mb']:>9.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,600000", help="images in all, comma-separated")
    ap.add_argument("--views", type=int, default=8, help="K augmented views (cache.views; default 8)")
    ap.add_argument("--batch", type=int, default=32, help="source images per step (and target)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-batch", type=int, default=1024,
                    help="train.eval_batch_size (DAPL encodes its prompts once per evaluation batch)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="where the lists and caches go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep --work afterwards")
    ap.add_argument("--quick", action="store_true", help="sizes 2000 and 4000, K = 1, 2 steps, 1 round")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.views, args.steps, args.warmup, args.repeats = "2000,4000", 1, 2, 1, 1
    args.sizes = [int(x) for x in str(args.sizes).split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.work, args)))
        return {}
    root = args.work or Path(tempfile.mkdtemp(prefix="vlda-cache-scale-"))
    try:
        result = measure(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result.update(provenance("cache_scale.py", argv))
    write_result(result, args.out, format_table(result))
    return result


if __name__ == "__main__":
    main()

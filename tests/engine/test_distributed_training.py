"""Data-parallel training (issue #14): two CPU processes (gloo) end where one process ends.

Each case is run once in this process and once in a 2-process group (spawned, ``file://``
rendezvous) with the same global batch; the final parameters agree to fp32 rounding (the
slices are summed in another order, BatchNorm statistics are combined from two halves, the
feature cache is encoded in other batches), and the run directories hold the same files with the
same logged values. Cases: DAPL (sum), PGA and MPGA (the PGA strategy, its two stages), DANN + GH
and DANN + PCGrad (a timm ResNet whose BatchNorm layers, and the discriminator's, are trained:
global-batch BatchNorm), FixMatch (the same network, in two forward passes a step: source, then
the strong target views), CMKD + FixMatch (fine-tuned CLIP image tower, Gini impurities summed
over the batch, the head's BatchNorm).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_color_domains
from vlda.config import build_config
from vlda.engine.checkpoint import load_checkpoint, load_safe
from vlda.engine.experiment import build_trainer, run

CLIP = {"backbone": "tiny", "name": "vit", "pretrained": None}
RESNET = {"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32}
DANN = {"name": "dann", "bottleneck_dim": 16, "discriminator_hidden": 16, "discriminator_bn": True}
CASES: dict[str, dict] = {
    "dapl": {"model": CLIP, "method": {"name": "dapl", "n_ctx": 4, "n_domain_ctx": 2, "tau": 0.45}},
    "pga": {"model": CLIP, "method": {"name": "pga", "tau": 0.45}, "gradients": {"name": "pga"}},
    "mpga": {"model": CLIP, "method": {"name": "mpga", "tau": 0.45}, "gradients": {"name": "pga"},
             "sources": ["s1", "s2"]},
    "dann_gh": {"model": RESNET, "method": DANN, "gradients": {"name": "gh"}},
    "dann_pcgrad": {"model": RESNET, "method": DANN, "gradients": {"name": "pcgrad"}},
    # two forward passes (source, strong target views): SyncBatchNorm must agree on both
    "fixmatch": {"model": RESNET, "method": {"name": "fixmatch", "bottleneck_dim": 16,
                                             "threshold": 0.4}},
    "cmkd": {"model": CLIP, "method": {"name": "cmkd", "fixmatch": True, "fixmatch_threshold": 0.34,
                                       "ramp_steps": 2, "lr_head": 100.0},
             "optim": {"name": "sgd", "lr": 1e-3}},
}


def config(case: str, data_root: Path, out: Path, steps: int = 4):
    c = CASES[case]
    sources = c.get("sources", ["s1"])
    return build_config({
        "data": {"custom": {"root": str(data_root), "domains": {d: d for d in ("s1", "s2", "tgt")}},
                 "source": sources, "target": "tgt", "source_val_fraction": 0.25},
        "model": c["model"],
        "method": c["method"],
        "gradients": c.get("gradients", {"name": "sum"}),
        "train": {"steps": steps, "batch_size": 4, "eval_every": 2, "progress": False, "seed": 3},
        "optim": c.get("optim", {"name": "sgd", "lr": 0.01}),
        "cache": {"enabled": True, "views": 2, "dir": str(out.parent / "cache")},
        "augment": {"scale_min": 0.5, "flip": True},
        # validators on the target's outputs and features, and the saved outputs: the gathered
        # evaluation must be the whole split, in order
        "selection": {"validators": ["source_val_acc", "snd", "im"]},
        "eval": {"save_outputs": "features", "outputs_dtype": "float32"},
        "output": str(out),
    })


def _worker(rank: int, world: int, init_file: str, data_root: str, root: str, cases: list[str]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for case in cases:
            run(config(case, Path(data_root), Path(root) / case))
    finally:
        dist.destroy_process_group()


def run_in_processes(world: int, data_root: Path, root: Path, cases: list[str]) -> None:
    """Run ``cases`` in a group of ``world`` spawned processes, into ``root/<case>``."""
    import torch.multiprocessing as mp

    root.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_worker, args=(world, str(root / "init"), str(data_root), str(root), cases),
                       nprocs=world, start_method="spawn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("data_parallel")
    # 5 images a class: evaluation shards and cache shards of unequal sizes
    data = make_color_domains(base / "data", domains=("s1", "s2", "tgt"), per_class=5)
    run_in_processes(2, data, base / "two", list(CASES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case in CASES:
            run(config(case, data, base / "one" / case))
    finally:
        torch.set_num_threads(threads)
    return base


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _without_time(history: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in json.loads(history)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_end_where_one_process_ends(runs, case):
    one, two = runs / "one" / case, runs / "two" / case
    assert _files(two) == _files(one)
    want, got = load_checkpoint(one), load_checkpoint(two)
    init = build_trainer(config(case, runs / "data", runs / "one" / f"init-{case}")).method.trainable_state_dict()
    assert set(got["trainable"]) == set(want["trainable"]) == set(init)
    moved = 0.0
    for k, v in want["trainable"].items():
        if v.is_floating_point():
            torch.testing.assert_close(got["trainable"][k], v, rtol=1e-4, atol=1e-5, msg=k)
            moved = max(moved, float((v.float() - init[k].float()).abs().max()))
        else:
            assert torch.equal(got["trainable"][k], v), k
    assert moved > 1e-3  # training moved the weights far beyond the tolerance: not a vacuous check
    assert got["stepper"]["strategy"] == want["stepper"]["strategy"]
    a, b = _without_time(want["history"]), _without_time(got["history"])
    assert [sorted(r) for r in b] == [sorted(r) for r in a]
    for ra, rb in zip(a, b, strict=True):
        for k, v in ra.items():
            if isinstance(v, float):
                assert rb[k] == pytest.approx(v, rel=1e-3, abs=1e-4), k
            else:
                assert rb[k] == v, k
    masks = [v for r in a for k, v in r.items() if k in ("train/pl_mask_rate", "train/fixmatch/mask_head")]
    if case in ("dapl", "pga", "mpga", "cmkd", "fixmatch"):  # some confident, some not: the global count matters
        assert any(0 < v < 1 for v in masks), masks
    for name in sorted(p for p in _files(one) if p.startswith("outputs/")):
        saved_one, saved_two = load_safe(one / name), load_safe(two / name)
        for split, value in saved_one.items():
            for k, t in (value.items() if isinstance(value, dict) else [("", value)]):
                got_t = saved_two[split][k] if k else saved_two[split]
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    torch.testing.assert_close(got_t.float(), t.float(), rtol=1e-3, atol=1e-3, msg=f"{name} {split} {k}")
                else:
                    assert torch.equal(got_t, t) if isinstance(t, torch.Tensor) else got_t == t, f"{name} {split} {k}"
    summary_one = json.loads((one / "summary.json").read_text())
    summary_two = json.loads((two / "summary.json").read_text())
    assert summary_two["results"]["selected"]["step"] == summary_one["results"]["selected"]["step"]


def test_the_sharded_feature_cache_equals_the_one_process_cache(runs):
    ones = sorted((runs / "one" / "cache").glob("*/features.npy"))
    twos = sorted((runs / "two" / "cache").glob("*/features.npy"))
    assert ones and [p.parent.name for p in twos] == [p.parent.name for p in ones]
    for a, b in zip(ones, twos, strict=True):
        np.testing.assert_allclose(np.load(b).astype(np.float32), np.load(a).astype(np.float32), rtol=1e-3, atol=1e-3)
        assert not list(b.parent.glob("part-*"))


def _killed_worker(rank: int, world: int, init_file: str, data_root: str, out: str, resume: bool) -> None:
    """``dann_pcgrad`` in a group of ``world``: killed right after its first checkpoint (every
    process stops there, as torchrun stops a group), or resumed."""
    import torch.distributed as dist

    from vlda.engine.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if resume:
            run(config("dann_pcgrad", Path(data_root), Path(out)), resume=True)
            return
        real = Trainer._checkpoint

        def checkpoint_then_die(self, step, stepper):
            real(self, step, stepper)
            raise KeyboardInterrupt

        Trainer._checkpoint = checkpoint_then_die  # type: ignore[method-assign]
        try:
            run(config("dann_pcgrad", Path(data_root), Path(out)))
        except KeyboardInterrupt:
            pass
    finally:
        dist.destroy_process_group()


def _spawn(world: int, *args) -> None:
    import torch.multiprocessing as mp

    Path(args[-2]).parent.mkdir(parents=True, exist_ok=True)
    init = Path(args[-2]).parent / f"init-{np.random.default_rng().integers(1 << 30)}"
    mp.start_processes(_killed_worker, args=(world, str(init), *args), nprocs=world, start_method="spawn")


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_in_two_processes_or_in_one(runs):
    """Killed after its first checkpoint (step 2 of 4), then resumed in 2 processes and,
    from a copy, in 1: both end where the uninterrupted one-process run ends."""
    import shutil

    killed = runs / "killed" / "dann_pcgrad"
    _spawn(2, str(runs / "data"), str(killed), False)
    half = load_checkpoint(killed)
    assert half["step"] == 2 and half["stepper"]["strategy"] == {"calls": 2}
    assert not (killed / "summary.json").exists()
    in_one = runs / "killed" / "in_one"
    shutil.copytree(killed, in_one)
    _spawn(2, str(runs / "data"), str(killed), True)
    run(config("dann_pcgrad", runs / "data", in_one), resume=True)
    want = load_checkpoint(runs / "one" / "dann_pcgrad")
    for got in (load_checkpoint(killed), load_checkpoint(in_one)):
        assert got["step"] == 4 and got["stepper"]["strategy"] == {"calls": 4}
        for k, v in want["trainable"].items():
            torch.testing.assert_close(got["trainable"][k], v, rtol=1e-4, atol=1e-5, msg=k)
        assert [sorted(r) for r in _without_time(got["history"])] == [sorted(r) for r in _without_time(want["history"])]
    assert _files(killed) == _files(runs / "one" / "dann_pcgrad")

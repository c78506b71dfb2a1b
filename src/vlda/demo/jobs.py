"""The demo's runs (rows × seeds) as jobs, run one after another or in worker processes.

Each job is one ``vlda train`` run (:func:`vlda.engine.experiment.run`) of a row's config with
one seed, or the build of a feature cache that later runs share. Jobs are independent: a run
depends only on its config (seed included) and on the number of torch threads it computes with
(float sums are rounded in another order with more threads), so the demo is deterministic for a
given ``threads`` whether its runs go one after another or to several worker processes.

Several single-threaded worker processes beat one process with several threads here: the
demo's models are small (a 64-wide text transformer, EfficientNet-Lite0 at 64 px), so each
operation is too short to split across threads, and on a busy machine a thread that waits for
a core stalls its siblings at every operation (measured: CoOp, 100 steps on 2 shared cores,
5 s of training with one thread, 62-97 s with two).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("vlda")


@dataclass(frozen=True)
class Job:
    """One run of a demo row (``kind="run"``) or one feature-cache build (``kind="cache"``).

    Attributes:
        method: the row's name (e.g. ``"dapl"``, ``"dann+gh"``).
        seed: ``train.seed`` of the run.
        raw: the run config as a plain dict (:func:`vlda.config.build_config` input).
        cost: a rough relative cost; worker processes take the costliest jobs first.
    """

    method: str
    seed: int
    raw: dict[str, Any] = field(hash=False, compare=False)
    cost: float = 1.0
    kind: str = "run"


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def row_values(method: str, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One seed's values of a row from its run's ``summary.json`` content."""
    res = summary["results"]
    row: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "target_acc_last": res["last"]["target_metric"],
        "target_acc_selected": res["selected"]["target_metric"],
        "target_acc_oracle": res["oracle"]["target_metric"],
        "source_acc": res["last"].get("source_val_acc"),
        "selected_by": {name: r["target_metric"] for name, r in res.get("selected_by", {}).items()},
    }
    grads = summary.get("gradients", {})
    if "conflict_rate" in grads:
        row["conflict_rate"] = grads["conflict_rate"]
    last = summary.get("rst", {}).get("last")
    if last:  # RST: what the adapted model costs to store, against the dense fine-tuned weights
        row["artefact_bytes"] = last["file_bytes"]
        row["dense_bytes"] = last["dense_bytes"]
        row["encoder_changed_pct"] = last["encoder_changed_pct"]
    return row


def run_job(job: Job) -> dict[str, Any]:
    """Run one job afresh (an earlier run in its directory is removed); a run's per-seed row
    values with its wall and CPU seconds, or ``{}`` for a cache build."""
    from vlda.config import build_config
    from vlda.engine.experiment import cache_features, run

    cfg = build_config(job.raw)
    if job.kind == "cache":
        cache_features(cfg)
        return {}
    run_dir = Path(job.raw["output"])
    if (run_dir / "checkpoint.pt").exists() or (run_dir / "summary.json").exists():
        shutil.rmtree(run_dir)
    start, cpu = time.perf_counter(), time.process_time()
    summary = run(cfg)
    row = row_values(job.method, job.seed, summary)
    row["seconds"] = round(time.perf_counter() - start, 1)
    row["cpu_seconds"] = round(time.process_time() - cpu, 1)
    return row


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block, the previous value restored after it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _init_worker(threads: int) -> None:
    """A worker process: ``threads`` torch threads; vlda's per-evaluation lines silenced (the
    parent shows the progress of the whole demo)."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("vlda").setLevel(logging.WARNING)


def _describe(job: Job, result: dict[str, Any]) -> str:
    if job.kind == "cache":
        return f"cache {job.method}"
    return f"{job.method} s{job.seed}: {result['target_acc_selected']:.3f} ({result['seconds']:.0f} s)"


class Runner:
    """Runs batches of jobs, one after another in this process (``workers == 1``) or in
    ``workers`` spawned processes kept for every batch (costliest jobs first); each job
    computes with ``threads`` torch threads. Use as a context manager."""

    def __init__(self, workers: int = 1, threads: int = 1, progress: bool = True) -> None:
        self.workers, self.threads, self.progress = max(1, workers), max(1, threads), progress
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(
        self, jobs: Sequence[Job], desc: str = "vlda demo",
        on_done: Callable[[Job, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """The results of ``jobs``, in their order. A failing job stops the batch and its error
        is raised here. The progress bar counts jobs (in one process, each run's own bar shows
        under it)."""
        results: list[dict[str, Any]] = [{} for _ in jobs]
        bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not self.progress, dynamic_ncols=True)

        def done(i: int, result: dict[str, Any]) -> None:
            results[i] = result
            bar.update(1)
            bar.set_postfix_str(_describe(jobs[i], result))
            if on_done is not None:
                on_done(jobs[i], result)

        try:
            if self.workers == 1:
                with torch_threads(self.threads):
                    for i, job in enumerate(jobs):
                        done(i, run_job(_with_progress(job, self.progress)))
            else:
                self._run_pool(jobs, done)
        finally:
            bar.close()
        return results

    def _run_pool(self, jobs: Sequence[Job], done: Callable[[int, dict[str, Any]], None]) -> None:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
            )
        futures: dict[Future[dict[str, Any]], int] = {}
        for i in sorted(range(len(jobs)), key=lambda i: -jobs[i].cost):
            futures[self._pool.submit(run_job, _with_progress(jobs[i], False))] = i
        try:
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _with_progress(job: Job, progress: bool) -> Job:
    raw = {**job.raw, "train": {**job.raw.get("train", {}), "progress": progress}}
    return Job(job.method, job.seed, raw, job.cost, job.kind)

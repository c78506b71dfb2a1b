"""Running a sweep's trials: each one ``vlda train`` in its own process, idempotently.

A trial's state comes from its run directory: ``finished`` (``summary.json`` written, with the
trial's own config: skipped), ``partial`` (a killed or failed run: resumed with ``--resume``),
``new`` (started), or ``changed`` (its directory holds a run made with a different config,
e.g. the sweep's ``overrides`` changed: refused before anything runs, with the differences).

Launchers:

* ``local`` — up to ``workers`` trials at once on this machine, each a subprocess with
  ``OMP_NUM_THREADS = cores // workers``;
* ``submitit_local`` / ``slurm`` — through `submitit <https://github.com/facebookincubator/submitit>`_
  (``pip install submitit``): one job per trial, the sweep's ``slurm:`` mapping passed to
  ``executor.update_parameters`` as written (submitit's names: ``timeout_min``,
  ``gpus_per_node``, ``slurm_partition``, ...). The submitting process waits for the jobs.

Each trial's run config is written to ``<trial>/trial.yaml`` and its output to
``<trial>/train.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from vlda.config import ConfigError
from vlda.config.sweep import SweepConfig
from vlda.engine.run_dir import NO_EFFECT, config_changes, holds_run
from vlda.files import write_text_atomic
from vlda.sweep.plan import Trial


def trial_dir(spec: SweepConfig, trial: Trial) -> Path:
    return Path(spec.out) / trial.name


def trial_state(spec: SweepConfig, trial: Trial) -> str:
    """``finished``, ``partial``, ``new`` or ``changed`` (see the module docstring)."""
    out = trial_dir(spec, trial)
    if not holds_run(out):
        return "new"
    saved = out / "config.json"
    if saved.is_file() and _changes(json.loads(saved.read_text()), trial):
        return "changed"
    return "finished" if (out / "summary.json").is_file() else "partial"


def _changes(saved: dict[str, Any], trial: Trial) -> dict[str, tuple[Any, Any]]:
    changes = config_changes(saved, trial.config.to_dict())
    return {k: v for k, v in changes.items() if k not in NO_EFFECT}


def check_unchanged(spec: SweepConfig, trials: Sequence[Trial]) -> None:
    """Refuse the sweep when a trial's directory holds a run made with another config."""
    for t in trials:
        if trial_state(spec, t) == "changed":
            saved = json.loads((trial_dir(spec, t) / "config.json").read_text())
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(_changes(saved, t).items()))
            raise ConfigError(
                f"trial {t.name} was run with another config ({diff}); change the sweep's `out` or "
                "remove that trial's directory"
            )


def trial_command(spec: SweepConfig, trial: Trial, resume: bool) -> list[str]:
    out = trial_dir(spec, trial)
    cmd = [sys.executable, "-m", "vlda.cli.main", "train", "-c", str(out / "trial.yaml"), "--out", str(out), "--quiet"]
    return [*cmd, "--resume"] if resume else cmd


def run_command(cmd: Sequence[str], log_path: str, threads: int) -> int:
    """Run one trial's command, its output to ``log_path``; returns the exit code. Module-level
    so that submitit can pickle it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log_path, "ab") as log:
        return subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode


def _prepared(spec: SweepConfig, trial: Trial) -> tuple[list[str], str]:
    out = trial_dir(spec, trial)
    resume = trial_state(spec, trial) == "partial"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(yaml.safe_dump(trial.config.to_dict(), sort_keys=False), out / "trial.yaml")
    return trial_command(spec, trial, resume), str(out / "train.log")


def run_local(
    spec: SweepConfig, trials: Sequence[Trial], on_done: Callable[[Trial, int], None]
) -> dict[str, int]:
    """Run ``trials`` with ``spec.workers`` parallel processes; exit code per trial name."""
    threads = max(1, (os.cpu_count() or 1) // spec.workers)

    def one(trial: Trial) -> tuple[Trial, int]:
        cmd, log = _prepared(spec, trial)
        return trial, run_command(cmd, log, threads)

    codes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=spec.workers) as pool:
        for future in as_completed([pool.submit(one, t) for t in trials]):
            trial, code = future.result()
            codes[trial.name] = code
            on_done(trial, code)
    return codes


def run_submitit(
    spec: SweepConfig, trials: Sequence[Trial], on_done: Callable[[Trial, int], None]
) -> dict[str, int]:
    """Run ``trials`` as submitit jobs (``submitit_local`` or ``slurm``) and wait for them."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"launcher {spec.launcher} needs submitit: pip install submitit") from None
    cluster = "local" if spec.launcher == "submitit_local" else "slurm"
    executor = submitit.AutoExecutor(folder=str(Path(spec.out) / ".submitit"), cluster=cluster)
    executor.update_parameters(**{"timeout_min": 24 * 60, **spec.slurm})
    threads = int(spec.slurm.get("cpus_per_task", 1)) if cluster == "slurm" else max(1, (os.cpu_count() or 1) // spec.workers)
    jobs = []
    for trial in trials:
        cmd, log = _prepared(spec, trial)
        jobs.append((trial, executor.submit(run_command, cmd, log, threads)))
    codes: dict[str, int] = {}
    for trial, job in jobs:
        try:
            code = int(job.result())
        except Exception:  # the job itself failed (killed, timed out): the trial is resumable
            code = -1
        codes[trial.name] = code
        on_done(trial, code)
    return codes

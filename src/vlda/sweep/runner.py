"""One sweep, end to end: plan, check, print, run what is not finished, record.

``OUT/sweep.json`` records the sweep file's settings and, per trial, its task, seed,
hyper-parameters, state before this invocation and exit code (``null`` when skipped). Running
the same sweep again skips finished trials and resumes unfinished ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vlda.config.sweep import SweepConfig
from vlda.files import write_text_atomic
from vlda.sweep.launch import check_unchanged, run_local, run_submitit, trial_dir, trial_state
from vlda.sweep.plan import Trial, make_plan

log = logging.getLogger("vlda")


def describe_plan(spec: SweepConfig, trials: list[Trial], states: dict[str, str]) -> str:
    """The plan as text: one line per trial (state, directory, hyper-parameters) and a count."""
    lines = [f"{states[t.name]:>8}  {t.name}  {json.dumps(t.hparams) if t.hparams else ''}".rstrip() for t in trials]
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("new", "partial", "finished")}
    lines.append(
        f"{len(trials)} trial(s) in {spec.out}: {counts['new']} to start, {counts['partial']} to resume, "
        f"{counts['finished']} finished (skipped); launcher {spec.launcher}, {spec.workers} worker(s)"
    )
    return "\n".join(lines)


def _target(spec: SweepConfig, trial: Trial) -> str:
    path = trial_dir(spec, trial) / "summary.json"
    if not path.is_file():
        return ""
    last = json.loads(path.read_text()).get("results", {}).get("last", {})
    return f" (last target {last['target_metric']:.4f})" if "target_metric" in last else ""


def run_sweep(spec: SweepConfig, folder: Path, dry_run: bool = False, progress: bool = True) -> dict[str, Any]:
    """Plan the sweep (every trial checked), refuse trials whose directory holds a run of another
    config, then run the unfinished ones (unless ``dry_run``). Returns ``sweep.json``'s content."""
    trials = make_plan(spec, folder)
    check_unchanged(spec, trials)
    states = {t.name: trial_state(spec, t) for t in trials}
    print(describe_plan(spec, trials, states))
    record: dict[str, Any] = {"sweep": spec.model_dump(mode="json"),
                              "trials": [{**t.to_dict(), "state": states[t.name], "exit_code": None} for t in trials]}
    if dry_run:
        return record
    pending = [t for t in trials if states[t.name] != "finished"]
    bar = tqdm(total=len(pending), disable=not progress, desc="sweep", unit="trial", dynamic_ncols=True)

    def done(trial: Trial, code: int) -> None:
        bar.update(1)
        status = "finished" if code == 0 else f"failed (exit {code}; see {trial_dir(spec, trial) / 'train.log'})"
        bar.write(f"{trial.name}: {status}{_target(spec, trial) if code == 0 else ''}")

    launch = run_local if spec.launcher == "local" else run_submitit
    codes = launch(spec, pending, done) if pending else {}
    bar.close()
    for entry in record["trials"]:
        entry["exit_code"] = codes.get(entry["name"])
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(record, indent=2), out / "sweep.json")
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        log.warning("%d of %d trial(s) failed; run the sweep again to resume them", len(failed), len(pending))
    return record

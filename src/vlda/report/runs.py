"""Finished runs as records for tables: method, task, seed, hyper-parameters, and the target
metric each way of choosing the checkpoint reached (from the run's ``summary.json``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlda.data.benchmarks import get_benchmark
from vlda.engine.run_dir import NO_EFFECT

# Not hyper-parameters: what differs between the runs of one table cell or one row.
NOT_HPARAMS = NO_EFFECT | {"train.seed", "data.source", "data.target"}


@dataclass(frozen=True)
class RunResult:
    """One run's numbers: ``scores`` maps a selection (``last``, ``oracle``, a validator name)
    to the target metric it reached (0..1); ``validator_scores`` each validator's best score
    (what it chose with); ``primary`` the run's primary validator; ``hparams`` a short id of
    its config without seed, task and settings that do not change results."""

    path: str
    method: str
    task: str
    task_order: tuple[int, ...]
    seed: int
    scores: dict[str, float]
    validator_scores: dict[str, float] = field(default_factory=dict)
    primary: str = "source_val_acc"
    hparams: str = ""


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding a ``summary.json`` with ``results`` and ``config``) at or under
    each path (a sweep directory holds many)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        own = p / "summary.json"  # a run, or e.g. the demo's own summary above its runs
        candidates = [own] if own.is_file() and _is_run_summary(own) else sorted(p.rglob("summary.json"))
        found += [c.parent for c in candidates if _is_run_summary(c)]
    return list(dict.fromkeys(found))


def _is_run_summary(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and "results" in data and "config" in data


def _method_label(config: dict[str, Any]) -> str:
    method = str(config["method"]["name"])
    grads = str(config.get("gradients", {}).get("name", "sum"))
    label = method if grads == "sum" else f"{method}+{grads}"
    return f"{label}+rst" if config.get("rst", {}).get("enabled") else label


def _short(domain: str, aliases: dict[str, str]) -> str:
    inverse = {d: a for a, d in aliases.items()}
    return inverse.get(domain, domain).capitalize()


def _task(data: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """``"Ar→Cl"`` and a sort key in the benchmark's canonical order (its domain order)."""
    sources, target = list(data["source"]), str(data["target"])
    bench = data.get("benchmark")
    if bench:
        b = get_benchmark(bench)
        domains, aliases = list(b.domains), b.domain_aliases
    else:
        domains, aliases = sorted({*sources, target}), {}
    order = tuple(domains.index(d) if d in domains else len(domains) for d in [*sources, target])
    name = "+".join(_short(s, aliases) for s in sources) + "→" + _short(target, aliases)
    return name, (len(sources), *order)


def load_run(run_dir: Path) -> RunResult:
    summary = json.loads((run_dir / "summary.json").read_text())
    config, results = summary["config"], summary["results"]
    scores = {k: float(results[k]["target_metric"]) for k in ("last", "oracle") if k in results}
    chosen = results.get("selected_by", {"source_val_acc": results.get("selected")})
    vscores = {}
    for name, r in chosen.items():
        if r is not None:
            scores[name] = float(r["target_metric"])
            if r.get("score") is not None:
                vscores[name] = float(r["score"])
    task, order = _task(config["data"])
    primary = str((results.get("selected") or {}).get("validator", next(iter(chosen), "source_val_acc")))
    return RunResult(str(run_dir), _method_label(config), task, order, int(config["train"]["seed"]), scores,
                     vscores, primary, hparams_id(config))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def hparams_id(config: dict[str, Any]) -> str:
    """A short id of everything in ``config`` that changes results, except seed and task."""
    flat = {k: v for k, v in _flat(config).items() if k not in NOT_HPARAMS}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]

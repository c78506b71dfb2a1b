"""A sweep's plan: every trial (task × hyper-parameter set × seed) as a checked run config.

Each trial is a normal run directory ``OUT/<task>/<hparams>/seed<S>``:

* ``<task>``: ``art-clipart`` (sources joined by ``+``, then the target);
* ``<hparams>``: ``default`` for the base config's own values, else ``hp<j>-<hash>``, the hash
  of the values, so that a changed grid or space gives new directories instead of reusing old
  ones;
* every trial's run config is built from the base config, the sweep's ``config`` and
  ``overrides``, the task, the seed and the hyper-parameters, and checked
  (:func:`~vlda.engine.options.check_options`) when the plan is made: a mistake in any trial
  fails before the first one runs.

Random search draws hyper-parameter set ``j`` from ``random.Random("<search_seed>:<j>")``, the
same for every task and seed (DomainBed's protocol: a table then chooses one set per method),
over the method's declared :attr:`~vlda.methods.base.Method.search_space` updated by the sweep's
``space``; set 0 is the defaults. Drawn floats are rounded to 4 significant digits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlda.config import ConfigError, RunConfig, apply_override, build_config, read_raw
from vlda.config.search import Distribution, parse_distribution
from vlda.config.sweep import SweepConfig
from vlda.data.benchmarks import get_benchmark
from vlda.engine.options import check_options
from vlda.methods.registry import get_method


@dataclass(frozen=True)
class Trial:
    """One run of a sweep. ``name``: its directory relative to the sweep's ``out``."""

    name: str
    task: str
    seed: int
    hparams: dict[str, Any]
    config: RunConfig = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "seed": self.seed, "hparams": self.hparams}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def base_raw(spec: SweepConfig, folder: Path) -> dict[str, Any]:
    """The base run config as a raw dict: ``base`` (relative to the sweep file), the inline
    ``config`` merged into it, then ``overrides``."""
    path = None if spec.base is None else (folder / spec.base if not Path(spec.base).is_absolute() else Path(spec.base))
    raw = _merge(read_raw(path), spec.config)
    for o in spec.overrides:
        apply_override(raw, o)
    return raw


def _domains(raw: Mapping[str, Any], benchmark: str | None) -> list[str]:
    data = raw.get("data") or {}
    if benchmark is not None:
        try:
            return list(get_benchmark(benchmark).domains)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"tasks: {err}") from None
    custom = data.get("custom") or {}
    if isinstance(custom.get("domains"), Mapping):
        return list(custom["domains"])
    raise ConfigError("tasks: `all` needs a benchmark (officehome/all) or data.custom.domains in the base config")


def expand_task(task: str, raw: Mapping[str, Any]) -> list[tuple[str | None, list[str], str]]:
    """``(benchmark or None, sources, target)`` for one ``tasks`` entry: ``base`` (the base
    config's own task), ``all`` / ``<benchmark>/all`` (every ordered pair of domains),
    ``a->b``, ``a+b->c`` (multi-source) or ``<benchmark>/a->b``."""
    data = raw.get("data") or {}
    if task == "base":
        return [(None, list(data.get("source") or []), str(data.get("target", "")))]
    bench, _, rest = task.rpartition("/")
    benchmark = bench or None
    if rest == "all":
        doms = _domains(raw, benchmark or data.get("benchmark"))
        return [(benchmark, [s], t) for s in doms for t in doms if s != t]
    src, arrow, tgt = rest.partition("->")
    if not arrow or not src or not tgt:
        raise ConfigError(f"tasks: {task!r} is not a task; write source->target (e.g. art->clipart), "
                          "a+b->c, <benchmark>/all or all")
    return [(benchmark, src.split("+"), tgt)]


def hparam_sets(spec: SweepConfig, space: Mapping[str, Distribution]) -> list[dict[str, Any]]:
    """The hyper-parameter sets of the sweep, in order (see the module docstring)."""
    if spec.search == "none":
        return [{}]
    if spec.search == "grid":
        if not spec.grid:
            raise ConfigError("search: grid needs `grid:` (config key -> list of values)")
        keys = list(spec.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.grid.values())]
    if not space:
        raise ConfigError("search: random needs a search space: the method declares none; give `space:`")
    sets: list[dict[str, Any]] = [{}]
    for j in range(1, spec.n_trials):
        rng = random.Random(f"{spec.search_seed}:{j}")
        sets.append({k: _rounded(space[k].sample(rng)) for k in sorted(space)})
    return sets


def _rounded(v: Any) -> Any:
    return float(f"{v:.4g}") if isinstance(v, float) else v


def _hp_name(j: int, hp: Mapping[str, Any]) -> str:
    if not hp:
        return "default"
    digest = hashlib.sha1(json.dumps(hp, sort_keys=True).encode()).hexdigest()[:8]
    return f"hp{j:03d}-{digest}"


def search_space(spec: SweepConfig, raw: Mapping[str, Any]) -> dict[str, Distribution]:
    """The method's declared space, updated by the sweep's ``space``."""
    method = raw.get("method") or "zeroshot"
    name = method.get("name", "") if isinstance(method, Mapping) else str(method)
    try:
        space = dict(get_method(str(name)).search_space)
    except ValueError as err:
        raise ConfigError(f"method.name: {err}") from None
    for key, value in spec.space.items():
        try:
            space[key] = parse_distribution(key, value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return space


def make_plan(spec: SweepConfig, folder: Path) -> list[Trial]:
    """Every trial of the sweep, each run config built and checked."""
    raw = base_raw(spec, folder)
    space = search_space(spec, raw) if spec.search == "random" else {}
    sets = hparam_sets(spec, space)
    out, trials = Path(spec.out), []
    for entry in spec.tasks:
        for benchmark, sources, target in expand_task(entry, raw):
            task = f"{'+'.join(sources)}-{target}"
            for j, hp in enumerate(sets):
                for seed in spec.seeds:
                    name = f"{task}/{_hp_name(j, hp)}/seed{seed}"
                    cfg = _trial_config(raw, benchmark, sources, target, seed, hp, out, name)
                    trials.append(Trial(name, task, seed, hp, cfg))
    return trials


def _trial_config(
    raw: Mapping[str, Any], benchmark: str | None, sources: list[str], target: str, seed: int,
    hp: Mapping[str, Any], out: Path, name: str,
) -> RunConfig:
    trial = json.loads(json.dumps(raw))  # a deep copy of plain data
    overrides = [f"data.source={json.dumps(sources)}", f"data.target={json.dumps(target)}",
                 f"train.seed={seed}", f"output={json.dumps(str(out / name))}"]
    if benchmark is not None:
        overrides.append(f"data.benchmark={json.dumps(benchmark)}")
    overrides += [f"{k}={json.dumps(v)}" for k, v in hp.items()]
    for o in overrides:
        apply_override(trial, o)
    try:
        return check_options(build_config(trial))
    except ConfigError as err:
        raise ConfigError(f"sweep trial {name}: {err}") from None

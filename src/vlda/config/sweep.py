"""A sweep file: one base run config × tasks × seeds × hyper-parameters.

Example (``configs/sweeps/dann_officehome.yaml``)::

    base: ../dann_officehome.yaml        # a run config, relative to this file
    overrides: [train.steps=2000]        # applied to every trial
    tasks: officehome/all                # the 12 ordered pairs; or [art->clipart, ...]; or all
    seeds: [1, 2, 3]                     # or a count: 3 means seeds 1, 2, 3
    search: random                       # grid | random | none
    n_trials: 8                          # random: hyper-parameter sets (set 0 = the defaults)
    search_seed: 0
    space:                               # random: added to / replacing the method's own space
      optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}
    grid:                                # grid: every combination
      method.trade_off: [0.3, 1.0]
    out: runs/sweeps/dann_officehome
    workers: 2                           # local parallel trials
    launcher: local                      # local | submitit_local | slurm
    slurm: {partition: gpu, timeout_min: 240, gpus_per_node: 1}

Only the sweep's own fields are checked here; each trial's run config is built and checked
(:func:`vlda.engine.options.check_options`) when the plan is made, before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from vlda.config.loading import ConfigError, validation_message
from vlda.config.sections import Section


class SweepConfig(Section):
    """The fields of a sweep file (see the module docstring)."""

    base: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    overrides: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=lambda: ["base"])
    seeds: list[int] = Field(default_factory=lambda: [1], min_length=1)
    search: Literal["none", "grid", "random"] = "none"
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    space: dict[str, Any] = Field(default_factory=dict)
    n_trials: int = Field(1, gt=0)
    search_seed: int = 0
    out: str = "runs/sweep"
    workers: int = Field(1, gt=0)
    launcher: Literal["local", "submitit_local", "slurm"] = "local"
    slurm: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 1:
                raise ValueError("seeds: give a list of seeds or a count >= 1")
            return list(range(1, v + 1))
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"grid: {empty[0]} has no values")
        return v


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepConfig, Path]:
    """Read and validate a sweep file (``yaml.safe_load``); returns it and the folder that a
    relative ``base`` is resolved against (``out``, like a run's ``output``, is relative to the
    working directory). ``overrides``: ``key=value`` of the
    sweep's own top-level fields (``workers=4``). Raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"sweep file {path} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {path} must be a mapping (base, tasks, seeds, ...)")
    for o in overrides or []:
        key, sep, value = o.partition("=")
        if not sep:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        raw[key.strip()] = yaml.safe_load(value)
    try:
        return SweepConfig.model_validate(raw), path.parent
    except ValidationError as err:
        raise ConfigError(f"sweep file {path}: " + validation_message(err)) from None

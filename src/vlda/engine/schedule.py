"""Learning-rate schedules as pure functions of the step (so resuming needs no scheduler state).

* ``cosine`` (default): warm-up, then ``lr_t = lr · (1 + cos(π (t - w) / (T - w))) / 2`` by step,
  reaching 0 at the last step ``T``.
* ``constant``: warm-up, then ``lr``.
* ``dassl_per_iter_cosine``: what the official DAPL / PGA / AD-CLIP trainers actually run. Dassl
  builds ``CosineAnnealingLR(T_max = MAX_EPOCH)`` but the trainers step it every *iteration*, so
  ``lr_t = lr · (1 + cos(π t / P)) / 2`` with period ``P = MAX_EPOCH`` iterations keeps
  oscillating between ≈0 and ``lr`` every ``2P`` steps. Set ``period`` to the config's
  ``MAX_EPOCH`` (25 for DAPL) and ``warmup_steps: 1, warmup_type: constant`` to reproduce Dassl's
  one-"epoch" constant warm-up, which is one iteration for the same reason. For reproduction
  only; it is not a sensible schedule.
* ``inv``: ``lr_t = lr · (1 + γ t)^(-power)`` (after warm-up), the annealing of the classic UDA
  code (DANN, CDAN, the GH code, TLlib: γ = 0.001, power = 0.75; TLlib's FixMatch γ = 0.0004).
"""

from __future__ import annotations

import math

from vlda.config import ScheduleConfig


def lr_at(step: int, total_steps: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < cfg.warmup_steps:
        if cfg.warmup_type == "constant":
            return cfg.warmup_lr
        return cfg.warmup_lr + (base_lr - cfg.warmup_lr) * step / cfg.warmup_steps
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "inv":
        return base_lr * (1 + cfg.gamma * (step - cfg.warmup_steps)) ** (-cfg.power)
    if cfg.name == "dassl_per_iter_cosine":
        if not cfg.period:
            raise ValueError("schedule dassl_per_iter_cosine needs `period` (the official MAX_EPOCH)")
        t = step - cfg.warmup_steps
        return base_lr * (1 + math.cos(math.pi * t / cfg.period)) / 2
    span = max(total_steps - cfg.warmup_steps, 1)
    t = step - cfg.warmup_steps
    return base_lr * (1 + math.cos(math.pi * t / span)) / 2

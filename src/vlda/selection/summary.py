"""Which evaluation each reported result comes from.

* ``last`` — the final evaluation;
* ``selected`` — chosen by a validator that uses no target label (default: source-validation
  accuracy), its score logged as ``validator/<name>`` in each record; ties: the earliest step;
* ``oracle`` — the best target metric. It uses target labels, so it is only ever reported under
  this name, for comparison with papers that keep their best-on-target checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlda.selection.validators import VALIDATORS

DEFAULT_VALIDATOR = "source_val_acc"
_REPORTED = ("step", "target/acc", "target/mean_class_acc", "target/metric", "source_val/acc")


def validator_key(name: str) -> str:
    """The ``metrics.jsonl`` key of a validator's score."""
    return f"validator/{name}"


def _result(rec: Mapping[str, Any], how: str) -> dict[str, Any]:
    out = {k.replace("/", "_"): rec[k] for k in _REPORTED if k in rec}
    out["chosen_by"] = how
    return out


def best_by(history: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The record with the highest ``key`` (the earliest of equal scores), or ``None``."""
    scored = [r for r in history if r.get(key) is not None]
    return max(scored, key=lambda r: r[key]) if scored else None


def summarize(history: Sequence[Mapping[str, Any]], validator: str = DEFAULT_VALIDATOR) -> dict[str, Any]:
    """``last``, ``selected`` (best score of ``validator``) and ``oracle`` (best target)."""
    if not history:
        return {}
    last = history[-1]
    selected = best_by(history, validator_key(validator))
    title = VALIDATORS[validator].title if validator in VALIDATORS else validator
    if selected is not None:
        how = f"{title} (no target labels)"
    else:  # nothing to validate on: say so rather than pretend a validator chose
        selected, how = last, f"last step (no {title} to choose with: see data.source_val_fraction)"
    oracle = best_by(history, "target/metric") or last
    return {
        "last": _result(last, "last step"),
        "selected": _result(selected, how),
        "oracle": _result(oracle, "ORACLE: best target metric, uses target labels"),
    }

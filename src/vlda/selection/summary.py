"""Which evaluation each reported result comes from.

* ``last`` — the final evaluation;
* ``selected_by`` — for each configured validator, the evaluation with its best score; a
  validator uses no target label, its score is logged as ``validator/<name>`` in each record;
  ties: the earliest step;
* ``selected`` — the same entry for the primary validator (the first configured one);
* ``oracle`` — the best target metric. It uses target labels, so it is only ever reported under
  this name, for comparison with papers that keep their best-on-target checkpoint.

Every entry names how it was chosen (``chosen_by``); a ``selected`` entry also names its
``validator``.
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


def selected_by(history: Sequence[Mapping[str, Any]], validator: str) -> dict[str, Any]:
    """The evaluation ``validator`` chooses (best score), with its score; the last one, saying
    so, when no evaluation has a score of it."""
    key = validator_key(validator)
    best = best_by(history, key)
    title = VALIDATORS[validator].title if validator in VALIDATORS else validator
    if best is None:  # nothing to validate on: say so rather than pretend a validator chose
        hint = " see data.source_val_fraction" if validator == DEFAULT_VALIDATOR else ""
        out = _result(history[-1], f"last step (no {title} to choose with:{hint or ' no score logged'})")
    else:
        out = _result(best, f"{title}, no target labels")
        out["score"] = best[key]
    out["validator"] = validator
    return out


def summarize(
    history: Sequence[Mapping[str, Any]], validators: str | Sequence[str] = DEFAULT_VALIDATOR
) -> dict[str, Any]:
    """``last``, ``selected`` (primary: the first of ``validators``), ``selected_by`` (every
    validator) and ``oracle`` (best target)."""
    if not history:
        return {}
    names = [validators] if isinstance(validators, str) else list(validators) or [DEFAULT_VALIDATOR]
    chosen = {name: selected_by(history, name) for name in names}
    oracle = best_by(history, "target/metric") or history[-1]
    return {
        "last": _result(history[-1], "last step"),
        "selected": chosen[names[0]],
        "selected_by": chosen,
        "oracle": _result(oracle, "ORACLE: best target metric, uses target labels"),
    }

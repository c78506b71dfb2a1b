"""Which evaluation each reported result comes from.

* ``last`` — the final evaluation;
* ``selected`` — chosen by a validator that uses no target label: the best source-validation
  accuracy (ties: the earliest step);
* ``oracle`` — the best target metric. It uses target labels, so it is only ever reported under
  this name, for comparison with papers that keep their best-on-target checkpoint.
"""

from __future__ import annotations

from typing import Any

VALIDATOR = "source_val/acc"


def _result(rec: dict[str, Any], how: str) -> dict[str, Any]:
    keys = ("step", "target/acc", "target/mean_class_acc", "target/metric", "source_val/acc")
    out = {k.replace("/", "_"): rec[k] for k in keys if k in rec}
    out["chosen_by"] = how
    return out


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """``last``, ``selected`` (best source-validation accuracy) and ``oracle`` (best target)."""
    if not history:
        return {}
    last = history[-1]
    with_val = [r for r in history if VALIDATOR in r]
    if with_val:
        # max() keeps the first of equal scores: the earliest step wins ties.
        selected = max(with_val, key=lambda r: r[VALIDATOR])
        how = "source-validation accuracy (no target labels)"
    else:  # nothing to validate on: say so rather than pretend a validator chose
        selected, how = last, "last step (no source-validation images: see data.source_val_fraction)"
    oracle = max(history, key=lambda r: r["target/metric"])
    return {
        "last": _result(last, "last step"),
        "selected": _result(selected, how),
        "oracle": _result(oracle, "ORACLE: best target metric, uses target labels"),
    }


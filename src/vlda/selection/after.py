"""Validators computed after a run, from the outputs it saved (``eval.save_outputs``): what
``vlda select RUN --validator NAME`` does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlda.files import write_text_atomic
from vlda.selection.outputs import load_outputs
from vlda.selection.summary import summarize, validator_key
from vlda.selection.validators import Validator, get_validator

SELECTION_FILE = "selection.json"


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of a run (``metrics.jsonl``)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a vlda run directory (no metrics.jsonl)")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError:
        raise ValueError(f"{path} is damaged (a line is not JSON)") from None


def _scores(run_dir: Path, rec: dict[str, Any], validators: Sequence[Validator]) -> dict[str, float | None]:
    path = run_dir / rec["outputs"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the outputs of step {rec.get('step')}); they cannot be scored")
    outputs = load_outputs(path)
    scores: dict[str, float | None] = {}
    for v in validators:
        lack = v.unsaved(outputs)
        if lack is not None:
            raise ValueError(
                f"validator {v.name!r} needs {lack}, which {run_dir} did not save; train again with "
                f"eval.save_outputs={'features' if 'features' in lack else 'logits'}"
                + (" and a vision-language method (zero-shot CLIP)" if "zeroshot" in lack else "")
            )
        scores[v.name] = v.score(outputs)
    return scores


def select_run(run_dir: str | Path, names: Sequence[str], write: bool = True) -> dict[str, Any]:
    """Score every saved evaluation of ``run_dir`` with the validators ``names`` and choose with
    each: ``{"run", "scores": {name: [{"step", "score"}]}, "results": summarize(...)}`` (the
    ``results`` of ``summary.json``: ``last``, ``selected`` (the first name), ``selected_by``,
    ``oracle``). With ``write``, merged into ``RUN/selection.json`` (atomically)."""
    run_dir = Path(run_dir)
    validators = [get_validator(n) for n in names]
    history = read_history(run_dir)
    saved = [r for r in history if "outputs" in r]
    if not saved:
        raise ValueError(
            f"{run_dir} saved no evaluation outputs (eval.save_outputs was none), so validators cannot be "
            "computed after the fact; train again with eval.save_outputs=logits (features for class_ami, dev)"
        )
    scored = []
    for rec in history:
        scores = _scores(run_dir, rec, validators) if "outputs" in rec else {}
        scored.append({**rec, **{validator_key(k): s for k, s in scores.items()}})
    result = {
        "run": str(run_dir),
        "scores": {v.name: [{"step": r["step"], "score": r.get(validator_key(v.name))} for r in scored if "outputs" in r]
                   for v in validators},
        "results": summarize(scored, list(names)),
    }
    if write:
        _merge_write(run_dir / SELECTION_FILE, result)
    return result


def _merge_write(path: Path, result: dict[str, Any]) -> None:
    """Keep earlier ``vlda select`` results of other validators in ``selection.json``."""
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    merged = {
        "run": result["run"],
        "scores": {**old.get("scores", {}), **result["scores"]},
        "selected_by": {**old.get("selected_by", {}), **result["results"]["selected_by"]},
        "last": result["results"]["last"],
        "oracle": result["results"]["oracle"],
    }
    write_text_atomic(json.dumps(merged, indent=2), path)

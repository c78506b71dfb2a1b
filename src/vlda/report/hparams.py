"""Hyper-parameter selection for tables, with the same validators as checkpoint selection.

When a method was run on a task with several hyper-parameter settings (a sweep), each table
keeps, per method and task, the setting whose runs score best *by that table's own criterion*,
averaged over seeds (DomainBed's protocol): the validator's best score for a validator's table,
the primary validator's for the ``last`` table, and the target metric only for the ``oracle``
table (named so). The seeds of a cell then all come from one setting.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from vlda.report.runs import RunResult


def criterion(selection: str, runs: Sequence[RunResult]) -> str:
    """What chooses the hyper-parameters of ``selection``'s table: a validator name, or
    ``"oracle"``."""
    if selection == "oracle":
        return "oracle"
    return runs[0].primary if selection == "last" else selection


def _merit(runs: Sequence[RunResult], by: str) -> float:
    vals = [r.scores["oracle"] if by == "oracle" else r.validator_scores.get(by) for r in runs]
    known = [v for v in vals if v is not None]
    return statistics.fmean(known) if known else float("-inf")


def choose_hparams(runs: Sequence[RunResult], selection: str) -> list[RunResult]:
    """The runs of ``selection``'s table: per (method, task), those of the hyper-parameter
    setting with the best mean (over seeds) of :func:`criterion` (ties: the smallest setting
    id, so the choice does not depend on the order runs were found)."""
    groups: dict[tuple[str, str], dict[str, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[(r.method, r.task)][r.hparams].append(r)
    chosen: list[RunResult] = []
    for settings in groups.values():
        if len(settings) == 1:
            chosen += next(iter(settings.values()))
            continue
        by = criterion(selection, next(iter(settings.values())))
        best = max(sorted(settings), key=lambda h: _merit(settings[h], by))
        chosen += settings[best]
    return chosen

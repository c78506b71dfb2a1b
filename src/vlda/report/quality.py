"""How good each validator is, judged with target labels (for runs whose target has them).

The runs are grouped by (method, task, seed): runs in one group differ only in their other
hyper-parameters, so choosing among their evaluations (every checkpoint of every run of the
group) is checkpoint *and* hyper-parameter selection. In each group, for each validator ``v``:

* ``chosen``: the target metric of the evaluation with the highest ``validator/v`` score (the
  earliest step of the first run on ties) — chosen **without** target labels;
* ``oracle``: the highest target metric of any evaluation of the group — chosen **with** them;
* ``regret = oracle − chosen`` (≥ 0);
* ``spearman``: Spearman's rank correlation between the validator's score and the target
  metric over every evaluation of the group (average ranks for ties; undefined, shown empty,
  when either is constant or fewer than two evaluations are scored).

The table averages each column over the groups. Only ``chosen``'s *choice* is made without
target labels; every column of this table is *computed* with them (it judges validators).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlda.report.runs import RunResult

TARGET_KEY = "target/metric"
VALIDATOR_PREFIX = "validator/"
QUALITY_TITLE = "validator quality (computed WITH target labels; each validator chooses without them)"
QUALITY_HEADER = ["validator", "groups", "chosen", "oracle", "regret", "spearman"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of ``run_dir/metrics.jsonl`` (lines that are not records, e.g. a
    line cut by a crash, are skipped); ``[]`` when the file is absent."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: the Pearson correlation of the average ranks of ``x`` and ``y`` (as
    ``scipy.stats.spearmanr``); ``None`` when undefined (n < 2 or a constant input)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


@dataclass(frozen=True)
class GroupQuality:
    """One validator on one (method, task, seed) group."""

    method: str
    task: str
    seed: int
    validator: str
    n_evals: int
    chosen: float
    chosen_run: str
    chosen_step: int
    oracle: float
    spearman: float | None

    @property
    def regret(self) -> float:
        return self.oracle - self.chosen


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def validator_names(histories: Sequence[Sequence[Mapping[str, Any]]]) -> list[str]:
    """The validators logged in any record, in first-seen order."""
    seen = (k[len(VALIDATOR_PREFIX):] for h in histories for r in h for k in r if k.startswith(VALIDATOR_PREFIX))
    return list(dict.fromkeys(seen))


def group_quality(
    runs: Sequence[RunResult], histories: Sequence[Sequence[Mapping[str, Any]]]
) -> list[GroupQuality]:
    """Every validator's :class:`GroupQuality` in every group of ``runs`` (``histories[i]`` is
    ``runs[i]``'s ``metrics.jsonl``). Groups without a target metric are left out; a score
    that is missing or not finite (NaN) leaves its evaluation out of that validator's choice."""
    groups: dict[tuple[str, str, int], list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for run, hist in zip(runs, histories, strict=True):
        groups[(run.method, run.task, run.seed)] += [(run.path, r) for r in hist if r.get(TARGET_KEY) is not None]
    names = validator_names(histories)
    out = []
    for (method, task, seed), evals in sorted(groups.items()):
        if not evals:
            continue
        oracle = max(float(r[TARGET_KEY]) for _, r in evals)
        for name in names:
            scored = [(p, r) for p, r in evals if _finite(r.get(VALIDATOR_PREFIX + name))]
            if not scored:
                continue
            path, best = max(scored, key=lambda pr: float(pr[1][VALIDATOR_PREFIX + name]))
            rho = spearman([float(r[VALIDATOR_PREFIX + name]) for _, r in scored], [float(r[TARGET_KEY]) for _, r in scored])
            out.append(GroupQuality(method, task, seed, name, len(scored), float(best[TARGET_KEY]), path,
                                    int(best["step"]), oracle, rho))
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def quality_table(groups: Sequence[GroupQuality]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per validator the number of groups it scored and the mean over them of
    ``chosen``, ``oracle``, ``regret`` (×100) and ``spearman`` (over the groups where it is
    defined; empty when it is nowhere)."""
    by: dict[str, list[GroupQuality]] = defaultdict(list)
    for g in groups:
        by[g.validator].append(g)
    rows = []
    for name, gs in by.items():
        rhos = [g.spearman for g in gs if g.spearman is not None]
        rows.append([
            name, str(len(gs)), _pct(statistics.fmean(g.chosen for g in gs)),
            _pct(statistics.fmean(g.oracle for g in gs)), _pct(statistics.fmean(g.regret for g in gs)),
            f"{statistics.fmean(rhos):.3f}" if rhos else "",
        ])
    return list(QUALITY_HEADER), rows


def long_rows(groups: Sequence[GroupQuality]) -> tuple[list[str], list[list[str]]]:
    """Every group's numbers, one row per (group, validator)."""
    header = ["method", "task", "seed", "validator", "evaluations", "chosen_run", "chosen_step",
              "chosen_target_metric", "oracle_target_metric", "regret", "spearman"]
    rows = [[g.method, g.task, str(g.seed), g.validator, str(g.n_evals), g.chosen_run, str(g.chosen_step),
             f"{g.chosen:.6f}", f"{g.oracle:.6f}", f"{g.regret:.6f}",
             "" if g.spearman is None else f"{g.spearman:.6f}"] for g in groups]
    return header, rows


QUALITY_NOTE = (
    "Columns: `groups` — (method, task, seed) groups scored; every run of a group (other "
    "hyper-parameters) and every evaluation of it is a candidate. `chosen` — target metric ×100 of "
    "the evaluation the validator scores best (chosen without target labels); `oracle` — the best "
    "target metric of the group (**uses target labels**); `regret` — oracle − chosen; `spearman` — "
    "rank correlation between the validator's score and the target metric over the group's "
    "evaluations. All columns are computed with target labels; means over groups."
)

"""Paper-style tables from finished runs: rows methods, columns tasks (the benchmark's canonical
order) and their average, cells mean ± std over seeds, one table per way of choosing the
checkpoint (``last``, each validator's ``selected_by``, ``oracle``).

When runs differ in hyper-parameters, each table keeps the setting its own criterion prefers
(:mod:`vlda.report.hparams`). Each run contributes the headline target metric (``target_metric``: accuracy, or mean per-class
accuracy for VisDA) of each entry of its ``summary.json["results"]``. Nothing here reads target
labels: the numbers are those the runs reported, and the oracle table is named so.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from vlda.files import write_text_atomic
from vlda.report.hparams import choose_hparams, criterion
from vlda.report.runs import RunResult, find_runs, load_run

ORACLE_TITLE = "oracle (best target metric: chosen WITH target labels)"


def _cell(values: Sequence[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def table(runs: Sequence[RunResult], selection: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table: ``method, tasks..., Avg``; cells ``mean ± std`` (×100,
    sample std over seeds; a single seed shows the mean only). ``Avg`` is the mean of the
    task means, ± the std over seeds of the per-seed task average when every seed has every
    task; it is left empty when a method lacks a task."""
    tasks = sorted({(r.task_order, r.task) for r in runs})
    names = [t for _, t in tasks]
    by: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in runs:
        if selection in r.scores:
            by[(r.method, r.task)][r.seed] = r.scores[selection]
    rows = []
    for method in sorted({r.method for r in runs}):
        cells = [method]
        means = []
        for t in names:
            vals = list(by.get((method, t), {}).values())
            cells.append(_cell(vals) if vals else "")
            if vals:
                means.append(statistics.fmean(vals))
        cells.append(_average(method, names, by) if len(means) == len(names) else "")
        rows.append(cells)
    return ["method", *names, "Avg"], rows


def _average(method: str, tasks: Sequence[str], by: dict[tuple[str, str], dict[int, float]]) -> str:
    per_task = [by[(method, t)] for t in tasks]
    seeds = set.intersection(*(set(d) for d in per_task))
    if all(set(d) == seeds for d in per_task) and len(seeds) > 1:
        return _cell([statistics.fmean(d[s] for d in per_task) for s in sorted(seeds)])
    return f"{100 * statistics.fmean(statistics.fmean(d.values()) for d in per_task):.1f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def selections(runs: Sequence[RunResult]) -> list[str]:
    """``last``, the validators (in first-seen order), ``oracle``."""
    names = dict.fromkeys(k for r in runs for k in r.scores if k not in ("last", "oracle"))
    return ["last", *names, "oracle"]


def _refuse_duplicates(runs: Sequence[RunResult]) -> None:
    seen: dict[tuple[str, str, int, str], str] = {}
    for r in runs:
        key = (r.method, r.task, r.seed, r.hparams)
        if key in seen:
            raise ValueError(
                f"runs {seen[key]} and {r.path} are the same run ({r.method} on {r.task}, seed {r.seed}, "
                "same settings); give each run once"
            )
        seen[key] = r.path


def _title(sel: str, runs: Sequence[RunResult]) -> str:
    if sel == "oracle":
        return ORACLE_TITLE
    if sel == "last":
        return "last step"
    return f"selected by {sel} (no target labels)"


def _hparams_note(sel: str, runs: Sequence[RunResult]) -> str:
    settings = {(r.method, r.task, r.hparams) for r in runs}
    if len(settings) == len({(r.method, r.task) for r in runs}):  # one setting per method and task
        return ""
    by = criterion(sel, runs)
    what = "the target metric (ORACLE)" if by == "oracle" else f"{by}'s score (no target labels)"
    return f"Hyper-parameters chosen per method and task by the mean over seeds of {what}.\n\n"


def write_report(paths: Iterable[str | Path], out: str | Path) -> list[Path]:
    """Collect the runs at or under ``paths`` and write, in ``out``: one Markdown and one CSV
    table per selection (``last.md``, ``<validator>.md``, ``oracle.md``, ...), all tables in
    ``tables.md``, and every run's numbers in ``runs.csv`` (long form). Returns the files."""
    dirs = find_runs(paths)
    if not dirs:
        raise ValueError(f"no finished vlda run (a summary.json with results) under {', '.join(map(str, paths))}")
    runs = [load_run(d) for d in dirs]
    _refuse_duplicates(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    for sel in selections(runs):
        header, rows = table(choose_hparams(runs, sel), sel)
        section = f"## {_title(sel, runs)}\n\n{_hparams_note(sel, runs)}" + markdown(header, rows)
        for ext, text in (("md", section), ("csv", to_csv(header, rows))):
            write_text_atomic(text, out / f"{sel}.{ext}")
            written.append(out / f"{sel}.{ext}")
        sections.append(section)
    intro = (f"# Results\n\n{len(runs)} runs, {len({r.method for r in runs})} methods, "
             f"{len({r.task for r in runs})} tasks, {len({r.seed for r in runs})} seed(s), "
             f"{len({r.hparams for r in runs})} setting(s). Target metric ×100, mean ± std over seeds.\n\n")
    write_text_atomic(intro + "\n".join(sections), out / "tables.md")
    long_rows = [[r.path, r.method, r.task, str(r.seed), r.hparams, sel, f"{v:.6f}"]
                 for r in runs for sel, v in r.scores.items()]
    header = ["run", "method", "task", "seed", "hparams", "selection", "target_metric"]
    write_text_atomic(to_csv(header, long_rows), out / "runs.csv")
    return [*written, out / "tables.md", out / "runs.csv"]

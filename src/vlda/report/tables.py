"""Paper-style tables from finished runs: rows methods, columns tasks (the benchmark's canonical
order) and their average, cells mean ± std over seeds, one table per way of choosing the
checkpoint (``last``, each validator's ``selected_by``, ``oracle``).

Each run contributes the headline target metric (``target_metric``: accuracy, or mean per-class
accuracy for VisDA) of each entry of its ``summary.json["results"]``. Nothing here reads target
labels: the numbers are those the runs reported, and the oracle table is named so.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlda.data.benchmarks import get_benchmark
from vlda.files import write_text_atomic

ORACLE_TITLE = "oracle (best target metric: chosen WITH target labels)"


@dataclass(frozen=True)
class RunResult:
    """One run's numbers: ``scores`` maps a selection (``last``, ``oracle``, a validator name)
    to the target metric it reached (0..1)."""

    path: str
    method: str
    task: str
    task_order: tuple[int, ...]
    seed: int
    scores: dict[str, float]


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding a ``summary.json`` with ``results`` and ``config``) at or under
    each path (a sweep directory holds many)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        candidates = [p / "summary.json"] if (p / "summary.json").is_file() else sorted(p.rglob("summary.json"))
        found += [c.parent for c in candidates if _is_run_summary(c)]
    return list(dict.fromkeys(found))


def _is_run_summary(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and "results" in data and "config" in data


def _method_label(config: dict[str, Any]) -> str:
    method = str(config["method"]["name"])
    grads = str(config.get("gradients", {}).get("name", "sum"))
    return method if grads == "sum" else f"{method}+{grads}"


def _short(domain: str, aliases: dict[str, str]) -> str:
    inverse = {d: a for a, d in aliases.items()}
    return inverse.get(domain, domain).capitalize()


def _task(data: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """``"Ar→Cl"`` and a sort key in the benchmark's canonical order (its domain order)."""
    sources, target = list(data["source"]), str(data["target"])
    bench = data.get("benchmark")
    if bench:
        b = get_benchmark(bench)
        domains, aliases = list(b.domains), b.domain_aliases
    else:
        domains, aliases = sorted({*sources, target}), {}
    order = tuple(domains.index(d) if d in domains else len(domains) for d in [*sources, target])
    name = "+".join(_short(s, aliases) for s in sources) + "→" + _short(target, aliases)
    return name, (len(sources), *order)


def load_run(run_dir: Path) -> RunResult:
    summary = json.loads((run_dir / "summary.json").read_text())
    config, results = summary["config"], summary["results"]
    scores = {k: float(results[k]["target_metric"]) for k in ("last", "oracle") if k in results}
    for name, r in results.get("selected_by", {"source_val_acc": results.get("selected")}).items():
        if r is not None:
            scores[name] = float(r["target_metric"])
    task, order = _task(config["data"])
    return RunResult(str(run_dir), _method_label(config), task, order, int(config["train"]["seed"]), scores)


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
    seen: dict[tuple[str, str, int], str] = {}
    for r in runs:
        key = (r.method, r.task, r.seed)
        if key in seen:
            raise ValueError(
                f"runs {seen[key]} and {r.path} are both {r.method} on {r.task} with seed {r.seed} (other "
                "hyper-parameters?); choosing between them is hyper-parameter selection: report them separately"
            )
        seen[key] = r.path


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
        header, rows = table(runs, sel)
        title = ORACLE_TITLE if sel == "oracle" else ("last step" if sel == "last" else f"selected by {sel} (no target labels)")
        for ext, text in (("md", f"## {title}\n\n" + markdown(header, rows)), ("csv", to_csv(header, rows))):
            write_text_atomic(text, out / f"{sel}.{ext}")
            written.append(out / f"{sel}.{ext}")
        sections.append(f"## {title}\n\n" + markdown(header, rows))
    n_seeds = len({r.seed for r in runs})
    intro = (f"# Results\n\n{len(runs)} runs, {len({r.method for r in runs})} methods, "
             f"{len({r.task for r in runs})} tasks, {n_seeds} seed(s). Target metric ×100, mean ± std over seeds.\n\n")
    write_text_atomic(intro + "\n".join(sections), out / "tables.md")
    long_rows = [[r.path, r.method, r.task, str(r.seed), sel, f"{v:.6f}"] for r in runs for sel, v in r.scores.items()]
    write_text_atomic(to_csv(["run", "method", "task", "seed", "selection", "target_metric"], long_rows), out / "runs.csv")
    return [*written, out / "tables.md", out / "runs.csv"]

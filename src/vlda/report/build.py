"""``vlda report``: everything written from a set of finished runs.

Always: the paper-style tables of :mod:`vlda.report.tables` (Markdown, CSV) and the same as
LaTeX (``<selection>.tex``, all in ``tables.tex``); the validator-quality table of
:mod:`vlda.report.quality` (``quality.md``/``.csv``/``.tex``, each group's numbers in
``quality_groups.csv``) when the runs logged a target metric. With ``plots``: each run's plots
(:mod:`vlda.report.plots`) under ``plots/<run>/`` as PNG and SVG. With ``html``: the plots and
one self-contained page, ``report.html``, holding every table and plot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from vlda.files import write_text_atomic
from vlda.report import quality as q
from vlda.report import tables as tb
from vlda.report.hparams import choose_hparams
from vlda.report.html import Page, Table, write_html
from vlda.report.latex import latex
from vlda.report.plots import RunPlots, plot_run
from vlda.report.runs import RunResult, find_runs, load_run


def _title(sel: str) -> str:
    if sel == "oracle":
        return tb.ORACLE_TITLE
    return "last step" if sel == "last" else f"selected by {sel} (no target labels)"


def result_tables(runs: Sequence[RunResult]) -> list[Table]:
    """One :class:`Table` per selection (``last``, validators, ``oracle``), the hyper-parameters
    of each chosen by its own criterion (:func:`vlda.report.hparams.choose_hparams`)."""
    return [Table(_title(sel), *tb.table(choose_hparams(runs, sel), sel), uses_labels=sel == "oracle")
            for sel in tb.selections(runs)]


def write_latex(tables: Sequence[Table], names: Sequence[str], out: Path) -> list[Path]:
    """``<name>.tex`` per table and all of them in ``tables.tex``."""
    texts = [latex(t.header, t.rows, caption=f"Target metric (×100), {t.title}.") for t in tables]
    files = []
    for name, text in zip(names, texts, strict=True):
        write_text_atomic(text, out / f"{name}.tex")
        files.append(out / f"{name}.tex")
    write_text_atomic("\n".join(texts), out / "tables.tex")
    return [*files, out / "tables.tex"]


def write_quality(runs: Sequence[RunResult], out: Path) -> tuple[Table | None, list[Path]]:
    """The validator-quality table and its files, or ``(None, [])`` when no run logged both a
    target metric and a validator score."""
    groups = q.group_quality(runs, [q.read_metrics(r.path) for r in runs])
    if not groups:
        return None, []
    header, rows = q.quality_table(groups)
    md = f"## {q.QUALITY_TITLE}\n\n{q.QUALITY_NOTE}\n\n" + "| " + " | ".join(header) + " |\n"
    md += "|" + "---|" * len(header) + "\n" + "".join("| " + " | ".join(r) + " |\n" for r in rows)
    files = {"quality.md": md, "quality.csv": tb.to_csv(header, rows), "quality_groups.csv": tb.to_csv(*q.long_rows(groups)),
             "quality.tex": latex(header, rows, caption=q.QUALITY_TITLE)}
    for name, text in files.items():
        write_text_atomic(text, out / name)
    return Table(q.QUALITY_TITLE, header, rows, note=q.QUALITY_NOTE.replace("**", "").replace("`", ""), uses_labels=True), [
        out / n for n in files]


def run_names(paths: Sequence[str]) -> list[str]:
    """Short unique names of run directories: their paths relative to their common parent
    (``/`` as ``__``), or the directory's name for a single run."""
    if len(paths) == 1:
        return [Path(paths[0]).name]
    root = os.path.commonpath([os.path.abspath(p) for p in paths])
    return [os.path.relpath(os.path.abspath(p), root).replace(os.sep, "__") for p in paths]


def write_plots(runs: Sequence[RunResult], out: Path, tsne_points: int = 300,
                progress: bool = True) -> list[tuple[str, RunPlots]]:
    """Every run's plots under ``out/plots/<run name>/``."""
    made = []
    names = run_names([r.path for r in runs])
    for name, run in tqdm(list(zip(names, runs, strict=True)), desc="plots", unit="run", disable=not progress):
        config = json.loads((Path(run.path) / "summary.json").read_text()).get("config", {})
        made.append((name, plot_run(run.path, out / "plots" / name, q.read_metrics(run.path), config, tsne_points)))
    return made


def build_report(paths: Iterable[str | Path], out: str | Path, *, plots: bool = False, html: bool = False,
                 tsne_points: int = 300, progress: bool = True) -> list[Path]:
    """Write the report of the runs at or under ``paths`` into ``out`` (see the module
    docstring); returns the files written."""
    paths = list(paths)
    out = Path(out)
    files = tb.write_report(paths, out)
    runs = [load_run(d) for d in find_runs(paths)]
    tables = result_tables(runs)
    files += write_latex(tables, tb.selections(runs), out)
    quality, qfiles = write_quality(runs, out)
    files += qfiles
    made = write_plots(runs, out, tsne_points, progress) if (plots or html) else []
    files += [f for _, rp in made for p in rp.plots for f in (p.png, p.svg)]
    if html:
        intro = (f"{len(runs)} runs, {len({r.method for r in runs})} methods, {len({r.task for r in runs})} tasks, "
                 f"{len({r.seed for r in runs})} seed(s). Target metric ×100, mean ± std over seeds. Tables and "
                 "plots marked [uses target labels] are computed or chosen with target labels.")
        page = Page("vlda report", intro, [*tables, *([quality] if quality else [])], made)
        files.append(write_html(page, out / "report.html"))
    return files

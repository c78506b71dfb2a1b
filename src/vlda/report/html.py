"""A self-contained static HTML page: tables as ``<table>``, plots as PNG data URIs, plain CSS
in a ``<style>`` element; no script, no link to anything outside the file (it opens from disk,
offline, in any browser)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from vlda.files import write_text_atomic
from vlda.report.plots import RunPlots

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: center; }
td:first-child, th:first-child { text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.labels { color: #a00; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 0 0 1em; } figcaption { font-size: 0.9em; color: #333; }
"""


@dataclass
class Table:
    """A titled table; ``uses_labels`` marks it as computed or chosen with target labels."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""
    uses_labels: bool = False


@dataclass
class Page:
    """What one page shows: an introduction, tables, and each run's plots."""

    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    runs: list[tuple[str, RunPlots]] = field(default_factory=list)


def data_uri(png: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _table(t: Table) -> str:
    mark = ' <span class="labels">[uses target labels]</span>' if t.uses_labels else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>\n" for r in t.rows)
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return f"<h2>{escape(t.title)}{mark}</h2>\n{note}<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def _run(name: str, plots: RunPlots) -> str:
    parts = [f"<h3>{escape(name)}</h3>\n"]
    for p in plots.plots:
        alt = escape(p.title)
        parts.append(f'<figure><img src="{data_uri(p.png)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>\n')
    parts += [f'<p class="note">{escape(n)}</p>\n' for n in plots.notes]
    return "".join(parts)


def render(page: Page) -> str:
    """The page as one HTML document."""
    body = [f"<h1>{escape(page.title)}</h1>\n"]
    if page.intro:
        body.append(f"<p>{escape(page.intro)}</p>\n")
    body += [_table(t) for t in page.tables]
    if page.runs:
        body.append("<h2>Runs</h2>\n")
        body += [_run(name, plots) for name, plots in page.runs]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(page.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "".join(body) + "</body>\n</html>\n")


def write_html(page: Page, path: str | Path) -> Path:
    """Render ``page`` and write it to ``path`` atomically."""
    write_text_atomic(render(page), path)
    return Path(path)

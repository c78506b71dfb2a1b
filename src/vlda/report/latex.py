"""Tables as LaTeX (``booktabs``: ``\\toprule``/``\\midrule``/``\\bottomrule``), ready for
``\\input{}`` in a paper: first column left-aligned, the others centred; LaTeX's special
characters escaped; ``±``, ``→``, ``×`` written as math (``$\\pm$``, ``$\\to$``, ``$\\times$``)."""

from __future__ import annotations

from collections.abc import Sequence

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "→": r"$\to$", "×": r"$\times$", "−": "-", "–": "--", "—": "---",
}


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (one pass, so escapes are not escaped)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """A ``table`` environment holding a ``tabular`` of ``header`` and ``rows``; with a
    ``\\caption`` when ``caption`` is given. Needs ``\\usepackage{booktabs}``."""
    spec = "l" + "c" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(escape, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(escape, r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"

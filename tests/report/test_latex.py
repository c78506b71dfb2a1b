"""LaTeX tables: booktabs layout, special characters escaped once."""

from vlda.report.latex import escape, latex


def test_escape():
    assert escape("dann+gh_x 50% a&b #1 $") == r"dann+gh\_x 50\% a\&b \#1 \$"
    assert escape("Ar→Cl 60.0 ± 1.2") == r"Ar$\to$Cl 60.0 $\pm$ 1.2"
    assert escape("\\{}") == r"\textbackslash{}\{\}"
    assert escape("×100 – a") == r"$\times$100 -- a"


def test_latex_table():
    text = latex(["method", "Ar→Cl", "Avg"], [["dapl", "55.0 ± 2.8", "60.0"], ["source_only", "40.0", ""]],
                 caption="last step")
    lines = text.splitlines()
    assert lines[:3] == [r"\begin{table}[t]", r"\centering", r"\caption{last step}"]
    assert r"\begin{tabular}{lcc}" in lines and lines[-3:] == [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    i = lines.index(r"\toprule")
    assert lines[i + 1] == r"method & Ar$\to$Cl & Avg \\" and lines[i + 2] == r"\midrule"
    assert lines[i + 3] == r"dapl & 55.0 $\pm$ 2.8 & 60.0 \\" and lines[i + 4] == r"source\_only & 40.0 &  \\"

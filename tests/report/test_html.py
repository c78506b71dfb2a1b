"""vlda report --html: one self-contained page (tables, every image a data URI, no link to the
network), LaTeX and the quality table next to the Markdown; the page also in a real browser."""

import csv
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from report.fake_runs import write_run
from vlda.cli.main import main

pytest.importorskip("matplotlib")


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.urls, self.h2 = [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        self.urls += [v for k, v in attrs.items() if k in ("href", "src") and v and not v.startswith("data:")]
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)

    def handle_endtag(self, tag):
        self._in_h2 = False


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, seed=1, outputs=True, grads="gh")
    write_run(root, seed=2, targets=(0.6, 0.65), im=(0.5, 0.9))
    return root


def test_report_html_structure(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out), "--html", "--quiet", "--tsne-points", "20"]) == 0
    assert "validator quality" in capsys.readouterr().out
    text = (out / "report.html").read_text()
    page = Collect()
    page.feed(text)
    assert page.tags.count("table") == 4  # last, im, oracle, validator quality
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert len(page.imgs) == 5 + 1  # run 1: curves, gradients, pseudo-labels, confusion, t-SNE; run 2: curves
    assert page.urls == [] and "http://" not in text and "https://" not in text and "<script" not in text
    assert any("oracle" in h for h in page.h2) and any(h.startswith("validator quality") for h in page.h2)
    for name in ("tables.tex", "last.tex", "oracle.tex", "quality.md", "quality.csv", "quality.tex",
                 "quality_groups.csv", "plots/dapl-gh-art-clipart-1/tsne.svg"):
        assert (out / name).is_file(), name


def test_report_without_html_writes_no_plots(sweep, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out), "--quiet"]) == 0
    assert (out / "tables.tex").is_file() and not (out / "plots").exists() and not (out / "report.html").exists()
    assert main(["report", str(sweep), "--out", str(out), "--tsne-points", "1"]) == 2


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.slow
def test_report_html_in_a_headless_browser(sweep, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium: apt-get install -y chromium (see README, Development)")
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out), "--html", "--quiet", "--tsne-points", "20"]) == 0
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (out / "report.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    page = Collect()
    page.feed(dom)
    assert page.tags.count("table") == 4 and len(page.imgs) == 6
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,3000", (out / "report.html").as_uri()], capture_output=True, timeout=120,
                   check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latex_tables_keep_the_settings_each_validator_chooses(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, seed=1, lr=0.1, targets=(0.5, 0.7), im=(1.0, 0.8))  # im prefers lr 0.1 (best score 1.0)
    write_run(root, seed=1, lr=0.2, targets=(0.6, 0.9), im=(0.2, 0.3))
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--quiet"]) == 0
    with open(out / "im.csv") as f:
        rows = list(csv.reader(f))
    assert rows[1] == ["dapl", "50.0", "50.0"]  # lr 0.1's choice, step 2
    assert r"dapl & 50.0 & 50.0 \\" in (out / "im.tex").read_text()
    assert r"dapl & 90.0 & 90.0 \\" in (out / "oracle.tex").read_text()  # the oracle: lr 0.2, step 4
    with open(out / "quality_groups.csv") as f:
        im = next(r for r in csv.DictReader(f) if r["validator"] == "im")
    assert (im["chosen_step"], float(im["chosen_target_metric"]), float(im["oracle_target_metric"])) == ("2", 0.5, 0.9)

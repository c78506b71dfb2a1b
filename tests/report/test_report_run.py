"""vlda report --html on a real tiny run (DANN + GH, outputs with features): every plot is made,
and the quality table's choices and oracle are those the run itself reported."""

import csv
import json

import pytest

from vlda.cli.main import main
from vlda.config import build_config
from vlda.engine.experiment import run
from vlda.report.plots import learning_curves
from vlda.report.quality import read_metrics

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def test_report_of_a_real_run(color_data, tmp_path):
    out = tmp_path / "runs" / "dann-gh"
    run(build_config({
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32},
        "method": {"name": "dann", "bottleneck_dim": 16, "discriminator_hidden": 16},
        "gradients": {"name": "gh"},
        "train": {"steps": 6, "batch_size": 4, "eval_every": 2, "progress": False},
        "optim": {"name": "sgd", "lr": 0.01},
        "selection": {"validators": ["im", "snd"]},
        "eval": {"save_outputs": "features"},
        "output": str(out),
    }))
    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "--out", str(report), "--html", "--quiet"]) == 0
    plots = sorted(p.stem for p in (report / "plots" / "dann-gh").glob("*.png"))
    assert plots == ["confusion", "curves", "gradients", "pseudo_labels", "tsne"]
    losses = learning_curves(read_metrics(out)).axes[0].get_legend_handles_labels()[1]
    assert set(losses) == {"source_ce", "transfer", "total"}  # the real run's loss keys
    html = (report / "report.html").read_text()
    assert html.count("<img src=\"data:image/png;base64,") == 5 and "http://" not in html
    summary = json.loads((out / "summary.json").read_text())["results"]
    with open(report / "quality_groups.csv") as f:
        rows = {r["validator"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"im", "snd"}
    for name, r in rows.items():
        assert int(r["chosen_step"]) == summary["selected_by"][name]["step"]
        assert float(r["chosen_target_metric"]) == pytest.approx(summary["selected_by"][name]["target_metric"], abs=1e-6)
        assert float(r["oracle_target_metric"]) == pytest.approx(summary["oracle"]["target_metric"], abs=1e-6)
        assert int(r["evaluations"]) == 3

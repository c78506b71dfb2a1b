"""Run plots: the numbers behind them against hand computations; each plot written as PNG and
SVG; plots that need saved outputs say so when they are absent."""

import numpy as np
import pytest

from report.fake_runs import write_run
from vlda.report.plots import THRESHOLDS, confusion, learning_curves, plot_run, pseudo_label_curve
from vlda.report.quality import read_metrics

pytest.importorskip("matplotlib")


def test_pseudo_label_curve_by_hand():
    # confidences: softmax of (log 3, 0) = 0.75, of (0, log 9) = 0.9, of (0, 0) = 0.5
    logits = np.log(np.array([[3.0, 1.0], [1.0, 9.0], [1.0, 1.0]]))
    labels = np.array([0, 0, 0])  # the first and third rows are right (argmax of a tie: the first)
    share, prec = pseudo_label_curve(logits, labels, np.array([0.0, 0.6, 0.8, 0.95]))
    np.testing.assert_allclose(share, [1.0, 2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(prec, [2 / 3, 1 / 2, 0.0, np.nan])


def test_confusion_by_hand():
    m = confusion(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]


def _names(result):
    return {p.png.stem for p in result.plots}


def test_plots_of_a_run_with_outputs(tmp_path):
    run = write_run(tmp_path, grads="gh", outputs=True)
    result = plot_run(run, tmp_path / "plots", read_metrics(run), tsne_points=20)
    assert _names(result) == {"curves", "gradients", "pseudo_labels", "confusion", "tsne"}
    for p in result.plots:
        assert p.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in p.svg.read_bytes()[:2000]
    titles = {p.png.stem: p.title for p in result.plots}
    assert all("uses target labels" in titles[k] for k in ("curves", "pseudo_labels", "confusion"))
    assert result.notes == [] and 0 < THRESHOLDS[1] < THRESHOLDS[-1] < 1


def test_plots_say_what_is_missing(tmp_path):
    run = write_run(tmp_path, outputs=False)
    result = plot_run(run, tmp_path / "plots", read_metrics(run))
    assert _names(result) == {"curves"}
    assert any("gradients.name=sum" in n for n in result.notes)
    assert any("eval.save_outputs" in n for n in result.notes)
    run = write_run(tmp_path / "nofeat", outputs=True, features=False)
    result = plot_run(run, tmp_path / "plots2", read_metrics(run))
    assert _names(result) == {"curves", "pseudo_labels", "confusion"} and any("no t-SNE" in n for n in result.notes)


def test_learning_curves_plot_the_losses_and_every_validator(tmp_path):
    fig = learning_curves(read_metrics(write_run(tmp_path)))
    labels = [ax.get_legend_handles_labels()[1] for ax in fig.axes]
    assert labels == [["source_ce"], ["source-val acc", "target metric (uses target labels)"], ["im", "source_val_acc"]]
    ys = fig.axes[2].lines[0].get_ydata().tolist()  # im (1.0, 0.8) min-max scaled
    assert ys == [1.0, 0.0]

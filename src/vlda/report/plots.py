"""Plots of one run (matplotlib, Agg backend; each written as PNG and SVG).

From ``metrics.jsonl`` (always there):

* learning curves — the training losses (``train/loss/<name>``, ``train/loss/total``), source-validation and target
  metric (the target curve **uses target labels**), and each validator's score (min–max scaled
  per validator so that they share an axis; higher is better for every one);
* gradient diagnostics of GH / GH++ / PCGrad / PGA runs — ``train/grad/cos`` (mean cosine
  between the objectives' gradients) and ``train/grad/conflict`` (conflict rate: the share of
  steps, or sources, with cosine < 0), when logged.

From saved outputs (``eval.save_outputs``; said so when absent), all **using target labels**
except the t-SNE:

* pseudo-label share and precision against the confidence threshold ``τ`` on ``target_eval``:
  ``share(τ) = |{i: max_k p_ik ≥ τ}| / N``, ``precision(τ)`` = accuracy on those rows;
* confusion matrix (rows: true class, normalised per row) and per-class accuracy, at the last
  evaluation;
* t-SNE (scikit-learn) of source-validation and target features at the first and the last
  evaluation (a seeded subsample of each domain; needs ``eval.save_outputs: features``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlda.files import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vlda.selection.outputs import SplitOutputs

LABELS = " (uses target labels)"
THRESHOLDS = np.round(np.linspace(0.0, 0.99, 34), 4)


@dataclass
class Plot:
    """A written plot: its title (for people), its PNG and SVG files."""

    title: str
    png: Path
    svg: Path


@dataclass
class RunPlots:
    """What :func:`plot_run` made, and what it could not make and why (``notes``)."""

    run: Path
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _figure(n_axes: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_axes, height), layout="constrained")
    axes = fig.subplots(1, n_axes, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, stem: Path, title: str) -> Plot:
    """Write ``fig`` to ``stem.png`` and ``stem.svg`` (atomically) and return the :class:`Plot`."""
    files = {}
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=100, metadata={"Date": None} if ext == "svg" else None)
        write_bytes_atomic(buf.getvalue(), stem.with_suffix(f".{ext}"))
        files[ext] = stem.with_suffix(f".{ext}")
    return Plot(title, files["png"], files["svg"])


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in history if isinstance(r.get(key), int | float)]
    return [s for s, _ in pts], [v for _, v in pts]


def _keys(history: Sequence[Mapping[str, Any]], pattern: str) -> list[str]:
    return list(dict.fromkeys(k for r in history for k in r if re.fullmatch(pattern, k)))


def learning_curves(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Losses, accuracies and validator scores against the step (see the module docstring)."""
    fig, (loss_ax, acc_ax, val_ax) = _figure(3)
    for key in _keys(history, r"train/loss/.+"):
        loss_ax.plot(*_series(history, key), marker=".", label=key.removeprefix("train/loss/"))
    loss_ax.set(title="training losses", xlabel="step")
    for key, label in (("source_val/acc", "source-val acc"), ("target/metric", "target metric" + LABELS)):
        acc_ax.plot(*_series(history, key), marker=".", label=label)
    acc_ax.set(title="accuracy (target curve" + LABELS + ")", xlabel="step")
    for key in _keys(history, r"validator/.+"):
        steps, vals = _series(history, key)
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 0.0)
        scaled = [0.5 if hi == lo else (v - lo) / (hi - lo) for v in vals]
        val_ax.plot(steps, scaled, marker=".", label=key.removeprefix("validator/"))
    val_ax.set(title="validator scores (min–max scaled, no labels)", xlabel="step")
    for ax in (loss_ax, acc_ax, val_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    return fig


def gradient_curves(history: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Gradient cosine and conflict rate against the step, or ``None`` when not logged."""
    cos, conflict = _series(history, "train/grad/cos"), _series(history, "train/grad/conflict")
    if not cos[0] and not conflict[0]:
        return None
    fig, (c_ax, k_ax) = _figure(2)
    c_ax.plot(*cos, marker=".")
    c_ax.axhline(0.0, color="grey", lw=0.8)
    c_ax.set(title="gradient cosine between objectives", xlabel="step", ylim=(-1.05, 1.05))
    k_ax.plot(*conflict, marker=".", color="C3")
    k_ax.set(title="conflict rate (cos < 0)", xlabel="step", ylim=(-0.05, 1.05))
    return fig


def _probs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pseudo_label_curve(logits: np.ndarray, labels: np.ndarray, thresholds: np.ndarray = THRESHOLDS
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``share(τ)`` and ``precision(τ)`` for each threshold (``nan`` where no row passes)."""
    p = _probs(logits.astype(np.float64))
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    share = np.array([(conf >= t).mean() for t in thresholds])
    prec = np.array([(pred[conf >= t] == labels[conf >= t]).mean() if (conf >= t).any() else np.nan
                     for t in thresholds])
    return share, prec


def pseudo_label_plot(logits: np.ndarray, labels: np.ndarray) -> Figure:
    share, prec = pseudo_label_curve(logits, labels)
    fig, (ax,) = _figure(1, width=5.0)
    ax.plot(THRESHOLDS, share, label="share of target rows with confidence ≥ τ")
    ax.plot(THRESHOLDS, prec, label="precision of their pseudo-labels")
    ax.set(title="pseudo-labels vs confidence" + LABELS, xlabel="confidence threshold τ", ylim=(-0.02, 1.02))
    ax.legend(fontsize="x-small")
    return fig


def confusion(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows the true class, columns the prediction."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (labels, pred), 1)
    return m


def confusion_plot(logits: np.ndarray, labels: np.ndarray, classnames: Sequence[str] | None) -> Figure:
    n = logits.shape[1]
    m = confusion(logits.argmax(axis=1), labels, n)
    per_class = np.divide(np.diag(m), m.sum(axis=1), out=np.full(n, np.nan), where=m.sum(axis=1) > 0)
    rows = np.divide(m, m.sum(axis=1, keepdims=True), out=np.zeros(m.shape), where=m.sum(axis=1, keepdims=True) > 0)
    fig, (cm_ax, pc_ax) = _figure(2, width=4.8, height=4.2)
    im = cm_ax.imshow(rows, vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(im, ax=cm_ax, shrink=0.8)
    cm_ax.set(title="target confusion matrix" + LABELS, xlabel="predicted", ylabel="true")
    pc_ax.bar(np.arange(n), per_class)
    pc_ax.set(title="per-class target accuracy" + LABELS, ylim=(0.0, 1.02))
    if n <= 20:  # class names (or indices) on the axes; more would not be legible
        names = list(classnames) if classnames is not None and len(classnames) == n else [str(i) for i in range(n)]
        for ax in (cm_ax, pc_ax):
            ax.set_xticks(np.arange(n), names, rotation=90, fontsize="x-small")
        cm_ax.set_yticks(np.arange(n), names, fontsize="x-small")
    return fig


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def tsne_plot(views: Sequence[tuple[str, np.ndarray, np.ndarray]], points: int = 300, seed: int = 0) -> Figure:
    """``views``: ``(title, source features [Ns, D], target features [Nt, D])``; each panel a
    t-SNE of at most ``points`` rows of each domain (the same seeded subsample). Runs on one
    thread: on a few hundred rows OpenMP's threads cost more than they save (10× slower on a
    busy machine)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    fig, axes = _figure(len(views), width=4.0, height=3.8)
    for ax, (title, src, tgt) in zip(axes, views, strict=True):
        rng = np.random.default_rng(seed)
        s, t = _subsample(src, points, rng), _subsample(tgt, points, rng)
        x = np.concatenate([s, t]).astype(np.float64)
        tsne = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca", random_state=seed)
        with threadpool_limits(1):
            emb = tsne.fit_transform(x)
        ax.scatter(*emb[: len(s)].T, s=6, alpha=0.6, label="source (val)")
        ax.scatter(*emb[len(s):].T, s=6, alpha=0.6, label="target")
        ax.set(title=title, xticks=[], yticks=[])
        ax.legend(fontsize="x-small")
    return fig


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def _outputs_plots(run: Path, out: Path, result: RunPlots, classnames: Sequence[str] | None,
                   tsne_points: int) -> None:
    from vlda.selection.outputs import load_outputs

    files = sorted((run / "outputs").glob("step_*.pt"))
    if not files:
        result.notes.append("no saved outputs (train with eval.save_outputs=logits or features): "
                            "no pseudo-label, confusion-matrix or t-SNE plots")
        return
    first, last = load_outputs(files[0]), load_outputs(files[-1])
    step = int(files[-1].stem.split("_")[-1])
    ev = last.get("target_eval")
    if ev is None or ev.labels is None or len(ev) == 0:
        result.notes.append("the saved outputs hold no labelled target_eval split: no pseudo-label or confusion plots")
    else:
        logits, labels = _np(ev.logits), _np(ev.labels)
        fig = pseudo_label_plot(logits, labels)
        result.plots.append(save(fig, out / "pseudo_labels", f"pseudo-label share and precision vs confidence, step {step}" + LABELS))
        fig = confusion_plot(logits, labels, classnames)
        result.plots.append(save(fig, out / "confusion", f"confusion matrix and per-class accuracy, step {step}" + LABELS))
    _tsne(files, first, last, out, result, tsne_points)


def _features(outs: Mapping[str, SplitOutputs]) -> tuple[np.ndarray, np.ndarray] | None:
    src, tgt = outs.get("source_val"), outs.get("target_eval")
    if src is None or tgt is None or src.features is None or tgt.features is None or not len(src) or not len(tgt):
        return None
    return _np(src.features), _np(tgt.features)


def _tsne(files: Sequence[Path], first: Mapping[str, SplitOutputs], last: Mapping[str, SplitOutputs],
          out: Path, result: RunPlots, points: int) -> None:
    a, b = _features(first), _features(last)
    if a is None or b is None:
        result.notes.append("no source-validation and target features saved (eval.save_outputs=features "
                            "and data.source_val_fraction > 0): no t-SNE")
        return
    steps = [int(f.stem.split("_")[-1]) for f in (files[0], files[-1])]
    views = [(f"features, first evaluation (step {steps[0]})", *a), (f"features, last evaluation (step {steps[1]})", *b)]
    result.plots.append(save(tsne_plot(views, points), out / "tsne",
                             f"t-SNE of source and target features, steps {steps[0]} and {steps[1]} (no labels)"))


def classnames_of(config: Mapping[str, Any]) -> list[str] | None:
    """The class names of a run's benchmark, or ``None`` (a custom folder: the indices)."""
    bench = config.get("data", {}).get("benchmark")
    if not bench:
        return None
    from vlda.data.benchmarks import get_benchmark

    return list(get_benchmark(bench).classnames)


def plot_run(run: str | Path, out: str | Path, history: Sequence[Mapping[str, Any]],
             config: Mapping[str, Any] | None = None, tsne_points: int = 300) -> RunPlots:
    """Every plot of ``run`` that its files allow, written under ``out``; see the module
    docstring. ``history`` is its ``metrics.jsonl``."""
    run, out = Path(run), Path(out)
    result = RunPlots(run)
    if not history:
        result.notes.append("no evaluations in metrics.jsonl: no curves")
        return result
    result.plots.append(save(learning_curves(history), out / "curves",
                             "learning curves (the target curve uses target labels)"))
    grad = gradient_curves(history)
    if grad is None:
        result.notes.append("no gradient diagnostics logged (gradients.name=sum): no gradient plot")
    else:
        result.plots.append(save(grad, out / "gradients", "gradient cosine and conflict rate"))
    _outputs_plots(run, out, result, classnames_of(config or {}), tsne_points)
    return result


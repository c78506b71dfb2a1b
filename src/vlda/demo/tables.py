"""The demo's rows over seeds: per-seed values -> mean ± std, and the printed tables.

A *row* is one method of the demo; each seed's run gives the row's per-seed values (target
accuracy at the last, the selected and the oracle evaluation, source-validation accuracy, each
validator's choice, seconds). :func:`aggregate` turns them into one row whose entries are the
means over seeds, with ``std`` holding the sample standard deviation (``n - 1`` in the
denominator, as :mod:`vlda.report.tables`; ``None`` with one seed) and ``per_seed`` the values
themselves.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# Per-seed values averaged into a row (``None`` values, e.g. a missing source accuracy, stay None).
MEAN_KEYS = (
    "target_acc_last", "target_acc_selected", "target_acc_oracle", "source_acc", "seconds",
    "cpu_seconds", "conflict_rate", "artefact_bytes", "dense_bytes", "encoder_changed_pct",
)
ACC_KEYS = ("target_acc_last", "target_acc_selected", "target_acc_oracle", "source_acc")


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, sample std)`` of ``values``; the std is ``None`` for a single value."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(method: str, per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One table row from the per-seed rows of ``method`` (each with a ``seed``).

    Returns ``{"method", "seeds", <key>: mean, "std": {<key>: std}, "selected_by": {validator:
    mean}, "selected_by_std": {validator: std}, "per_seed": [...]}`` for every key of
    :data:`MEAN_KEYS` that every seed has."""
    row: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in per_seed], "std": {}}
    for key in MEAN_KEYS:
        vals = [r.get(key) for r in per_seed]
        if any(v is None for v in vals):
            if key in ACC_KEYS:
                row[key] = None
            continue
        row[key], row["std"][key] = mean_std([float(v) for v in vals if v is not None])
    names = [n for n in per_seed[0].get("selected_by", {}) if all(n in r.get("selected_by", {}) for r in per_seed)]
    row["selected_by"], row["selected_by_std"] = {}, {}
    for name in names:
        row["selected_by"][name], row["selected_by_std"][name] = mean_std([r["selected_by"][name] for r in per_seed])
    row["per_seed"] = list(per_seed)
    return row


def cell(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.785 ± 0.004``; the mean alone without a std; ``-`` without a value."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _seeds_line(rows: Sequence[dict[str, Any]]) -> str:
    counts = sorted({len(r.get("seeds", [0])) for r in rows})
    if counts == [1]:
        return "one seed per row (run with --seeds N for mean ± std over N seeds)."
    return "mean ± std (sample) over each row's seeds; rows without training run once."


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Target accuracy last / selected / oracle, source accuracy and seconds per seed run."""
    w = 15
    head = (f"{'method':<11} {'target last':>{w}} {'target selected':>{w}} {'target oracle*':>{w}} "
            f"{'source':>{w}} {'s/run':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        std = r.get("std", {})
        cells = [cell(r[k], std.get(k)) for k in ACC_KEYS]
        secs = f"{r['seconds']:.0f}" if r.get("seconds") is not None else "-"
        lines.append(f"{r['method']:<11} " + " ".join(f"{c:>{w}}" for c in cells) + f" {secs:>6}")
    for r in rows:
        if "artefact_bytes" in r:
            lines.append(
                f"{r['method']}: artefact {r['artefact_bytes'] / 1e3:.1f} kB against {r['dense_bytes'] / 1e3:.1f} kB "
                f"dense ({r['encoder_changed_pct']:.3f}% of the encoder's weights kept)"
            )
    lines.append(_seeds_line(rows))
    lines.append("* oracle = best step chosen with target labels; for comparison with papers only.")
    lines.append("selected = step with the best source-validation accuracy (no target labels).")
    return "\n".join(lines)


def format_validators(rows: Sequence[dict[str, Any]]) -> str:
    """Target accuracy of the evaluation each validator selects (mean ± std over seeds)."""
    names = sorted({v for r in rows for v in r.get("selected_by", {})}, key=lambda n: (n != "source_val_acc", n))
    head = f"{'method':<11} " + " ".join(f"{n:>18}" for n in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        picks, stds = r.get("selected_by", {}), r.get("selected_by_std", {})
        lines.append(f"{r['method']:<11} " + " ".join(
            f"{cell(picks[n], stds.get(n)):>18}" if n in picks else f"{'-':>18}" for n in names))
    return "\n".join(lines)


def format_times(rows: Sequence[dict[str, Any]], wall_s: float, workers: int, threads: int) -> str:
    """Per row: runs, wall seconds and CPU seconds per run (mean), and the demo's wall time."""
    head = f"{'method':<11} {'runs':>5} {'s/run':>7} {'cpu s/run':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cpu = f"{r['cpu_seconds']:.1f}" if r.get("cpu_seconds") is not None else "-"
        lines.append(f"{r['method']:<11} {len(r.get('seeds', [0])):>5} {r['seconds']:>7.1f} {cpu:>10}")
    lines.append(f"demo wall time {wall_s:.0f} s ({workers} worker process(es) x {threads} thread(s))")
    return "\n".join(lines)

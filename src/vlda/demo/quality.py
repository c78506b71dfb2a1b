"""How good is the demo's stand-in CLIP? Zero-shot accuracy, confidence, probe, style-awareness.

``python -m vlda.demo.quality [--model-dir DIR] [--data-root DIR]`` prints the table (defaults:
the cached demo assets, built if missing). What is measured, and how, is in
:mod:`vlda.demo.measure` (whose names this module also offers).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlda.demo.assets import ensure_demo_assets
from vlda.demo.measure import (
    CLUSTER_VOTE_K,
    CLUSTER_VOTE_RUNS,
    DIGIT_WORDS,
    TAUS,
    ZERO_SHOT_TEMPLATE,
    assess_model,
    confidence_table,
    load_domain,
)
from vlda.models.loading import load_open_clip_dir

if TYPE_CHECKING:
    from open_clip.model import CLIP

__all__ = [
    "DIGIT_WORDS",
    "TAUS",
    "ZERO_SHOT_TEMPLATE",
    "assess_demo_model",
    "assess_model",
    "confidence_table",
    "format_report",
    "load_demo_model",
    "load_domain",
]


def load_demo_model(model_dir: Path) -> tuple[CLIP, dict]:
    """The ``open_clip.model.CLIP`` saved in ``model_dir`` (in eval mode, frozen) and its
    ``open_clip_config.json``; loaded by :func:`vlda.models.loading.load_open_clip_dir`."""
    backbone = load_open_clip_dir(Path(model_dir))
    cfg = json.loads((Path(model_dir) / "open_clip_config.json").read_text())
    return backbone.model, cfg


def assess_demo_model(model_dir: Path, data_root: Path) -> dict:
    """Quality numbers of the demo model in ``model_dir`` on the benchmark under ``data_root``."""
    backbone = load_open_clip_dir(Path(model_dir))
    return assess_model(backbone.model, data_root, backbone.mean, backbone.std)


def format_report(q: dict) -> str:
    """A plain-text table of :func:`assess_model`'s numbers."""

    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    lines = [
        f"zero-shot ({q['template']!r}, logit scale {q['logit_scale']:.1f})",
        f"  source accuracy {pct(q['zero_shot_source'])}   target accuracy "
        f"{pct(q['zero_shot_target'])}",
    ]
    if q.get("probe_target") is not None:
        lines.append(f"  linear probe on frozen target features (5-fold) {pct(q['probe_target'])}")
    if q.get("pl_student_target") is not None:
        lines.append(f"  logistic regression on the pseudo-labels >= 0.5 {pct(q['pl_student_target'])}")
    if q.get("cluster_zero_shot_label_target") is not None:
        lines.append(f"  {CLUSTER_VOTE_K} k-means clusters, each with its majority zero-shot label "
                     f"(mean of {CLUSTER_VOTE_RUNS} runs) {pct(q['cluster_zero_shot_label_target'])}")
    if q.get("target_wrong_confident_share") is not None:
        lines.append("  wrong target predictions with confidence >= 0.9 "
                     f"{pct(q['target_wrong_confident_share'])}")
    if "template_cosine" in q:
        cos = ", ".join(f"{k} {v:.3f}" for k, v in q["template_cosine"].items())
        lines.append(f"  template cosine (class embeddings, plain vs domain word): {cos}")
        lines.append(f"  text shift vs image shift: cosine {q['text_image_shift_cos']:.3f} "
                     f"(text shift norm {q['text_shift_norm']:.3f}, image shift consistency "
                     f"{q['image_shift_consistency']:.2f})")
    if q.get("prompt_ceiling_target") is not None:
        lines.append("  target-label prompt ceiling (diagnostic) "
                     f"{pct(q['prompt_ceiling_target'])}")
    lines.append("  target pseudo-labels by confidence:")
    lines.append("    tau   above   prec>=tau  prec<tau")
    for row in q["confidence"]:
        lines.append(
            f"    {row['tau']:.1f}  {pct(row['frac_above'])}   {pct(row['prec_above'])}    "
            f"{pct(row['prec_below'])}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the quality table of the (cached) demo model."""
    parser = argparse.ArgumentParser(prog="python -m vlda.demo.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.model_dir is None or args.data_root is None:
        assets = ensure_demo_assets()
        args.model_dir = args.model_dir or assets.model_dir
        args.data_root = args.data_root or assets.data_root
    q = assess_demo_model(args.model_dir, args.data_root)
    print(json.dumps(q, indent=1) if args.json else format_report(q))


if __name__ == "__main__":
    main()

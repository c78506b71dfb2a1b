"""Hand-made run directories for the report tests: summary.json, metrics.jsonl and (optionally)
saved outputs, in the formats a finished run writes."""

import json

import torch

from vlda.files import save_torch_atomic
from vlda.selection.outputs import SplitOutputs, pack_outputs


def write_run(root, method="dapl", source="art", target="clipart", seed=1, grads="sum", steps=(2, 4),
              targets=(0.5, 0.7), im=(1.0, 0.8), outputs=False, features=True, n=40, classes=3, lr=None):
    """A finished run: one evaluation per step (target metric ``targets``, validator ``im``);
    with ``outputs``, outputs/step_XXXXXXX.pt per step (features when ``features``)."""
    d = root / (f"{method}-{grads}-{source}-{target}-{seed}" + (f"-lr{lr}" if lr else ""))
    d.mkdir(parents=True)
    recs = []
    for i, step in enumerate(steps):
        rec = {"step": step, "target/acc": targets[i], "target/metric": targets[i], "source_val/acc": 0.9,
               "validator/im": im[i], "validator/source_val_acc": 0.9, "train/loss/source_ce": 1.0 / step, "train/grl_coeff": 0.5}
        if grads != "sum":
            rec.update({"train/grad/cos": 0.5 - 0.2 * i, "train/grad/conflict": 0.1 * i})
        recs.append(rec)
        if outputs:
            g = torch.Generator().manual_seed(step)
            labels = torch.arange(n) % classes
            logits = torch.randn(n, classes, generator=g) + 2 * torch.nn.functional.one_hot(labels, classes)
            feats = torch.randn(n, 8, generator=g) if features else None
            outs = {"source_val": SplitOutputs(logits.clone(), labels, feats),
                    "target_eval": SplitOutputs(logits, labels, None if feats is None else feats + 1)}
            outs["target_train"] = outs["target_eval"]
            save_torch_atomic(pack_outputs(outs, torch.float32), d / "outputs" / f"step_{step:07d}.pt")
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = lambda r, how: {"step": r["step"], "target_metric": r["target/metric"], "target_acc": r["target/acc"], "chosen_by": how}  # noqa: E731
    best_im = max(recs, key=lambda r: r["validator/im"])
    selected_by = {"im": {**res(best_im, "im"), "validator": "im"}}
    summary = {
        "config": {"data": {"benchmark": "officehome", "source": [source], "target": target},
                   "method": {"name": method}, "gradients": {"name": grads}, "train": {"seed": seed}, **({"optim": {"lr": lr}} if lr else {})},
        "results": {"last": res(recs[-1], "last step"), "selected": selected_by["im"], "selected_by": selected_by,
                    "oracle": res(max(recs, key=lambda r: r["target/metric"]), "ORACLE")},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return d

"""Evaluation: a method's outputs on each split, and the scores computed from them.

:meth:`Evaluator.outputs` returns, per split, the logits (and, if asked, the features) as
:class:`~vlda.selection.outputs.SplitOutputs`; :meth:`Evaluator.record` turns them into one
``metrics.jsonl`` record: target accuracy and mean per-class accuracy (the headline metric of
the benchmark as ``target/metric``), source-validation accuracy, and the score of every
configured validator (``validator/<name>``, computed without target labels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from vlda.data.dataset import BadImageLog
from vlda.engine.metrics import accuracy, mean_class_accuracy
from vlda.engine.streams import Source, eval_batches
from vlda.methods.base import Method
from vlda.selection.outputs import SplitOutputs
from vlda.selection.summary import validator_key
from vlda.selection.validators import Validator

Autocast = Callable[[], contextlib.AbstractContextManager]


def _same(a: Sequence[Source] | None, b: Sequence[Source] | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class Evaluator:
    """Runs a method over evaluation splits.

    Args:
        method: the model (put in eval mode while evaluating, then back in train mode).
        splits: split name -> the sources it is made of (``source_val``: one per source
            domain; ``target_train``, ``target_eval``: one each). ``target_train`` may be the
            same :class:`Source` as ``target_eval`` (transductive runs); it is then computed once.
        batch_size, num_workers, bad_log, device, autocast: as the trainer's.
    """

    def __init__(
        self,
        method: Method,
        splits: Mapping[str, Sequence[Source]],
        batch_size: int = 256,
        num_workers: int = 0,
        bad_log: BadImageLog | None = None,
        device: torch.device | str = "cpu",
        autocast: Autocast | None = None,
    ) -> None:
        self.method = method
        self.splits = {k: list(v) for k, v in splits.items()}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.bad_log = bad_log
        self.device = torch.device(device)
        self.autocast: Autocast = autocast or contextlib.nullcontext

    def has(self, split: str) -> bool:
        return sum(len(s.pool) for s in self.splits.get(split, [])) > 0

    @torch.no_grad()
    def _run(self, sources: Sequence[Source], features: bool) -> SplitOutputs:
        logits, labels, feats = [], [], []
        for s in sources:
            for batch in eval_batches(s, self.batch_size, self.num_workers, self.bad_log):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.autocast():
                    f = self.method.image_features(batch)
                    z = self.method.logits(f)
                logits.append(z.float().cpu())
                labels.append(batch["labels"].cpu())
                if features:
                    feats.append(f.float().cpu())
        if not logits:
            n_cls = self.method.task.n_classes
            empty = torch.empty(0, dtype=torch.long)
            return SplitOutputs(torch.empty(0, n_cls), empty, torch.empty(0, 0) if features else None)
        return SplitOutputs(torch.cat(logits), torch.cat(labels), torch.cat(feats) if features else None)

    def outputs(self, names: Sequence[str], features: bool = False) -> dict[str, SplitOutputs]:
        """Outputs of the named splits (``target_train`` without labels)."""
        was_training = self.method.training
        self.method.eval()
        out: dict[str, SplitOutputs] = {}
        try:
            for name in names:
                same = name == "target_train" and _same(self.splits.get(name), self.splits.get("target_eval"))
                if same and "target_eval" in out:
                    out[name] = out["target_eval"]
                elif self.has(name):
                    out[name] = self._run(self.splits[name], features)
            if "target_train" in out:
                out["target_train"] = out["target_train"].unlabelled()
        finally:
            self.method.train(was_training)
        return out

    def needed(self, validators: Sequence[Validator], all_splits: bool = False) -> list[str]:
        """The splits an evaluation must compute: the target, the source validation, and what
        the validators read (every split when ``all_splits``)."""
        names = ["target_eval", "source_val"]
        extra = ["target_train"] if all_splits else [s for v in validators for s in v.needs]
        return [*names, *(s for s in dict.fromkeys(extra) if s not in names)]

    def record(
        self, outputs: Mapping[str, SplitOutputs], validators: Sequence[Validator], headline: str
    ) -> dict[str, Any]:
        """Scores of one evaluation (the keys of a ``metrics.jsonl`` line)."""
        tgt = outputs["target_eval"]
        n_cls = self.method.task.n_classes
        pred = tgt.logits.argmax(dim=-1)
        assert tgt.labels is not None
        rec: dict[str, Any] = {
            "target/acc": accuracy(pred, tgt.labels),
            "target/mean_class_acc": mean_class_accuracy(pred, tgt.labels, n_cls),
        }
        rec["target/metric"] = rec["target/mean_class_acc" if headline == "mean_class_accuracy" else "target/acc"]
        val = outputs.get("source_val")
        if val is not None and len(val) and val.labels is not None:
            rec["source_val/acc"] = accuracy(val.logits.argmax(dim=-1), val.labels)
        for v in validators:
            score = v.score(outputs)
            if score is not None:
                rec[validator_key(v.name)] = score
        return rec

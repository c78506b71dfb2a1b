"""Evaluation: a method's outputs on each split, and the scores computed from them.

:meth:`Evaluator.outputs` returns, per split, the logits (and, if asked, the features) as
:class:`~vlda.selection.outputs.SplitOutputs`; :meth:`Evaluator.record` turns them into one
``metrics.jsonl`` record: target accuracy and mean per-class accuracy (the headline metric of
the benchmark as ``target/metric``), source-validation accuracy, and the score of every
configured validator (``validator/<name>``, computed without target labels).

:meth:`Evaluator.prepare_zeroshot` computes, once per run and before any training step, the
logits zero-shot CLIP gives the ``target_train`` images (the ``target_zeroshot`` outputs that
the ``zeroshot_agreement`` validator compares with): from the pretrained backbone, through the
prompt ``"a photo of a {}."``. For a frozen image encoder this reuses the cached features; for
a method that fine-tunes its encoder it must run before the first step (and before a resumed
run loads its weights), which the trainer does.

In a data-parallel run each process evaluates a contiguous shard of every source's pool
(:func:`vlda.distributed.shard_range`) and each source's shards are gathered in rank order
(:func:`vlda.distributed.gather_rows`) before the next source's, so every process holds the outputs of the whole split, in
the order one process computes them, and validators and selection see the whole target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from vlda import distributed as D
from vlda.data.dataset import BadImageLog
from vlda.engine.metrics import accuracy, mean_class_accuracy
from vlda.engine.streams import Source, eval_batches
from vlda.methods.base import Method
from vlda.methods.zeroshot import zero_shot_classifier
from vlda.models.backbone import VisionLanguageBackbone
from vlda.selection.outputs import SPLITS, ZEROSHOT, SplitOutputs
from vlda.selection.summary import validator_key
from vlda.selection.validators import Validator

Autocast = Callable[[], contextlib.AbstractContextManager]
ZEROSHOT_TEMPLATE = "a photo of a {}."


def feature_splits(validators: Sequence[Validator]) -> set[str]:
    """The splits whose features some validator reads."""
    return {s for v in validators for s in v.needs_features}


def _shard(source: Source) -> Source:
    """This process's contiguous shard of ``source``'s pool (the whole pool in one process)."""
    if not D.initialised():
        return source
    mine = D.shard_range(len(source.pool))
    return replace(source, pool=source.pool[mine.start : mine.stop])


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
        self.zeroshot: SplitOutputs | None = None

    def has(self, split: str) -> bool:
        return sum(len(s.pool) for s in self.splits.get(split, [])) > 0

    @torch.no_grad()
    def _run(self, sources: Sequence[Source], features: bool) -> SplitOutputs:
        """The split's outputs, source after source (each source's shards gathered in order)."""
        parts = [p for p in (self._run_source(s, features) for s in sources) if len(p.logits)]
        if not parts:
            n_cls = self.method.task.n_classes
            empty = torch.empty(0, dtype=torch.long)
            return SplitOutputs(torch.empty(0, n_cls), empty, torch.empty(0, 0) if features else None)
        feats = torch.cat([p.features for p in parts if p.features is not None]) if features else None
        return SplitOutputs(torch.cat([p.logits for p in parts]), torch.cat([p.labels for p in parts if p.labels is not None]), feats)

    def _run_source(self, source: Source, features: bool) -> SplitOutputs:
        """One source's outputs: this process's shard, gathered from every process."""
        logits, labels, feats = [], [], []
        for batch in eval_batches(_shard(source), self.batch_size, self.num_workers, self.bad_log):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast():
                f = self.method.image_features(batch)
                z = self.method.logits(f)
            logits.append(z.float().cpu())
            labels.append(batch["labels"].cpu())
            if features:
                feats.append(f.float().cpu())
        return self._gathered(logits, labels, feats if features else None)

    def _gathered(self, logits: list[torch.Tensor], labels: list[torch.Tensor], feats: list[torch.Tensor] | None) -> SplitOutputs:
        """This process's rows (every process's, gathered in rank order, in a distributed run)."""
        all_logits = torch.cat(logits) if logits else torch.empty(0, self.method.task.n_classes)
        all_labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
        all_feats = None if feats is None else (torch.cat(feats) if feats else torch.empty(0, 0))
        if D.initialised():
            all_logits, all_labels = D.gather_rows(all_logits), D.gather_rows(all_labels)
            if all_feats is not None:  # a process without rows agrees on the width first
                width = max(int(w) for w in D.gather_objects(all_feats.shape[1] if len(all_feats) else 0))
                all_feats = D.gather_rows(all_feats if len(all_feats) else all_feats.new_zeros((0, width)))
        return SplitOutputs(all_logits, all_labels, all_feats)

    def _wants_features(self, name: str, features: bool | Collection[str]) -> bool:
        if isinstance(features, bool):
            return features
        return name in features or (
            name == "target_eval" and "target_train" in features
            and _same(self.splits.get("target_train"), self.splits.get("target_eval"))
        )

    def outputs(self, names: Sequence[str], features: bool | Collection[str] = False) -> dict[str, SplitOutputs]:
        """Outputs of the named splits (``target_train`` without labels); ``features``: for
        every split (``True``) or for the named ones. ``target_zeroshot`` is included when
        named and :meth:`prepare_zeroshot` computed it."""
        was_training = self.method.training
        self.method.eval()
        out: dict[str, SplitOutputs] = {}
        try:
            for name in names:
                same = name == "target_train" and _same(self.splits.get(name), self.splits.get("target_eval"))
                if same and "target_eval" in out:
                    out[name] = out["target_eval"]
                elif name in SPLITS and self.has(name):
                    out[name] = self._run(self.splits[name], self._wants_features(name, features))
            if "target_train" in out:
                out["target_train"] = out["target_train"].unlabelled()
        finally:
            self.method.train(was_training)
        if ZEROSHOT in names and self.zeroshot is not None:
            out[ZEROSHOT] = self.zeroshot
        return out

    @torch.no_grad()
    def prepare_zeroshot(self) -> SplitOutputs | None:
        """Zero-shot CLIP's logits of the ``target_train`` images, ``[N, C]`` in the rows and
        order of the ``target_train`` outputs: ``logit_scale · normalize(g(x)) · Wᵀ``, ``g`` the
        backbone's image encoder *as it is now* (call this before training; the method's
        :meth:`~vlda.methods.base.Method.pretrained_image_features`), ``W`` the
        normalised text features of ``"a photo of a {classname}."``. ``None`` when the backbone
        has no text encoder (image classifiers) or there is no ``target_train`` split."""
        backbone = self.method.backbone
        if not isinstance(backbone, VisionLanguageBackbone) or not self.has("target_train"):
            return None
        was_training = backbone.training
        backbone.eval()
        try:
            weights = zero_shot_classifier(backbone, self.method.task.prompt_names, (ZEROSHOT_TEMPLATE,)).float()
            n_cls = self.method.task.n_classes
            logits = []
            for source in self.splits["target_train"]:  # each source's shards gathered in order
                mine = []
                for batch in eval_batches(_shard(source), self.batch_size, self.num_workers, None):
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    with self.autocast():
                        f = self.method.pretrained_image_features(batch)
                    f = nn.functional.normalize(f.float(), dim=-1)
                    mine.append((backbone.logit_scale * f @ weights.t()).cpu())
                logits.append(D.gather_rows(torch.cat(mine) if mine else torch.empty(0, n_cls)))
        finally:
            backbone.train(was_training)
        self.zeroshot = SplitOutputs(torch.cat(logits) if logits else torch.empty(0, n_cls))
        return self.zeroshot

    def needed(self, validators: Sequence[Validator], all_splits: bool = False) -> list[str]:
        """The splits an evaluation must compute: the target, the source validation, and what
        the validators read (every split, and the zero-shot reference, when ``all_splits``)."""
        names = ["target_eval", "source_val"]
        extra = [*SPLITS, ZEROSHOT] if all_splits else [s for v in validators for s in v.needs]
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

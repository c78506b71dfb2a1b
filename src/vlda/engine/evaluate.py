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


def _gathered(logits: torch.Tensor, labels: torch.Tensor, feats: torch.Tensor | None, ends: Sequence[int]) -> SplitOutputs:
    """Every process's rows of each source (this process's rows ``[ends[i-1], ends[i])``),
    gathered in rank order, source after source."""
    parts: list[list[torch.Tensor]] = [[], [], []]
    start = 0
    for end in ends:
        parts[0].append(D.gather_rows(logits[start:end]))
        parts[1].append(D.gather_rows(labels[start:end]))
        if feats is not None:  # a process without rows agrees on the width first
            mine = feats[start:end]
            width = max(int(w) for w in D.gather_objects(mine.shape[1] if len(mine) else 0))
            parts[2].append(D.gather_rows(mine if len(mine) else mine.new_zeros((0, width))))
        start = end
    return SplitOutputs(torch.cat(parts[0]), torch.cat(parts[1]), torch.cat(parts[2]) if feats is not None else None)


class _Rows:
    """One output of a split (``[N, ...]``, on the CPU), each batch copied into its rows as it
    comes: the whole is allocated once, for the split's ``n`` rows, and never held twice (a list
    of batches concatenated at the end would, at DomainNet's 173k target images x 345 classes
    a further 240 MB of logits). Unreadable images give fewer rows; the rest is cut off."""

    def __init__(self, n: int, dtype: torch.dtype) -> None:
        self.n, self.dtype, self.filled = n, dtype, 0
        self.data: torch.Tensor | None = None

    def add(self, part: torch.Tensor) -> None:
        if self.data is None:
            self.data = torch.empty((self.n, *part.shape[1:]), dtype=self.dtype)
        self.data[self.filled : self.filled + len(part)] = part
        self.filled += len(part)

    def tensor(self) -> torch.Tensor:
        assert self.data is not None
        return self.data if self.filled == self.n else self.data[: self.filled].clone()


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
        """The split's outputs, source after source: this process's shard of each source, each
        batch copied into rows allocated once (:class:`_Rows`); in a distributed run, each
        source's shards are then gathered in rank order before the next source's."""
        shards = [_shard(s) for s in sources]
        n = sum(len(s.pool) for s in shards)
        logits, labels = _Rows(n, torch.float32), _Rows(n, torch.long)
        feats = _Rows(n, torch.float32) if features else None
        ends = []  # where each source's rows end (unreadable images give fewer rows)
        for s in shards:
            for batch in eval_batches(s, self.batch_size, self.num_workers, self.bad_log):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.autocast():
                    f = self.method.image_features(batch)
                    z = self.method.logits(f)
                logits.add(z)
                labels.add(batch["labels"])
                if feats is not None:
                    feats.add(f)
            ends.append(logits.filled)
        z_all = logits.tensor() if logits.filled else torch.empty(0, self.method.task.n_classes)
        y_all = labels.tensor() if labels.filled else torch.empty(0, dtype=torch.long)
        f_all = None if feats is None else (feats.tensor() if feats.filled else torch.empty(0, 0))
        if D.initialised():
            return _gathered(z_all, y_all, f_all, ends)
        return SplitOutputs(z_all, y_all, f_all)

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

"""Validators: scores of a model computed without target labels, used to choose a checkpoint.

A validator reads the outputs of one evaluation (:class:`~vlda.selection.outputs.SplitOutputs`
per split) and returns a score (higher is better), or ``None`` when the splits it needs are
empty. It declares which splits it reads. No validator here ever reads ``target_eval``'s
labels: choosing with target labels is the *oracle*, reported only under that name
(:mod:`vlda.selection.summary`). New validators are one class plus one registry line; the
tests check every registered validator for the properties all must have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from vlda.selection.outputs import SplitOutputs


class Validator:
    """Base class. ``name``: registry name (``metrics.jsonl`` key ``validator/<name>``);
    ``needs``: the splits :meth:`score` reads."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # for people: "source-validation accuracy"
    needs: ClassVar[tuple[str, ...]] = ()

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        raise NotImplementedError


class SourceValAccuracy(Validator):
    """Accuracy on the held-out source-validation images: ``mean_i 1[argmax z_i = y_i]``.

    It uses no target data at all, and saturates when the source task is easy (the demo: 1.0 at
    every step), which is why other validators are planned."""

    name = "source_val_acc"
    title = "source-validation accuracy"
    needs = ("source_val",)

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        out = outputs.get("source_val")
        if out is None or len(out) == 0 or out.labels is None:
            return None
        return float((out.logits.argmax(dim=-1) == out.labels).float().mean())


VALIDATORS: dict[str, type[Validator]] = {v.name: v for v in (SourceValAccuracy,)}


def get_validator(name: str) -> Validator:
    try:
        return VALIDATORS[name]()
    except KeyError:
        raise ValueError(f"unknown validator {name!r}; available: {', '.join(sorted(VALIDATORS))}") from None

"""Validators: scores of a model computed without target labels, used to choose a checkpoint.

A validator reads the outputs of one evaluation (:class:`~vlda.selection.outputs.SplitOutputs`
per split) and returns a score (**higher is better** for every validator), or ``None`` when the
splits it needs are empty. It declares which splits (and which splits' features) it reads. No
validator here ever reads ``target_eval``'s labels: choosing with target labels is the
*oracle*, reported only under that name (:mod:`vlda.selection.summary`). New validators are one
class plus one registry line; the tests check every registered validator for the properties
all must have, and each against a straightforward reference computation.

=====================  ====================================================  ==================
name                   score                                                  reads
=====================  ====================================================  ==================
``source_val_acc``     source-validation accuracy                             source_val
``entropy``            ``-mean_i H(p_i)``                                     target_train
``im``                 ``H(mean_i p_i) - mean_i H(p_i)``                      target_train
``bnm``                ``||P||_* / N``                                        target_train
``snd``                soft neighbourhood density (T = 0.05)                  target_train
``class_ami``          AMI(predictions, k-means of features)                  target_train + f
``dev``                ``-`` importance-weighted source risk (control var.)   source_val + f,
                                                                              target_train + f
``zeroshot_agreement`` agreement with zero-shot CLIP's target predictions     target_train,
                                                                              target_zeroshot
=====================  ====================================================  ==================
"""

from __future__ import annotations

from collections.abc import Mapping

from vlda.selection.base import Validator, split_of
from vlda.selection.cluster import ClassAMI
from vlda.selection.confidence import (
    BatchNuclearNorm,
    Entropy,
    InformationMaximization,
    ZeroShotAgreement,
)
from vlda.selection.dev import DeepEmbeddedValidation
from vlda.selection.outputs import SplitOutputs
from vlda.selection.snd import SoftNeighbourhoodDensity

__all__ = ["VALIDATORS", "Validator", "get_validator"]


class SourceValAccuracy(Validator):
    """Accuracy on the held-out source-validation images: ``mean_i 1[argmax z_i = y_i]``.

    It uses no target data at all, and saturates when the source task is easy (the demo: 1.0 at
    every step, so it picks the earliest evaluation); the target validators exist for that."""

    name = "source_val_acc"
    title = "source-validation accuracy"
    needs = ("source_val",)

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        out = split_of(outputs, "source_val")
        if out is None or out.labels is None:
            return None
        return float((out.logits.argmax(dim=-1) == out.labels).float().mean())


VALIDATORS: dict[str, type[Validator]] = {
    v.name: v
    for v in (
        SourceValAccuracy, Entropy, InformationMaximization, BatchNuclearNorm, SoftNeighbourhoodDensity,
        ClassAMI, DeepEmbeddedValidation, ZeroShotAgreement,
    )
}


def get_validator(name: str) -> Validator:
    try:
        return VALIDATORS[name]()
    except KeyError:
        raise ValueError(f"unknown validator {name!r}; available: {', '.join(sorted(VALIDATORS))}") from None

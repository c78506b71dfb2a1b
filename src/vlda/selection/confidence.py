"""Validators computed from the target predictions alone: entropy, information maximisation,
batch nuclear-norm, and agreement with zero-shot CLIP.

All read ``target_train`` (the unlabelled target images the method adapts on), never a label.
``p_i = softmax(z_i)`` are the predicted class probabilities of target image ``i`` (``N``
images, ``C`` classes). The definitions follow pytorch-adapt's validators (Musgrave et al.,
"Benchmarking Validation Methods for Unsupervised Domain Adaptation", 2022).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vlda.selection.base import Validator, probabilities, row_entropy, split_of
from vlda.selection.outputs import ZEROSHOT, SplitOutputs


class TargetProbabilityValidator(Validator):
    """A validator that is a function of the target probabilities ``P [N, C]`` alone
    (:meth:`from_probabilities`); ``None`` when there is no ``target_train`` output."""

    needs = ("target_train",)

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        tgt = split_of(outputs, "target_train")
        return None if tgt is None else self.from_probabilities(probabilities(tgt.logits))

    def from_probabilities(self, p: torch.Tensor) -> float:
        raise NotImplementedError


class Entropy(TargetProbabilityValidator):
    """Negative mean prediction entropy: ``score = -(1/N) sum_i H(p_i)``, ``H(p) = -sum_k p_k
    log p_k`` (higher = more confident predictions = better).

    Used for selection by Morerio et al. (ICLR 2018, "Minimal-entropy correlation alignment").
    Fails when a model is confidently wrong: collapsing every target image onto a few classes
    scores best; it rewards over-confident late checkpoints of entropy-minimising methods."""

    name = "entropy"
    title = "negative entropy of target predictions"

    def from_probabilities(self, p: torch.Tensor) -> float:
        return float(-row_entropy(p).mean())


class InformationMaximization(TargetProbabilityValidator):
    """Information maximisation: ``score = H(mean_i p_i) - (1/N) sum_i H(p_i)``, the mutual
    information between images and predicted classes (confident per image, diverse overall).

    From IM / SHOT (Liang et al., ICML 2020, "Do we really need to access the source data?");
    as a validator, pytorch-adapt's ``IMValidator`` (entropy + diversity, equal weights).
    Fails when the target classes are far from balanced (diversity rewards a uniform marginal)."""

    name = "im"
    title = "information maximisation on the target"

    def from_probabilities(self, p: torch.Tensor) -> float:
        return float(row_entropy(p.mean(dim=0, keepdim=True))[0] - row_entropy(p).mean())


class BatchNuclearNorm(TargetProbabilityValidator):
    """Batch nuclear-norm: ``score = ||P||_* / N``, ``P = [p_1; ...; p_N]`` ``[N, C]``, the sum
    of its singular values (large when predictions are both confident and diverse).

    Cui et al., CVPR 2020, "Towards Discriminability and Diversity: Batch Nuclear-norm
    Maximization under Label Insufficient Situations"; the scale ``1/N`` is pytorch-adapt's
    ``BNMValidator``. Computed as ``sum_k sqrt(λ_k(PᵀP))`` (a ``C×C`` eigenproblem, float64),
    so memory does not grow with ``N²``. Fails like IM on imbalanced targets."""

    name = "bnm"
    title = "batch nuclear-norm of target predictions"

    def from_probabilities(self, p: torch.Tensor) -> float:
        eig = torch.linalg.eigvalsh(p.t() @ p)
        return float(eig.clamp_min(0).sqrt().sum() / p.shape[0])


class ZeroShotAgreement(Validator):
    """Agreement with zero-shot CLIP on the target:
    ``score = (1/N) sum_i 1[argmax z_i = argmax z0_i]``, ``z0_i`` the logits zero-shot CLIP
    (the pretrained backbone, prompt ``"a photo of a {}."``) gives target image ``i``.

    New here (no UDA library has it; CLIP methods make it possible): zero-shot CLIP is a strong,
    label-free reference on the target, so an adapted model that drifts away from it on many
    images is more likely to have drifted wrong. Fails when zero-shot CLIP is itself weak on the
    target (it then prefers checkpoints that copy its mistakes, and cannot see improvements past
    it), and by construction it favours early checkpoints of methods that start at zero-shot.
    Only for vision-language methods: image-classifier methods have no zero-shot model."""

    name = "zeroshot_agreement"
    title = "agreement with zero-shot CLIP on the target"
    needs = ("target_train", ZEROSHOT)

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        tgt, ref = split_of(outputs, "target_train"), split_of(outputs, ZEROSHOT)
        if tgt is None or ref is None:
            return None
        if len(ref) != len(tgt):
            raise ValueError(f"zero-shot reference has {len(ref)} rows, target_train {len(tgt)}")
        return float((tgt.logits.argmax(dim=-1) == ref.logits.argmax(dim=-1)).double().mean())

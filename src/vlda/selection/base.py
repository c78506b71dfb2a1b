"""The validator interface and the small pieces of arithmetic several validators share.

A validator scores the outputs of one evaluation without target labels; **higher is better**
for every validator (a loss-like quantity is negated). It declares the splits it reads
(``needs``), the splits whose features it reads (``needs_features``) and the optional packages
it imports (``requires``), so that the engine computes and saves only what is needed and a run
is refused at load time when something is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from vlda.selection.outputs import SplitOutputs


class Validator:
    """Base class.

    Class attributes:
        name: registry name (the ``metrics.jsonl`` key is ``validator/<name>``).
        title: for people, e.g. ``"source-validation accuracy"``.
        needs: the splits :meth:`score` reads (see :data:`vlda.selection.outputs.ALL_SPLITS`).
        needs_features: the splits whose ``features`` it reads (a subset of ``needs``).
        requires: importable packages it needs beyond vlda's own (e.g. ``"sklearn"``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    needs_features: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        """The score (higher is better), or ``None`` when a split it needs is absent or empty
        (or lacks the features it needs)."""
        raise NotImplementedError

    def unsaved(self, outputs: Mapping[str, SplitOutputs]) -> str | None:
        """What :meth:`score` needs that ``outputs`` lacks (a phrase: a split that is absent, or
        a non-empty split without its features), or ``None``. An *empty* split is not lacking:
        the score is then ``None`` (e.g. no source-validation images)."""
        for split in self.needs:
            out = outputs.get(split)
            if out is None:
                return f"the {split} outputs"
            if split in self.needs_features and out.features is None and len(out):
                return f"the {split} features"
        return None


def split_of(outputs: Mapping[str, SplitOutputs], name: str, features: bool = False) -> SplitOutputs | None:
    """``outputs[name]`` when present and non-empty (and with features if asked), else ``None``."""
    out = outputs.get(name)
    if out is None or len(out) == 0 or (features and out.features is None):
        return None
    return out


def row_entropy(p: Tensor) -> Tensor:
    """``H(p_i) = -sum_k p_ik log p_ik`` per row of ``p`` ``[N, K]`` -> ``[N]``, with ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def probabilities(logits: Tensor) -> Tensor:
    """``softmax(z)`` in float64 ``[N, C]`` (the validators' sums run over up to 10^5 rows)."""
    return logits.double().softmax(dim=-1)


def canonical_order(x: np.ndarray) -> np.ndarray:
    """A row order that depends only on the rows' values (lexicographic), so that randomised
    scikit-learn estimators with a fixed seed give the same result whatever order the samples
    came in."""
    return np.lexsort(x.T[::-1])


def import_sklearn(validator: str) -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError(
            f"validator {validator!r} needs scikit-learn: pip install scikit-learn (or vlda[select])"
        ) from None

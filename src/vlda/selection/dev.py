"""Deep embedded validation (DEV): the source-validation loss, importance-weighted towards the
target with a domain classifier on the features, with a control variate."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from vlda.selection.base import Validator, canonical_order, import_sklearn, split_of
from vlda.selection.outputs import SplitOutputs


def dev_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """DEV's control-variate estimate of the target risk:
    ``R = mean(w·l) + η·mean(w) − η``, ``η = −cov(w·l, w) / var(w)`` (unbiased (co)variances),
    with ``η = 0`` when every weight is equal. ``weights``, ``losses``: ``[N]``."""
    wl = weights * losses
    var_w = float(np.var(weights, ddof=1)) if len(weights) > 1 else 0.0
    eta = -float(np.cov(wl, weights, ddof=1)[0, 1]) / var_w if var_w > 0 else 0.0
    return float(np.mean(wl) + eta * np.mean(weights) - eta)


def _folds(n: int, k: int) -> np.ndarray:
    return np.arange(n) % k


def source_density_ratios(source: np.ndarray, target: np.ndarray, folds: int = 5, c: float = 1.0) -> np.ndarray:
    """``w_i = p_t(x_i) / p_s(x_i) ≈ (P(t|x_i) / P(s|x_i)) · (N_s / N_t)`` for each source row,
    from a logistic-regression domain classifier (standardised features, inverse L2 strength
    ``c``) cross-fitted over ``folds`` folds: each row's weight comes from a classifier that did
    not see it. Rows are put in :func:`canonical_order` and dealt round-robin into folds, so
    the weights do not depend on the order the rows came in. ``source``: ``[N_s, D]``,
    ``target``: ``[N_t, D]`` -> ``[N_s]`` (in the input order)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    s_order, t_order = canonical_order(source), canonical_order(target)
    s_fold, t_fold = np.empty(len(source), int), np.empty(len(target), int)
    s_fold[s_order], t_fold[t_order] = _folds(len(source), folds), _folds(len(target), folds)
    p_source = np.empty(len(source))
    for k in range(folds):
        x = np.concatenate([source[s_fold != k], target[t_fold != k]])
        y = np.concatenate([np.ones(int((s_fold != k).sum())), np.zeros(int((t_fold != k).sum()))])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x, y)
        p_source[s_fold == k] = clf.predict_proba(source[s_fold == k])[:, 1]
    p_source = np.clip(p_source, 1e-6, 1 - 1e-6)
    return (1 - p_source) / p_source * (len(source) / len(target))


class DeepEmbeddedValidation(Validator):
    """Deep embedded validation (You et al., ICML 2019, "Towards Accurate Model Selection in
    Deep Unsupervised Domain Adaptation"): ``score = −R``, with ``R`` the control-variate
    estimate (:func:`dev_risk`) of the target risk from the source-validation cross-entropy
    ``l_i = CE(z_i, y_i)`` weighted by importance weights ``w_i = p_t(f_i) / p_s(f_i)`` of the
    features (:func:`source_density_ratios`).

    Differences from the official code / pytorch-adapt, both of which fit the domain classifier
    (an MLP, weight decay chosen on a held-out split) on *source-training* and target features
    and weigh the source-validation rows: an evaluation here has no source-training outputs, so
    the classifier is a logistic regression cross-fitted on source-validation vs target
    features (each source row weighed by a classifier that did not see it). Needs enough
    source-validation images (``data.source_val_fraction``); fails when the domains are nearly
    separable (weights explode; the control variate only partly tames them) and, like every
    source-risk estimate, when the label distributions of the domains differ."""

    name = "dev"
    title = "deep embedded validation: minus the weighted source risk"
    needs = ("source_val", "target_train")
    needs_features = ("source_val", "target_train")
    requires = ("sklearn",)

    def __init__(self, folds: int = 5, c: float = 1.0) -> None:
        self.folds, self.c = folds, c

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        src = split_of(outputs, "source_val", features=True)
        tgt = split_of(outputs, "target_train", features=True)
        if src is None or tgt is None or src.labels is None or src.features is None or tgt.features is None:
            return None
        folds = min(self.folds, len(src), len(tgt))
        if folds < 2:
            return None
        import_sklearn(self.name)
        losses = nn.functional.cross_entropy(src.logits.double(), src.labels, reduction="none").numpy()
        with torch.no_grad():
            w = source_density_ratios(src.features.double().numpy(), tgt.features.double().numpy(), folds, self.c)
        return -dev_risk(w, losses)

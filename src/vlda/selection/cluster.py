"""ClassAMI: agreement between the model's target predictions and a k-means clustering of its
target features (scikit-learn)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vlda.selection.base import Validator, canonical_order, import_sklearn, split_of
from vlda.selection.outputs import SplitOutputs


class ClassAMI(Validator):
    """ClassAMI (Musgrave et al., 2022, "Three New Validators and a Large-Scale Benchmark
    Ranking for Unsupervised Domain Adaptation"):
    ``score = AMI(argmax_k z_i, kmeans_C(f_i))``, the adjusted mutual information between the
    predicted classes of the target images and a k-means clustering (``C`` clusters, the number
    of classes) of their features ``f_i`` (what the classifier reads).

    As pytorch-adapt's ``ClassClusterValidator`` with its defaults (target features only, no
    PCA, k-means++ initialisation, AMI on labels); scikit-learn's ``KMeans(n_clusters=C,
    n_init=1, random_state=seed)`` on the rows in :func:`canonical_order`, so the score does
    not depend on the order of the images. High when the classifier's decision regions follow
    the feature clusters. Fails when the features themselves cluster by something other than
    class (style, background), and it costs a k-means of ``N × D`` with ``C`` clusters at every
    evaluation (seconds for Office-Home, minutes for DomainNet's 345 classes)."""

    name = "class_ami"
    title = "AMI of target predictions vs k-means of target features"
    needs = ("target_train",)
    needs_features = ("target_train",)
    requires = ("sklearn",)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        tgt = split_of(outputs, "target_train", features=True)
        if tgt is None or tgt.features is None:
            return None
        import_sklearn(self.name)
        from sklearn.cluster import KMeans
        from sklearn.metrics import adjusted_mutual_info_score

        feats = tgt.features.double().numpy()
        order = canonical_order(feats)
        feats, pred = feats[order], tgt.logits.argmax(dim=-1).numpy()[order]
        n_clusters = min(int(tgt.logits.shape[1]), len(np.unique(feats, axis=0)))
        clusters = KMeans(n_clusters=n_clusters, n_init=1, random_state=self.seed).fit_predict(feats)
        return float(adjusted_mutual_info_score(pred, clusters))

"""The demo world's quality figures, each against a straightforward computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import vlda  # noqa: F401  (torchvision shim before open_clip)
from vlda.demo.measure import (
    DIGIT_WORDS,
    DOMAIN_TEMPLATE,
    class_centroids,
    cluster_label_accuracy,
    confident_wrong_share,
    prompt_ceiling,
    pseudo_label_student,
    shift_alignment,
    template_cosine,
)
from vlda.demo.textenc import encode_token_embeddings

TINY_MODEL = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    import open_clip

    torch.manual_seed(0)
    return open_clip.model.CLIP(**json.loads(json.dumps(TINY_MODEL))).eval()


def _text(model: torch.nn.Module, template: str) -> torch.Tensor:
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    rows = []
    for w in DIGIT_WORDS:  # one prompt at a time, through open_clip's own encode_text
        with torch.no_grad():
            rows.append(F.normalize(model.encode_text(tok([template.format(w)])), dim=-1)[0])
    return torch.stack(rows)


def test_encode_token_embeddings_is_encode_text(model: torch.nn.Module) -> None:
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-32")(["seven , a scanned image..", "a photo of 3."])
    with torch.no_grad():
        got = encode_token_embeddings(model, model.token_embedding(tokens), tokens)
        torch.testing.assert_close(got, model.encode_text(tokens))


def test_template_cosine(model: torch.nn.Module) -> None:
    a, b = "a photo of the number {}.", "{} , a scanned image.."
    want = float(np.mean([float(x @ y) for x, y in zip(_text(model, a), _text(model, b),
                                                        strict=True)]))
    assert template_cosine(model, a, b) == pytest.approx(want, abs=1e-5)
    assert template_cosine(model, a, a) == pytest.approx(1.0, abs=1e-5)


def test_shift_alignment(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    src = F.normalize(torch.randn(40, 16, generator=g), dim=-1)
    tgt = F.normalize(torch.randn(30, 16, generator=g), dim=-1)
    ys, yt = torch.arange(40) % 10, torch.arange(30) % 10
    got = shift_alignment(model, src, ys, tgt, yt, "printed", "scanned")
    t_s = _text(model, DOMAIN_TEMPLATE.replace("{domain}", "printed"))
    t_t = _text(model, DOMAIN_TEMPLATE.replace("{domain}", "scanned"))
    text_shift = (t_t - t_s).mean(0)
    per_class = [tgt[yt == c].mean(0) - src[ys == c].mean(0) for c in range(10)]
    image_shift = sum(per_class) / 10
    cos = float(text_shift @ image_shift / (text_shift.norm() * image_shift.norm()))
    assert got["text_image_shift_cos"] == pytest.approx(cos, abs=1e-5)
    assert got["text_shift_norm"] == pytest.approx(float(text_shift.norm()), abs=1e-6)
    cons = np.mean([float(p @ image_shift / (p.norm() * image_shift.norm())) for p in per_class])
    assert got["image_shift_consistency"] == pytest.approx(cons, abs=1e-5)


def test_class_centroids() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    got = class_centroids(x, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(got, torch.tensor([[2.0, 1.0], [0.0, 5.0]]))


def test_confident_wrong_share() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.05, 0.95], [0.3, 0.7]])
    labels = torch.tensor([1, 1, 0, 1])  # wrong: rows 0 (0.95), 1 (0.6), 2 (0.95)
    assert confident_wrong_share(probs, labels, 0.9) == pytest.approx(2 / 3)
    assert confident_wrong_share(probs, probs.argmax(-1)) is None


def test_pseudo_label_student_fits_only_the_confident() -> None:
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(60) % 3
    feats = F.one_hot(labels, 3).float() * 3 + 0.3 * torch.randn(60, 3, generator=g)
    probs = torch.full((60, 3), 0.2)
    probs[torch.arange(60), labels] = 0.6
    probs[:6] = torch.tensor([0.1, 0.1, 0.8])  # 6 confident, wrong for classes 0 and 1
    probs[50:] = torch.tensor([0.4, 0.35, 0.25])  # below τ: not used
    keep = probs.max(-1).values >= 0.5
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(feats[keep].numpy(),
                                                        probs.argmax(-1)[keep].numpy())
    want = float((torch.from_numpy(clf.predict(feats.numpy())) == labels).float().mean())
    assert pseudo_label_student(feats, probs, labels, 0.5) == pytest.approx(want)
    assert pseudo_label_student(feats, torch.full((60, 3), 1 / 3), labels, 0.5) is None


def test_prompt_ceiling_without_steps_is_the_initial_prompt(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(40) % 10
    feats = F.normalize(torch.randn(40, 16, generator=g), dim=-1)
    got = prompt_ceiling(model, feats, labels, steps=0, seed=3)
    # The held-out half: the same stratified draw as prompt_ceiling's.
    gen = torch.Generator().manual_seed(3)
    train = torch.zeros(40, dtype=torch.bool)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        train[idx[torch.randperm(len(idx), generator=gen)[: len(idx) // 2]]] = True
    text = _text(model, "a photo of the {}.")
    want = float(((feats[~train] @ text.t()).argmax(-1) == labels[~train]).float().mean())
    assert got == pytest.approx(want)


def test_cluster_vote_fixes_boundary_noise_not_whole_clusters() -> None:
    """Three far-apart clusters of 20: scattered wrong predictions are outvoted inside their
    cluster; a cluster predicted wrong as a whole stays wrong (hand count)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) // 20
    feats = F.one_hot(labels, 3).float() * 10 + 0.1 * torch.randn(60, 3, generator=g)
    noisy = labels.clone()
    noisy[:5] = 1  # 5 of cluster 0's 20 wrong
    assert cluster_label_accuracy(feats, noisy, labels, k=3) == pytest.approx(1.0)
    whole = noisy.clone()
    whole[40:] = 1  # all of cluster 2 wrong, plus the 5 of cluster 0
    assert float((whole == labels).float().mean()) == pytest.approx(35 / 60)
    assert cluster_label_accuracy(feats, whole, labels, k=3) == pytest.approx(40 / 60)
    assert cluster_label_accuracy(feats[5:7], whole[5:7], labels[5:7], k=20) == 1.0  # k capped


def test_cluster_vote_is_the_mean_over_its_kmeans_runs() -> None:
    """On unstructured features the runs' clusterings differ; the vote is their mean (each run
    recounted by hand from sklearn's own k-means with that seed)."""
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(1)
    feats = torch.randn(90, 4, generator=g)
    labels = torch.randint(0, 3, (90,), generator=g)
    preds = torch.randint(0, 3, (90,), generator=g)
    per_run = []
    for seed in range(3):
        clusters = KMeans(6, n_init=4, random_state=seed).fit_predict(feats.numpy())
        right = 0
        for c in set(clusters.tolist()):
            members = [i for i in range(90) if clusters[i] == c]
            majority = max(range(3), key=lambda v: (sum(int(preds[i]) == v for i in members), -v))
            right += sum(int(labels[i]) == majority for i in members)
        per_run.append(right / 90)
    assert len(set(per_run)) > 1  # the runs really differ, so the mean is tested
    assert cluster_label_accuracy(feats, preds, labels, k=6, runs=3) == pytest.approx(
        sum(per_run) / 3)

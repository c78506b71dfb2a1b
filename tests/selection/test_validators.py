"""Validators: every registered validator is checked for the properties all must have (a float
or None, invariant to the order of the images, no target label read); each one against a short
straightforward reference computation over a grid of sizes."""

import math

import numpy as np
import pytest
import torch

from vlda.selection.dev import dev_risk, source_density_ratios
from vlda.selection.outputs import ALL_SPLITS, ZEROSHOT, SplitOutputs
from vlda.selection.snd import soft_neighbourhood_density
from vlda.selection.validators import VALIDATORS, get_validator

SIZES = [(2, 2), (7, 3), (40, 5), (90, 13)]  # (N, C)


def _outputs(seed=0, n=30, c=4, d=8):
    g = torch.Generator().manual_seed(seed)

    def mk(lab, rows=n):
        return SplitOutputs(torch.randn(rows, c, generator=g) * 3, lab, torch.randn(rows, d, generator=g))

    return {
        "source_val": mk(torch.randint(c, (n,), generator=g)),
        "target_train": mk(None, n + 5),
        "target_eval": mk(torch.randint(c, (n,), generator=g)),
        ZEROSHOT: SplitOutputs(torch.randn(n + 5, c, generator=g)),
    }


def _permuted(out, seed=1):
    """Every split's rows in another order (target_train and its zero-shot rows together)."""
    g = torch.Generator().manual_seed(seed)

    def perm(o, idx):
        return SplitOutputs(o.logits[idx], None if o.labels is None else o.labels[idx],
                            None if o.features is None else o.features[idx])

    res = {}
    tt = torch.randperm(len(out["target_train"]), generator=g)
    for name, o in out.items():
        idx = tt if name in ("target_train", ZEROSHOT) else torch.randperm(len(o), generator=g)
        res[name] = perm(o, idx)
    return res


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_every_validator_declares_what_it_reads_and_returns_a_float(name):
    v = get_validator(name)
    assert v.name == name and v.title
    assert set(v.needs) <= set(ALL_SPLITS) and "target_eval" not in v.needs
    assert set(v.needs_features) <= set(v.needs)
    score = v.score(_outputs())
    assert isinstance(score, float) and math.isfinite(score)


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_every_validator_is_invariant_to_the_order_of_the_images(name):
    v = get_validator(name)
    out = _outputs(seed=3)
    assert v.score(_permuted(out)) == pytest.approx(v.score(out), rel=1e-6, abs=1e-12)  # up to float rounding


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_no_validator_reads_target_labels(name):
    v = get_validator(name)
    out = _outputs()
    score = v.score(out)
    t = out["target_eval"]
    shuffled = dict(out, target_eval=SplitOutputs(t.logits, t.labels.flip(0), t.features))
    assert v.score(shuffled) == score
    assert v.score({k: o for k, o in out.items() if k != "target_eval"}) == score


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_without_what_it_needs_a_validator_gives_none_and_says_what_is_unsaved(name):
    v = get_validator(name)
    out = _outputs()
    assert v.unsaved(out) is None
    for split in v.needs:
        assert v.score({k: o for k, o in out.items() if k != split}) is None
        assert v.unsaved({k: o for k, o in out.items() if k != split}) == f"the {split} outputs"
    for split in v.needs_features:
        no_feats = dict(out, **{split: SplitOutputs(out[split].logits, out[split].labels)})
        assert v.score(no_feats) is None and v.unsaved(no_feats) == f"the {split} features"
    empty = {k: SplitOutputs(o.logits[:0], None if o.labels is None else o.labels[:0],
                             None if o.features is None else o.features[:0]) for k, o in out.items()}
    assert v.score(empty) is None and v.unsaved(empty) is None  # empty: nothing to score, nothing lacking


# -- each validator against a straightforward reference -----------------------------------------


def _probs(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    p = [[math.exp(v) for v in row] for row in z.tolist()]
    return z, [[v / sum(row) for v in row] for row in p]


def _h(row):
    return -sum(v * math.log(v) for v in row if v > 0)


def _target(z, **kw):
    return {"target_train": SplitOutputs(z.float() if z.dtype != torch.float32 else z, None, kw.get("features"))}


@pytest.mark.parametrize("n,c", SIZES)
def test_entropy_by_hand(n, c):
    z, p = _probs(n, c, n)
    ref = -sum(_h(r) for r in p) / n
    assert get_validator("entropy").score({"target_train": SplitOutputs(z)}) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("n,c", SIZES)
def test_information_maximization_by_hand(n, c):
    z, p = _probs(n, c, n + 1)
    mean = [sum(r[k] for r in p) / n for k in range(c)]
    ref = _h(mean) - sum(_h(r) for r in p) / n
    assert get_validator("im").score({"target_train": SplitOutputs(z)}) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("n,c", SIZES)
def test_batch_nuclear_norm_is_the_sum_of_singular_values(n, c):
    z, p = _probs(n, c, n + 2)
    ref = np.linalg.norm(np.array(p), ord="nuc") / n
    assert get_validator("bnm").score({"target_train": SplitOutputs(z)}) == pytest.approx(ref, rel=1e-7)


def _snd_reference(p, t=0.05):
    x = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in p]
    total = 0.0
    for i, a in enumerate(x):
        sims = [sum(u * v for u, v in zip(a, b, strict=True)) / t for j, b in enumerate(x) if j != i]
        m = max(sims)
        e = [math.exp(s - m) for s in sims]
        total += _h([v / sum(e) for v in e])
    return total / len(x)


@pytest.mark.parametrize("n,c", SIZES)
def test_snd_by_hand_and_chunked_equals_unchunked(n, c):
    z, p = _probs(n, c, n + 3)
    ref = _snd_reference(p)
    assert get_validator("snd").score({"target_train": SplitOutputs(z)}) == pytest.approx(ref, rel=1e-5)
    probs = z.softmax(-1)
    assert soft_neighbourhood_density(probs, dtype=torch.float64) == pytest.approx(ref, rel=1e-12)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        whole = soft_neighbourhood_density(probs, chunk_rows=n, dtype=dtype)
        for rows in (1, 3, n - 1 or 1):
            assert soft_neighbourhood_density(probs, chunk_rows=rows, dtype=dtype) == pytest.approx(whole, rel=tol)


def test_snd_never_builds_the_n_by_n_matrix(monkeypatch):
    import vlda.selection.snd as snd

    monkeypatch.setattr(snd, "CHUNK_ELEMENTS", 1000)
    p = torch.rand(500, 4).softmax(-1)
    seen = []
    real = torch.Tensor.softmax

    def spy(self, *a, **k):
        seen.append(self.shape[0])
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "softmax", spy)
    snd.soft_neighbourhood_density(p)
    assert len(seen) == 250 and max(seen) == 2  # rows per chunk: 1000 // 500


@pytest.mark.parametrize("c,per_class", [(2, 3), (4, 10), (7, 20)])
def test_class_ami_against_amis_of_known_clusters(c, per_class):
    """Well-separated blobs: k-means finds them, so ClassAMI is the AMI of the predictions
    against the blob of each image, computed here without k-means."""
    from sklearn.metrics import adjusted_mutual_info_score

    g = torch.Generator().manual_seed(c)
    blob = torch.arange(c).repeat_interleave(per_class)
    feats = torch.randn(c * per_class, 6, generator=g) * 0.01 + torch.randn(c, 6, generator=g)[blob] * 100
    v = get_validator("class_ami")
    perfect = torch.nn.functional.one_hot(blob, c).float()
    assert v.score(_target(perfect, features=feats)) == pytest.approx(1.0)
    noisy_pred = torch.where(torch.rand(len(blob), generator=g) < 0.4, torch.randint(c, blob.shape, generator=g), blob)
    noisy = torch.nn.functional.one_hot(noisy_pred, c).float()
    ref = adjusted_mutual_info_score(noisy_pred.numpy(), blob.numpy())
    assert v.score(_target(noisy, features=feats)) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 40])
def test_dev_risk_by_hand(n):
    rng = np.random.default_rng(n)
    w, loss = rng.uniform(0.1, 3, n), rng.uniform(0, 2, n)
    wl = w * loss
    mw, mwl = sum(w) / n, sum(wl) / n
    cov = sum((a - mwl) * (b - mw) for a, b in zip(wl, w, strict=True)) / (n - 1)
    var = sum((b - mw) ** 2 for b in w) / (n - 1)
    eta = -cov / var
    assert dev_risk(w, loss) == pytest.approx(mwl + eta * mw - eta, rel=1e-9)
    # equal weights: no control variate, the plain mean loss
    assert dev_risk(np.ones(n), loss) == pytest.approx(loss.mean())


def test_dev_weights_favour_target_like_source_images_and_are_cross_fitted():
    rng = np.random.default_rng(0)
    target = rng.normal(2.0, 1.0, (200, 3))
    source = rng.normal(0.0, 1.0, (200, 3))
    w = source_density_ratios(source, target, folds=5)
    # the true log density ratio of N(2, I) over N(0, I) is 2·(x1 + x2 + x3) − 6
    closeness = source.sum(axis=1)
    assert np.corrcoef(np.log(w), closeness)[0, 1] > 0.98
    slope, _ = np.polyfit(closeness, np.log(w), 1)
    assert 1.0 < slope < 2.5  # L2-regularised, cross-fitted: somewhat shrunk towards 0
    # same distribution: the weights are about 1 (the classifier cannot tell the domains apart)
    w_same = source_density_ratios(rng.normal(0, 1, (300, 3)), rng.normal(0, 1, (300, 3)))
    assert abs(np.median(w_same) - 1) < 0.15


@pytest.mark.parametrize("n,c", [(20, 3), (60, 5)])
def test_dev_score_is_minus_the_weighted_cross_entropy_risk(n, c):
    out = _outputs(seed=n, n=n, c=c)
    src, tgt = out["source_val"], out["target_train"]
    loss = torch.nn.functional.cross_entropy(src.logits.double(), src.labels, reduction="none").numpy()
    w = source_density_ratios(src.features.double().numpy(), tgt.features.double().numpy(), 5)
    assert get_validator("dev").score(out) == pytest.approx(-dev_risk(w, loss), rel=1e-9)


@pytest.mark.parametrize("n,c", SIZES)
def test_zeroshot_agreement_by_hand(n, c):
    g = torch.Generator().manual_seed(n)
    z, z0 = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    ref = sum(int(max(range(c), key=lambda k, i=i: z[i, k]) == max(range(c), key=lambda k, i=i: z0[i, k]))
              for i in range(n)) / n
    out = {"target_train": SplitOutputs(z), ZEROSHOT: SplitOutputs(z0)}
    assert get_validator("zeroshot_agreement").score(out) == pytest.approx(ref)


def test_source_val_accuracy_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.2, 0.1]])
    labels = torch.tensor([0, 1, 1, 1])
    assert get_validator("source_val_acc").score({"source_val": SplitOutputs(logits, labels)}) == 0.5


def test_unknown_validator():
    with pytest.raises(ValueError, match="available"):
        get_validator("oracle")

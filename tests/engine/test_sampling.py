import numpy as np
import pytest

from vlda.engine.sampling import split_batch, step_positions, stratified_holdout


def test_step_positions_are_a_function_of_the_step():
    a = [step_positions(100, 8, 1, 0, s) for s in range(30)]
    b = [step_positions(100, 8, 1, 0, s) for s in reversed(range(30))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # one epoch (12 steps of 8 out of 100) draws without replacement
    epoch = np.concatenate(a[:12])
    assert len(set(epoch.tolist())) == 96
    assert not np.array_equal(a[0], step_positions(100, 8, 2, 0, 0))  # the seed matters


def test_small_pool_samples_with_replacement():
    pos = step_positions(3, 8, 0, 0, 5)
    assert len(pos) == 8 and pos.max() < 3
    with pytest.raises(ValueError):
        step_positions(0, 8, 0, 0, 0)


def test_balanced_split():
    assert split_batch(32, 3) == [11, 11, 10]
    with pytest.raises(ValueError):
        split_batch(2, 3)


def test_stratified_holdout():
    labels = np.repeat(np.arange(5), 20)
    train, val = stratified_holdout(labels, 0.1, seed=0)
    assert len(val) == 10 and set(np.bincount(labels[val]).tolist()) == {2}
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
    t2, v2 = stratified_holdout(labels, 0.1, seed=0)
    assert np.array_equal(val, v2)
    # a class with one image keeps it for training
    _, v = stratified_holdout(np.array([0, 1, 1, 1]), 0.5)
    assert 0 not in v

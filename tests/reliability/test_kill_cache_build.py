"""SIGKILL a real ``vlda train`` process while it builds the feature cache: nothing half-built is
ever used, and the next run (``--resume``) builds the cache again and ends bitwise equal to an
uninterrupted run, with the same features."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from conftest import make_color_domains
from reliability.procs import (
    assert_bitwise_equal,
    final_state,
    run_to_end,
    start,
    wait_until,
    write_config,
)
from vlda.data.feature_cache import CHECKED_FILES, META_FILE, TMP_PREFIX, file_sha256


def coop_config(tmp, data, out, cache):
    return write_config(
        tmp / f"{out.name}.yaml", data, out, cache,
        method={"name": "coop", "n_ctx": 4},
        train={"steps": 6, "batch_size": 4, "eval_every": 3, "seed": 7},
        cache={"views": 6, "dir": str(cache)},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_color_domains(tmp_path_factory.mktemp("data"), per_class=20, size=24)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted run: its final state, its cache sets' features by key, and how long the
    first build took."""
    tmp = tmp_path_factory.mktemp("reference")
    run_to_end(["train", "-c", str(coop_config(tmp, data, tmp / "run", tmp / "cache")), "-q"], tmp / "log.txt")
    sets = complete_sets(tmp / "cache")
    assert len(sets) == 2  # source and target
    seconds = min(json.loads((d / META_FILE).read_text())["build_seconds"] for d in sets.values())
    return final_state(tmp / "run"), {k: np.load(d / "features.npy") for k, d in sets.items()}, seconds


def complete_sets(cache):
    return {d.name: d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(TMP_PREFIX)}


def building(cache):
    return cache.is_dir() and any(d.name.startswith(TMP_PREFIX) for d in cache.iterdir())


def kill_inside_a_build(cfg, cache, log, rng, seconds):
    """Start the run, SIGKILL it a random time after a cache build has begun; True if the kill
    landed inside a build (its temporary directory is left)."""
    p = start(["train", "-c", str(cfg), "-q", "--resume"], log)
    if not wait_until(p, lambda: building(cache)):
        return False
    time.sleep(rng.uniform(0, 0.8 * seconds))
    p.kill()
    return building(cache)


@pytest.mark.parametrize("seed", [1, *(pytest.param(s, marks=pytest.mark.slow) for s in (2, 3, 4, 5))])
def test_sigkill_during_a_cache_build_then_resume(tmp_path, data, reference, seed):
    want, want_features, seconds = reference
    rng = random.Random(seed)
    for attempt in range(5):  # a kill between or after the builds does not count: again, afresh
        out, cache = tmp_path / f"run{attempt}", tmp_path / f"cache{attempt}"
        cfg = coop_config(tmp_path, data, out, cache)
        if kill_inside_a_build(cfg, cache, tmp_path / "log.txt", rng, seconds):
            break
    else:
        pytest.fail("no kill landed inside a cache build")
    assert len(complete_sets(cache)) < 2  # the killed build was not moved into place

    run_to_end(["train", "-c", str(cfg), "-q", "--resume"], tmp_path / "log.txt")
    assert_bitwise_equal(final_state(out), want)
    sets = complete_sets(cache)
    assert set(sets) == set(want_features)  # the same keys: the leftover is no set
    for key, d in sets.items():
        meta = json.loads((d / META_FILE).read_text())
        assert {n: file_sha256(d / n) for n in CHECKED_FILES} == meta["sha256"]
        assert np.array_equal(np.load(d / "features.npy"), want_features[key])

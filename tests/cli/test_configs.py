"""Every shipped config parses, names a registered benchmark, domains, method and strategy."""

from pathlib import Path

import pytest

from vlda.config import load_config
from vlda.data.benchmarks import get_benchmark
from vlda.gradients.registry import STRATEGIES
from vlda.methods.registry import get_method

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path, ["data.root=/data"])
    bench = get_benchmark(cfg.data.benchmark)
    assert set(cfg.data.source) | {cfg.data.target} <= set(bench.domains)
    method = dict(cfg.method)
    get_method(method.pop("name")).make_params(method)
    assert cfg.gradients["name"] in STRATEGIES


def test_there_are_configs():
    assert len(CONFIGS) >= 3

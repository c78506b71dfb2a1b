"""A benchmark's declared splits are the defaults; the splits used are recorded."""

import json

from fakes import make_fake_benchmark
from vlda.config import load_config
from vlda.engine.experiment import run
from vlda.engine.run_data import load_run_data, resolve_splits


def _cfg(bench, root, *extra):
    return load_config(None, [f"data.benchmark={bench}", f"data.root={root}", "data.source=[clipart]",
                              "data.target=sketch", *extra])


def test_domainnet_trains_on_train_and_is_scored_on_test(tmp_path):
    root = make_fake_benchmark("domainnet", tmp_path / "dn", per_class=1, domains=["clipart", "sketch"])
    data = load_run_data(_cfg("domainnet", root))
    assert data.splits == {"source": "train", "target": "train", "eval": "test"}
    assert data.sources[0].split == "train" and data.target.split == "train"
    assert data.target_eval.split == "test" and data.target_eval is not data.target
    # the config still wins when it names a split
    data = load_run_data(_cfg("domainnet", root, "data.eval_split=train"))
    assert data.splits["eval"] == "train" and data.target_eval is data.target


def test_transductive_benchmarks_default_to_all_images():
    cfg = load_config(None, ["data.benchmark=officehome", "data.root=/x", "data.source=[art]", "data.target=clipart"])
    assert resolve_splits(cfg) == {"source": "all", "target": "all", "eval": "all"}


def test_summary_records_the_splits(color_data, tmp_path):
    raw = [f"data.custom={{root: {color_data}, domains: {{src: src, tgt: tgt}}}}", "data.source=[src]",
           "data.target=tgt", "model.backbone=tiny", "model.name=vit", "model.pretrained=null",
           f"output={tmp_path / 'zs'}", f"cache.dir={tmp_path / 'cache'}", "train.progress=false"]
    summary = run(load_config(None, raw))
    assert summary["splits"] == {"source": "all", "target": "all", "eval": "all"}
    assert json.loads((tmp_path / "zs" / "summary.json").read_text())["splits"] == summary["splits"]

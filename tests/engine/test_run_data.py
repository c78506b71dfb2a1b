"""A benchmark's declared splits are the defaults; the splits used are recorded."""

import json

from fakes import make_fake_benchmark
from vlda.config import load_config
from vlda.engine.experiment import run
from vlda.engine.run_data import load_run_data, resolve_splits
from vlda.selection.outputs import load_outputs


def _cfg(bench, root, source, target, *extra):
    return load_config(None, [f"data.benchmark={bench}", f"data.root={root}", f"data.source=[{source}]",
                              f"data.target={target}", *extra])


def test_domainnet_trains_on_train_and_is_scored_on_test():
    cfg = _cfg("domainnet", "/nowhere", "clipart", "sketch")
    assert resolve_splits(cfg) == {"source": "train", "target": "train", "eval": "test"}
    assert resolve_splits(_cfg("domainnet", "/x", "clipart", "sketch", "data.eval_split=train"))["eval"] == "train"


def test_a_run_on_train_and_test_splits(tmp_path):
    """Digits declares train/test like DomainNet (and is 10 classes): the target adapts on its
    train images and is scored on its test images; the splits are recorded."""
    root = make_fake_benchmark("digits", tmp_path / "digits", per_class=2, domains=["mnist", "usps"])
    cfg = _cfg("digits", root, "mnist", "usps", "model.backbone=tiny", "model.name=vit", "model.pretrained=null",
               "method.name=coop", "method.n_ctx=2", "train.steps=2", "train.eval_every=2", "train.batch_size=4",
               "train.progress=false", "train.save_outputs=logits", f"cache.dir={tmp_path / 'cache'}",
               f"output={tmp_path / 'run'}")
    data = load_run_data(cfg)
    assert data.splits == {"source": "train", "target": "train", "eval": "test"}
    assert data.target.split == "train" and data.target_eval.split == "test" and data.target_eval is not data.target
    summary = run(cfg)
    assert summary["splits"] == data.splits
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    outputs = load_outputs(tmp_path / "run" / rec["outputs"])
    assert len(outputs["target_train"]) == len(data.target) and len(outputs["target_eval"]) == len(data.target_eval)


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

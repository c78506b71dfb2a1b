"""The command line, end to end on a tiny tree (``vlda.cli.main.main`` in-process)."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from vlda.cli.main import main
from vlda.config import ConfigError, load_config


def write_config(tmp_path, data_root, **overrides):
    cfg = {
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "coop", "n_ctx": 4},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2},
        "cache": {"views": 2, "dir": str(tmp_path / "cache")},
        "augment": {"flip": False},
        "output": str(tmp_path / "run"),
    }
    cfg.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"benchmarks", "methods", "gradients", "backbones", "offline_backbones", "backbone_notes"}
    assert {"office31", "officehome", "visda2017", "domainnet", "digits"} <= set(out["benchmarks"])
    assert {"zeroshot", "coop", "dapl", "pga", "mpga", "dann", "cdan", "mcc", "fixmatch",
            "source_only"} <= set(out["methods"])
    assert {"sum", "pga", "gh", "ghpp", "pcgrad"} <= set(out["gradients"])
    assert "open_clip:ViT-B-16@openai" in out["backbones"]
    assert "timm:efficientnet_lite0@imagenet" in out["backbones"]


def test_train_eval_predict(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "--quiet", "train.seed=2"]) == 0
    out = capsys.readouterr().out
    assert "selected" in out and "oracle" in out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["train"]["seed"] == 2

    assert main(["eval", "--run", str(run), "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target/acc"] == pytest.approx(summary["results"]["selected"]["target_acc"])

    (color_data / "tgt" / "blue" / "broken.png").write_bytes(b"garbage")
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--images", str(color_data / "tgt"), "--out", str(preds)]) == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 13
    good = [r for r in rows if r["prediction"]]
    assert len(good) == 12 and all(r["prediction"] in {"red", "green", "blue"} for r in good)
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in good)


def test_train_refuses_to_overwrite_a_run(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 0


def test_config_errors_are_clear(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(cfg, ["train.stesp=3"])
    with pytest.raises(ConfigError, match="unknown config section"):
        load_config(cfg, ["trian.steps=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg, ["train.steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="also a source"):
        load_config(cfg, ["data.target=src"])
    assert main(["train", "-c", str(cfg), "method.name=nope"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_missing_weights_is_one_sentence(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    code = main(["train", "-c", str(cfg), "model.backbone=open_clip", "model.name=RN50",
                 f"model.pretrained={tmp_path}/RN50.pt"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "RN50.pt" in err and "does not exist" in err and len(err.splitlines()) == 1


def test_wrong_class_lists_across_domains(tmp_path, color_data, capsys):
    (color_data / "tgt" / "yellow").mkdir()
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    assert "yellow" in capsys.readouterr().err


def test_cache_command_builds_then_reuses(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["cache", "-c", str(cfg), "-q"]) == 0
    built = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(built) == 2  # one entry per domain
    assert main(["cache", "-c", str(cfg), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == built


def test_cache_command_builds_what_train_reads(tmp_path, color_data, monkeypatch):
    """`vlda cache` then `vlda train` builds nothing more: a transductive target (also the scored
    split) is cached with its K augmented views, as training reads it."""
    from vlda.data import feature_cache

    cfg = write_config(tmp_path, color_data)
    assert main(["cache", "-c", str(cfg), "-q"]) == 0
    sets = [json.loads((p / "meta.json").read_text()) for p in (tmp_path / "cache").iterdir()]
    assert sorted(m["n_views"] for m in sets) == [2, 2]

    def no_build(*args, **kwargs):
        raise AssertionError("train rebuilt a feature set that `vlda cache` should have built")

    monkeypatch.setattr(feature_cache, "_build", no_build)
    assert main(["train", "-c", str(cfg), "-q"]) == 0


def test_run_length_on_the_command_line_replaces_the_files(tmp_path):
    """A config with ``train.epochs`` (the official settings) given ``train.steps=N`` runs N
    steps, and the other way round; a file that sets both is refused."""
    official = Path(__file__).parents[2] / "configs" / "dapl_officehome_rn50.yaml"
    cfg = load_config(official, ["data.root=/nowhere", "train.steps=4"])
    assert cfg.train.steps == 4 and cfg.train.epochs is None
    cfg = load_config(official, ["data.root=/nowhere", "train.epochs=2"])
    assert cfg.train.epochs == 2
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({
        "data": {"benchmark": "officehome", "root": "/nowhere", "source": ["art"], "target": "clipart"},
        "train": {"steps": 10, "epochs": 3},
    }))
    with pytest.raises(ConfigError, match="both set"):
        load_config(both)
    assert load_config(both, ["train.steps=7"]).train.steps == 7


def test_eval_and_predict_work_on_a_run_trained_for_epochs(tmp_path, color_data, capsys):
    """Every shipped DAPL/PGA config sets train.epochs; its saved config.json must load back."""
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q", "train.epochs=1"]) == 0
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["steps"] is None
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "-q"]) == 0
    assert "target/acc" in json.loads(capsys.readouterr().out)
    assert main(["predict", "--run", str(run), "--images", str(color_data / "tgt"),
                 "--out", str(tmp_path / "p.csv")]) == 0


def test_eval_and_cache_build_no_trainer(tmp_path, color_data, monkeypatch, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    from vlda.engine import experiment

    def refuse(*args, **kwargs):
        raise AssertionError("a trainer or a training stream was built")

    monkeypatch.setattr(experiment, "Trainer", refuse)
    monkeypatch.setattr(experiment, "TrainStream", refuse)
    monkeypatch.setattr("tempfile.TemporaryDirectory", refuse)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert res["target/acc"] == pytest.approx(summary["results"]["selected"]["target_acc"])
    assert res["splits"] == summary["splits"]
    assert main(["cache", "-c", str(cfg), "-q"]) == 0


@pytest.mark.parametrize("method", ["coop", "zeroshot"])
def test_a_finished_run_is_refused_before_anything_is_written(tmp_path, color_data, capsys, method):
    cfg = write_config(tmp_path, color_data, method={"name": method})
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    run_dir = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    (color_data / "src" / "yellow").mkdir()  # the new run would see other classes
    for p in (color_data / "src" / "red").iterdir():
        (color_data / "src" / "yellow" / p.name).write_bytes(p.read_bytes())
    capsys.readouterr()
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before  # task.json too


def test_overwrite_replaces_a_run(tmp_path, color_data):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    summary = tmp_path / "run" / "summary.json"
    summary.write_text("{}")
    assert main(["train", "-c", str(cfg), "-q", "--overwrite"]) == 0
    assert json.loads(summary.read_text())["results"]["last"]["step"] == 4
    assert main(["train", "-c", str(cfg), "-q", "--overwrite", "--resume"]) == 2


def test_a_run_directory_is_locked_while_written(tmp_path, color_data, capsys):
    import subprocess
    import sys

    cfg = write_config(tmp_path, color_data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "run.lock").write_text(str(other.pid))  # a live process holds it
        assert main(["train", "-c", str(cfg), "-q"]) == 2
        assert f"pid {other.pid}" in capsys.readouterr().err and not (run_dir / "config.json").exists()
    finally:
        other.kill()
        other.wait()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / "run.lock").write_text(dead.stdout.strip())  # a killed run's stale lock
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    assert not (run_dir / "run.lock").exists()


def test_resume_with_a_changed_config_is_refused_or_recorded(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "-c", str(cfg), "-q", "--resume", "train.progress=true"]) == 0  # no effect on results
    assert main(["train", "-c", str(cfg), "-q", "--resume", "optim.lr=0.5", "train.seed=9"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.002 -> 0.5" in err and "train.seed: 1 -> 9" in err and "--resume-with-changes" in err
    assert not (run_dir / "resume_changes.jsonl").exists()
    assert main(["train", "-c", str(cfg), "-q", "--resume-with-changes", "optim.lr=0.5"]) == 0
    (line,) = (run_dir / "resume_changes.jsonl").read_text().splitlines()
    assert json.loads(line)["changes"] == {"optim.lr": [0.002, 0.5]}


def test_resuming_a_classic_run_with_the_same_config_is_accepted(tmp_path, color_data):
    """The classic methods turn the feature cache off: the saved config says so, and a resume
    with the same file must not count it as a change."""
    cfg = write_config(tmp_path, color_data, model={"backbone": "timm", "name": "test_resnet", "pretrained": None,
                                                    "image_size": 32},
                       method={"name": "source_only", "bottleneck_dim": 8})
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 0


def test_cache_for_a_method_that_cannot_use_it_says_so_and_builds_nothing(tmp_path, color_data, capsys, monkeypatch):
    from vlda.engine import experiment

    monkeypatch.setattr(experiment, "load_run_backbone", lambda *a, **k: pytest.fail("a backbone was loaded"))
    cfg = write_config(tmp_path, color_data, model={"backbone": "timm", "name": "test_resnet", "pretrained": None},
                       method={"name": "dann"})
    assert main(["cache", "-c", str(cfg), "-q"]) == 2
    assert "cannot use the feature cache" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()

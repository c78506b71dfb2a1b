"""End-to-end runs of the engine on a tiny tree with a tiny CLIP (seconds each)."""

import json

import pytest
import torch

from conftest import kill_after_first_checkpoint
from vlda.config import build_config
from vlda.engine import trainer as trainer_mod
from vlda.engine.checkpoint import load_checkpoint
from vlda.engine.experiment import run


def config(data_root, out, method="dapl", cache=True, steps=6, **extra):
    raw = {
        "data": {
            "custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
            "source": ["src"], "target": "tgt", "source_val_fraction": 0.25,
        },
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": method, **({"n_ctx": 4, "n_domain_ctx": 2, "tau": 0.0} if method == "dapl" else {})},
        "train": {"steps": steps, "batch_size": 4, "eval_every": 3, "progress": False, "seed": 3},
        "optim": {"name": "sgd", "lr": 0.01},
        "cache": {"enabled": cache, "views": 2, "dir": str(out.parent / "cache")},
        "augment": {"scale_min": 0.5, "flip": False},
        "output": str(out),
    }
    if "train__epochs" in extra:
        del raw["train"]["steps"]
    for key, value in extra.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return build_config(raw)


@pytest.mark.parametrize("cache", [True, False])
def test_run_writes_metrics_and_three_honest_results(color_data, tmp_path, cache):
    out = tmp_path / "run"
    summary = run(config(color_data, out, cache=cache))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [3, 6]
    for r in lines:
        assert {"target/acc", "target/mean_class_acc", "source_val/acc", "lr", "train/loss/total"} <= set(r)
    res = summary["results"]
    assert set(res) == {"last", "selected", "selected_by", "oracle"}
    assert res["selected_by"] == {"source_val_acc": res["selected"]}
    assert "ORACLE" in res["oracle"]["chosen_by"]
    assert res["oracle"]["target_metric"] >= max(res["last"]["target_metric"], res["selected"]["target_metric"])
    assert res["last"]["step"] == 6
    best_val = max(r["source_val/acc"] for r in lines)
    assert res["selected"]["source_val_acc"] == best_val
    saved = json.loads((out / "summary.json").read_text())
    assert saved["results"] == res and saved["config"]["method"]["name"] == "dapl"
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 6 and set(ckpt["trainable"]) == {"prompt_learner.ctx", "prompt_learner.domain_ctx.0", "prompt_learner.domain_ctx.1"}
    assert (out / "selected.pt").is_file() and (out / "last.pt").is_file()


def test_zero_shot_run_evaluates_once(color_data, tmp_path):
    out = tmp_path / "zs"
    summary = run(config(color_data, out, method="zeroshot"))
    assert summary["results"]["last"]["step"] == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_gives_the_same_parameters(color_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(config(color_data, straight))
    want = load_checkpoint(straight)["trainable"]

    killed = tmp_path / "killed"
    real_save = kill_after_first_checkpoint(monkeypatch)  # killed right after the step-3 checkpoint
    with pytest.raises(KeyboardInterrupt):
        run(config(color_data, killed))
    assert load_checkpoint(killed)["step"] == 3
    monkeypatch.setattr(trainer_mod, "save_atomic", real_save)
    with pytest.raises(FileExistsError, match="--resume"):
        run(config(color_data, killed))
    summary = run(config(color_data, killed), resume=True)
    got = load_checkpoint(killed)["trainable"]
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert summary["results"] == json.loads((straight / "summary.json").read_text())["results"] | {}
    assert [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()] == [3, 6]


def test_epochs_set_the_number_of_steps(color_data, tmp_path):
    cfg = config(color_data, tmp_path / "ep", train__epochs=2.0)
    run(cfg)
    # 9 source training images (12 minus 3 held out) at batch 4: ceil(2 * 9 / 4) = 5 steps
    assert load_checkpoint(tmp_path / "ep")["step"] == 5


def test_unreadable_image_is_skipped_and_counted(color_data, tmp_path):
    (color_data / "tgt" / "red" / "0.png").write_bytes(b"not an image")
    for cache in (True, False):
        out = tmp_path / f"bad-{cache}"
        with pytest.warns(UserWarning):
            summary = run(config(color_data, out, cache=cache))
        assert summary["bad_images"] == 1


def test_strict_images_makes_a_bad_image_an_error(color_data, tmp_path):
    (color_data / "tgt" / "red" / "0.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="0.png"):
        run(config(color_data, tmp_path / "strict", data__strict_images=True))


def test_multi_source_batches_are_balanced(tmp_path):
    from conftest import make_color_domains

    root = make_color_domains(tmp_path / "data", domains=("a", "b", "t"), per_class=4)
    cfg = config(root, tmp_path / "ms")
    cfg.data.custom["domains"] = {"a": "a", "b": "b", "t": "t"}
    cfg.data.source, cfg.data.target = ["a", "b"], "t"
    from vlda.engine.experiment import build_trainer

    trainer = build_trainer(cfg)
    batch = next(trainer.source_stream.iterate(0, 1))
    assert batch["domains"].tolist().count(0) == 2 and batch["domains"].tolist().count(1) == 2
    assert "labels" not in next(trainer.target_stream.iterate(0, 1))  # no target labels, ever
    summary = trainer.fit()
    assert summary["results"]["last"]["step"] == 6


def test_tensorboard_logs(color_data, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    run(config(color_data, out, train__tensorboard=True))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["dapl", "pga"])
def test_mixed_precision_follows_the_fp32_run(color_data, tmp_path, method, amp):
    """``train.amp`` on CPU: autocast through the shared-prefix prompt encoder and (PGA) the
    re-evaluated closures. Losses stay finite and the prompts take the fp32 run's steps up to
    half-precision rounding. (fp16 on CPU runs without a GradScaler, which the engine uses only
    on CUDA; the scaler maths is tested in tests/gradients.)"""
    extra = {"gradients__name": "pga"} if method == "pga" else {}

    def ctx(name: str, **kw) -> torch.Tensor:
        run(config(color_data, tmp_path / name, method=method, **extra, **kw))
        return load_checkpoint(tmp_path / name)["trainable"]["prompt_learner.ctx"].float()

    start = ctx("start", optim__lr=1e-30)  # the initial prompts (lr must be > 0)
    full = ctx("fp32")
    half = ctx(amp, train__amp=amp)
    lines = [json.loads(x) for x in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()]
    losses = [v for r in lines for k, v in r.items() if k.startswith("train/loss/")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    moved = (full - start).norm()
    assert moved > 0
    assert (half - full).norm() < 0.1 * moved

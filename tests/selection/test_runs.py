"""Validators in runs: every configured validator is logged at every evaluation and chooses its
own `selected`; saved outputs (fp16 or fp32) give the logged scores again after the fact
(`vlda select`); the zero-shot reference is zero-shot CLIP; bad requests are one sentence."""

import json

import pytest
import torch

from conftest import make_color_domains
from vlda.cli.main import main
from vlda.config import ConfigError, build_config
from vlda.engine.experiment import run
from vlda.engine.options import check_options
from vlda.selection.after import select_run
from vlda.selection.outputs import SPLITS, ZEROSHOT, load_outputs
from vlda.selection.summary import validator_key
from vlda.selection.validators import VALIDATORS, get_validator

ALL = ["source_val_acc", *sorted(set(VALIDATORS) - {"source_val_acc"})]


def _config(data, out, tmp_path, method="coop", **sections):
    cfg = {
        "data": {"custom": {"root": str(data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": method, **({"n_ctx": 2} if method == "coop" else {})},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "progress": False},
        "cache": {"views": 1, "dir": str(tmp_path / "cache")},
        "output": str(out),
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return build_config(cfg)


def _lines(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    data = make_color_domains(tmp / "data")
    out = tmp / "run"
    summary = run(_config(data, out, tmp, selection={"validators": ALL},
                          eval={"save_outputs": "features", "outputs_dtype": "float32"}))
    return out, summary


def test_every_configured_validator_is_logged_and_chooses(full_run):
    out, summary = full_run
    lines = _lines(out)
    assert [r["step"] for r in lines] == [2, 4]
    for rec in lines:
        for name in ALL:
            assert isinstance(rec[validator_key(name)], float), name
    res = summary["results"]
    assert set(res) == {"last", "selected", "selected_by", "oracle"}
    assert list(res["selected_by"]) == ALL
    assert res["selected"] == res["selected_by"]["source_val_acc"]
    for name, r in res["selected_by"].items():
        best = max(lines, key=lambda rec, n=name: rec[validator_key(n)])  # earliest of ties
        assert r["validator"] == name and r["step"] == best["step"] and r["score"] == best[validator_key(name)]
        assert r["target_acc"] == best["target/acc"]


def test_saved_outputs_give_the_logged_scores_and_vlda_select_the_same_choices(full_run):
    out, summary = full_run
    for rec in _lines(out):
        saved = load_outputs(out / rec["outputs"])
        assert set(saved) == {*SPLITS, ZEROSHOT}
        assert saved["target_train"].labels is None  # unlabelled, as the method saw it
        assert saved["target_eval"].features.shape == (12, 64)
        for name in ALL:
            assert get_validator(name).score(saved) == pytest.approx(rec[validator_key(name)], rel=1e-6), name
    picked = select_run(out, ALL, write=False)["results"]
    for name in ALL:
        assert picked["selected_by"][name]["step"] == summary["results"]["selected_by"][name]["step"]


def test_vlda_select_prints_and_writes(full_run, capsys):
    out, summary = full_run
    assert main(["select", str(out), "-v", "snd", "-v", "im"]) == 0
    printed = capsys.readouterr().out
    assert "snd" in printed and "im" in printed and "oracle" in printed
    written = json.loads((out / "selection.json").read_text())
    assert set(written["selected_by"]) == {"snd", "im"}
    assert written["selected_by"]["snd"]["step"] == summary["results"]["selected_by"]["snd"]["step"]
    assert main(["select", str(out), "-v", "bnm"]) == 0  # merged with the earlier ones
    assert set(json.loads((out / "selection.json").read_text())["selected_by"]) == {"snd", "im", "bnm"}


def test_outputs_are_fp16_by_default_and_the_old_key_still_works(tmp_path, color_data):
    out = tmp_path / "run"
    cfg = _config(color_data, out, tmp_path, train={"save_outputs": "logits"}, selection={"validators": ["snd"]})
    assert cfg.eval.save_outputs == "logits" and "save_outputs" not in cfg.to_dict()["train"]
    run(cfg)
    rec = _lines(out)[-1]
    raw = torch.load(out / rec["outputs"], weights_only=True)
    assert raw["target_eval"]["logits"].dtype == torch.float16 and "features" not in raw["target_eval"]
    assert raw["target_train"] == {"same_as": "target_eval"}  # transductive: stored once
    saved = load_outputs(out / rec["outputs"])
    assert saved["target_eval"].logits.dtype == torch.float32
    assert get_validator("snd").score(saved) == pytest.approx(rec[validator_key("snd")], abs=5e-3)


def test_the_zero_shot_reference_is_zero_shot_clip(tmp_path, color_data):
    out = tmp_path / "zs"
    run(_config(color_data, out, tmp_path, method="zeroshot", selection={"validators": ["zeroshot_agreement"]},
                eval={"save_outputs": "logits", "outputs_dtype": "float32"}))
    rec = _lines(out)[-1]
    saved = load_outputs(out / rec["outputs"])
    torch.testing.assert_close(saved[ZEROSHOT].logits, saved["target_train"].logits)
    assert rec[validator_key("zeroshot_agreement")] == 1.0


def test_vlda_select_refuses_runs_without_the_outputs_it_needs(tmp_path, color_data, capsys):
    bare = tmp_path / "bare"
    run(_config(color_data, bare, tmp_path))
    assert main(["select", str(bare), "-v", "snd"]) == 2
    assert "saved no evaluation outputs" in capsys.readouterr().err
    logits = tmp_path / "logits"
    run(_config(color_data, logits, tmp_path, eval={"save_outputs": "logits"}))
    assert main(["select", str(logits), "-v", "class_ami"]) == 2
    err = capsys.readouterr().err
    assert "target_train features" in err and "eval.save_outputs=features" in err and "Traceback" not in err
    assert main(["select", str(tmp_path / "nowhere"), "-v", "snd"]) == 2
    assert main(["select", str(logits), "-v", "oracle"]) == 2
    assert "unknown validator 'oracle'" in capsys.readouterr().err


def test_zero_shot_agreement_is_refused_for_image_classifiers(tmp_path, color_data):
    cfg = _config(color_data, tmp_path / "r", tmp_path, method="dann", selection={"validators": ["zeroshot_agreement"]},
                  model={"backbone": "timm", "name": "efficientnet_lite0", "pretrained": None})
    with pytest.raises(ConfigError, match="no zero-shot model"):
        check_options(cfg)


def test_a_fine_tuned_encoder_is_compared_with_its_pretrained_zero_shot(tmp_path, color_data, monkeypatch):
    """The zero-shot reference of a method that fine-tunes the image encoder comes from the
    encoder before the first step: it equals a zero-shot run's predictions."""
    from methods.test_contract import FineTunedProbe
    from vlda.methods import registry

    monkeypatch.setitem(registry.METHODS, FineTunedProbe.name, FineTunedProbe)
    saving = {"save_outputs": "logits", "outputs_dtype": "float32"}
    zs, ft = tmp_path / "zs", tmp_path / "ft"
    run(_config(color_data, zs, tmp_path, method="zeroshot", eval=saving, cache={"enabled": False}))  # no fp16 cache
    run(_config(color_data, ft, tmp_path, method="finetuned_probe", eval=saving, optim={"lr": 0.5},
                selection={"validators": ["zeroshot_agreement"]}))
    reference = load_outputs(zs / _lines(zs)[-1]["outputs"])["target_train"].logits
    saved = load_outputs(ft / _lines(ft)[-1]["outputs"])
    torch.testing.assert_close(saved[ZEROSHOT].logits, reference)
    agreement = (saved["target_train"].logits.argmax(-1) == reference.argmax(-1)).double().mean().item()
    assert _lines(ft)[-1][validator_key("zeroshot_agreement")] == pytest.approx(agreement)

    # killed after the first checkpoint and resumed: the reference is still the pretrained encoder's
    from conftest import kill_after_first_checkpoint
    from vlda.engine import trainer as trainer_mod

    killed = tmp_path / "killed"
    cfg = lambda: _config(color_data, killed, tmp_path, method="finetuned_probe", eval=saving,  # noqa: E731
                          optim={"lr": 0.5}, selection={"validators": ["zeroshot_agreement"]})
    real_save = kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg())
    monkeypatch.setattr(trainer_mod, "save_atomic", real_save)
    run(cfg(), resume=True)
    torch.testing.assert_close(load_outputs(killed / _lines(killed)[-1]["outputs"])[ZEROSHOT].logits, reference)
    assert _lines(killed) == [{**r, "time_s": k["time_s"]} for r, k in zip(_lines(ft), _lines(killed), strict=True)]


def test_a_real_run_goes_into_the_report_tables(full_run, tmp_path):
    from vlda.report.tables import write_report

    out, summary = full_run
    write_report([out], tmp_path / "report")
    for name in ALL:
        text = (tmp_path / "report" / f"{name}.csv").read_text().splitlines()
        assert text[0] == "method,Src→Tgt,Avg"
        expected = f"{100 * summary['results']['selected_by'][name]['target_metric']:.1f}"
        assert text[1] == f"coop,{expected},{expected}"


@pytest.mark.parametrize("method", ["adclip", "cmkd"])
def test_zero_shot_reference_of_other_clip_methods(tmp_path, color_data, method):
    """AD-CLIP caches more than CLIP's features (its layer statistics) and CMKD fine-tunes the
    encoder: their reference is still zero-shot CLIP's (fp16 cache: close, not equal)."""
    saving = {"save_outputs": "logits", "outputs_dtype": "float32"}
    zs, other = tmp_path / "zs", tmp_path / method
    run(_config(color_data, zs, tmp_path, method="zeroshot", eval=saving, cache={"enabled": False}))
    run(_config(color_data, other, tmp_path, method=method, eval=saving,
                selection={"validators": ["zeroshot_agreement"]}))
    reference = load_outputs(zs / _lines(zs)[-1]["outputs"])["target_train"].logits
    got = load_outputs(other / _lines(other)[-1]["outputs"])[ZEROSHOT].logits
    torch.testing.assert_close(got, reference, atol=0.05, rtol=0.01)
    assert isinstance(_lines(other)[-1][validator_key("zeroshot_agreement")], float)

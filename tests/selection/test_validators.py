"""Validators and evaluation outputs: every registered validator is checked for the properties
all must have; source-validation accuracy against a hand computation; outputs saved by a run
give the logged scores again."""

import json

import pytest
import torch

from vlda.config import build_config
from vlda.engine.experiment import run
from vlda.selection.outputs import SPLITS, SplitOutputs, load_outputs
from vlda.selection.summary import summarize, validator_key
from vlda.selection.validators import VALIDATORS, get_validator


def _outputs(seed=0, n=20, c=4):
    g = torch.Generator().manual_seed(seed)
    mk = lambda lab: SplitOutputs(torch.randn(n, c, generator=g), lab, torch.randn(n, 8, generator=g))  # noqa: E731
    return {
        "source_val": mk(torch.randint(c, (n,), generator=g)),
        "target_train": mk(None),
        "target_eval": mk(torch.randint(c, (n,), generator=g)),
    }


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_no_validator_reads_target_labels(name):
    v = get_validator(name)
    assert v.name == name and v.title and set(v.needs) <= set(SPLITS) and "target_eval" not in v.needs
    out = _outputs()
    score = v.score(out)
    assert score is not None
    shuffled = dict(out)
    t = out["target_eval"]
    shuffled["target_eval"] = SplitOutputs(t.logits, t.labels.flip(0), t.features)
    assert v.score(shuffled) == score
    assert v.score({k: o for k, o in out.items() if k not in v.needs}) is None  # nothing to score


def test_source_val_accuracy_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.2, 0.1]])
    labels = torch.tensor([0, 1, 1, 1])
    assert get_validator("source_val_acc").score({"source_val": SplitOutputs(logits, labels)}) == 0.5


def test_unknown_validator():
    with pytest.raises(ValueError, match="available"):
        get_validator("oracle")


def test_summary_selects_by_the_first_validator():
    h = [{"step": s, "target/metric": t, validator_key("source_val_acc"): v}
         for s, t, v in [(1, 0.2, 0.5), (2, 0.9, 0.4), (3, 0.3, 0.5)]]
    res = summarize(h)
    assert res["selected"]["step"] == 1 and res["oracle"]["step"] == 2 and res["last"]["step"] == 3


def test_a_run_saves_its_outputs_and_they_give_the_logged_scores(color_data, tmp_path):
    out = tmp_path / "run"
    run(build_config({
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "coop", "n_ctx": 2},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "progress": False, "save_outputs": "features"},
        "cache": {"views": 1, "dir": str(tmp_path / "cache")},
        "output": str(out),
    }))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["outputs"] for r in lines] == ["outputs/step_0000002.pt", "outputs/step_0000004.pt"]
    for rec in lines:
        saved = load_outputs(out / rec["outputs"])
        assert set(saved) == set(SPLITS)
        assert saved["target_train"].labels is None  # unlabelled, as the method saw it
        assert saved["target_eval"].features.shape == (12, 64)
        assert rec[validator_key("source_val_acc")] == get_validator("source_val_acc").score(saved)
        acc = float((saved["target_eval"].logits.argmax(-1) == saved["target_eval"].labels).float().mean())
        assert rec["target/acc"] == pytest.approx(acc)

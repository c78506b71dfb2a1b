"""Which evaluation each reported result comes from."""

from vlda.selection.summary import summarize


def rec(step, target, val=None, **scores):
    r = {"step": step, "target/acc": target, "target/mean_class_acc": target, "target/metric": target}
    if val is not None:
        r["source_val/acc"] = r["validator/source_val_acc"] = val
    r.update({f"validator/{k}": v for k, v in scores.items()})
    return r


def test_selected_is_the_best_source_validation_earliest_on_ties():
    history = [rec(1, 0.5, 0.7), rec(2, 0.9, 0.8), rec(3, 0.6, 0.8), rec(4, 0.7, 0.6)]
    out = summarize(history)
    assert out["selected"]["step"] == 2 and "source-validation" in out["selected"]["chosen_by"]
    assert out["selected"]["validator"] == "source_val_acc" and out["selected"]["score"] == 0.8
    assert out["last"]["step"] == 4
    assert out["oracle"]["step"] == 2 and out["oracle"]["chosen_by"].startswith("ORACLE")


def test_each_validator_chooses_its_own_step_and_the_first_is_selected():
    history = [rec(1, 0.5, 0.9, snd=3.0, im=0.1), rec(2, 0.9, 0.8, snd=1.0, im=0.5), rec(3, 0.6, 0.7, snd=2.0, im=0.5)]
    out = summarize(history, ["snd", "source_val_acc", "im"])
    assert list(out["selected_by"]) == ["snd", "source_val_acc", "im"]
    assert {k: v["step"] for k, v in out["selected_by"].items()} == {"snd": 1, "source_val_acc": 1, "im": 2}
    assert out["selected"] == out["selected_by"]["snd"] and out["selected"]["validator"] == "snd"
    assert out["selected_by"]["im"]["target_acc"] == 0.9 and "no target labels" in out["selected_by"]["im"]["chosen_by"]


def test_without_source_validation_selected_says_it_is_the_last_step():
    out = summarize([rec(1, 0.9), rec(2, 0.4)])
    assert out["selected"]["step"] == 2 and "score" not in out["selected"]
    assert out["selected"]["chosen_by"].startswith("last step (no source-validation accuracy")
    assert "source_val_fraction" in out["selected"]["chosen_by"]
    assert out["oracle"]["step"] == 1
    assert summarize([rec(1, 0.9)], ["snd"])["selected"]["chosen_by"].startswith("last step (no soft neighbourhood")


def test_empty_history():
    assert summarize([]) == {}

"""Which evaluation each reported result comes from."""

from vlda.selection.summary import summarize


def rec(step, target, val=None):
    r = {"step": step, "target/acc": target, "target/mean_class_acc": target, "target/metric": target}
    if val is not None:
        r["source_val/acc"] = r["validator/source_val_acc"] = val
    return r


def test_selected_is_the_best_source_validation_earliest_on_ties():
    history = [rec(1, 0.5, 0.7), rec(2, 0.9, 0.8), rec(3, 0.6, 0.8), rec(4, 0.7, 0.6)]
    out = summarize(history)
    assert out["selected"]["step"] == 2 and "source-validation" in out["selected"]["chosen_by"]
    assert out["last"]["step"] == 4
    assert out["oracle"]["step"] == 2 and out["oracle"]["chosen_by"].startswith("ORACLE")


def test_without_source_validation_selected_says_it_is_the_last_step():
    out = summarize([rec(1, 0.9), rec(2, 0.4)])
    assert out["selected"]["step"] == 2
    assert out["selected"]["chosen_by"].startswith("last step (no source-validation accuracy")
    assert out["oracle"]["step"] == 1


def test_empty_history():
    assert summarize([]) == {}

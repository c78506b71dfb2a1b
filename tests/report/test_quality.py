"""The validator-quality table against a hand computation: every evaluation of every run of a
(method, task, seed) group is a candidate, ties go to the earliest, Spearman with average ranks."""

import json
import random

import pytest

from vlda.report.quality import group_quality, quality_table, ranks, read_metrics, spearman
from vlda.report.runs import RunResult


def test_ranks_average_ties():
    assert ranks([0.3, 0.1, 0.2, 0.2]) == [4.0, 1.0, 2.5, 2.5]
    assert ranks([]) == []


def test_spearman_by_hand():
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, -2, 1, 1)
    assert spearman([1, 2, 3, 4], [1, 4, 2, 3]) == pytest.approx(1 - 6 * 6 / (4 * 15))
    # ties: Pearson of the average ranks (1, 4, 2.5, 2.5) and (2, 4, 3, 1), by hand 3 / sqrt(4.5 * 5)
    assert spearman([0.1, 0.3, 0.2, 0.2], [0.5, 0.7, 0.6, 0.4]) == pytest.approx(3 / (4.5 * 5) ** 0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2], [1])


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(12)]
        y = [rng.random() for _ in range(12)]
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def _run(tmp_path, name, seed, records):
    d = tmp_path / name
    d.mkdir()
    lines = [json.dumps({"step": 2 * (i + 1), "target/metric": t, "validator/im": im, "validator/snd": snd})
             for i, (t, im, snd) in enumerate(records)]
    (d / "metrics.jsonl").write_text("\n".join([*lines, '{"step": 9, "cut by a cra']) + "\n")
    return RunResult(str(d), "dapl", "Ar→Cl", (1, 0, 1), seed, {})


def test_quality_by_hand(tmp_path):
    runs = [  # group (dapl, Ar→Cl, 1): two hyper-parameter settings; group (dapl, Ar→Cl, 2): one
        _run(tmp_path, "lr1", 1, [(0.5, 1.0, 0.1), (0.7, 0.8, 0.3)]),
        _run(tmp_path, "lr2", 1, [(0.6, 0.9, 0.2), (0.4, 1.2, 0.2)]),
        _run(tmp_path, "seed2", 2, [(0.8, 2.0, 0.5), (0.9, 1.0, 0.5)]),
    ]
    hist = [read_metrics(r.path) for r in runs]
    assert [len(h) for h in hist] == [2, 2, 2]  # the cut line is skipped
    groups = {(g.seed, g.validator): g for g in group_quality(runs, hist)}
    im1 = groups[(1, "im")]  # im's best score 1.2: run lr2 step 4, target 0.4; oracle 0.7 (lr1 step 4)
    assert (im1.chosen, im1.chosen_run, im1.chosen_step, im1.oracle, im1.n_evals) == (0.4, runs[1].path, 4, 0.7, 4)
    assert im1.regret == pytest.approx(0.3) and im1.spearman == pytest.approx(-1.0)
    snd1 = groups[(1, "snd")]
    assert snd1.chosen == 0.7 and snd1.regret == 0 and snd1.spearman == pytest.approx(3 / (4.5 * 5) ** 0.5)
    snd2 = groups[(2, "snd")]  # a constant score: the earliest evaluation, no correlation
    assert (snd2.chosen, snd2.chosen_step, snd2.spearman) == (0.8, 2, None)
    header, rows = quality_table(list(groups.values()))
    assert header == ["validator", "groups", "chosen", "oracle", "regret", "spearman"]
    table = {r[0]: r[1:] for r in rows}
    assert table["im"] == ["2", "60.0", "80.0", "20.0", "-1.000"]  # means of (0.4, 0.8), (0.7, 0.9), ...
    assert table["snd"] == ["2", "75.0", "80.0", "5.0", f"{3 / (4.5 * 5) ** 0.5:.3f}"]


def test_a_nan_score_is_not_a_candidate(tmp_path):
    run = _run(tmp_path, "nan", 1, [(0.5, 1.0, 0.1), (0.9, float("nan"), 0.3)])
    im = next(g for g in group_quality([run], [read_metrics(run.path)]) if g.validator == "im")
    assert (im.chosen, im.oracle, im.n_evals, im.spearman) == (0.5, 0.9, 1, None)


def test_runs_without_a_target_metric_give_no_group(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "validator/im": 1.0}) + "\n")
    run = RunResult(str(d), "m", "A→B", (1, 0, 1), 0, {})
    assert group_quality([run], [read_metrics(d)]) == []
    assert read_metrics(tmp_path / "missing") == []

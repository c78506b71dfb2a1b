"""Paper-style tables from run directories: the numbers against a hand computation, the
benchmark's canonical task order, one table per selection (oracle named), clear refusals."""

import csv
import json
import statistics

import pytest

from vlda.cli.main import main
from vlda.report.tables import find_runs, write_report


def fake_run(root, method, source, target, seed, last, oracle, by, grads="sum", bench="officehome", lr=0.002,
             val=None):
    """A run directory with the summary.json a finished run writes (the numbers given; ``val``:
    each validator's score, default the target metric it chose)."""
    d = root / f"{method}-{grads}-{source}-{target}-{seed}-{lr}"
    d.mkdir(parents=True)
    res = lambda v, how: {"step": 10, "target_metric": v, "target_acc": v, "chosen_by": how}  # noqa: E731
    val = val or by
    selected_by = {k: {**res(v, k), "validator": k, "score": val[k]} for k, v in by.items()}
    summary = {
        "config": {"data": {"benchmark": bench, "source": [source], "target": target},
                   "method": {"name": method}, "gradients": {"name": grads}, "train": {"seed": seed},
                   "optim": {"lr": lr}, "output": str(d)},
        "results": {"last": res(last, "last step"), "selected": next(iter(selected_by.values())),
                    "selected_by": selected_by, "oracle": res(oracle, "ORACLE")},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "sweep"
    # dapl on two tasks (given out of order) x 2 seeds; dann+gh on one task x 1 seed
    vals = {("real_world", "art", 1): (0.70, 0.80, 0.75), ("real_world", "art", 2): (0.72, 0.84, 0.70),
            ("art", "clipart", 1): (0.50, 0.60, 0.55), ("art", "clipart", 2): (0.54, 0.62, 0.51)}
    for (s, t, seed), (last, oracle, im) in vals.items():
        fake_run(root / "dapl", "dapl", s, t, seed, last, oracle, {"im": im, "snd": last})
    fake_run(root, "dann", "art", "clipart", 1, 0.40, 0.45, {"im": 0.42, "snd": 0.30}, grads="gh")
    (root / "demo-summary").mkdir()
    (root / "demo-summary" / "summary.json").write_text(json.dumps({"rows": []}))  # not a run: ignored
    return root


def _cell(values):
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def test_tables_by_hand(runs, tmp_path):
    assert len(find_runs([runs])) == 5
    (runs / "summary.json").write_text(json.dumps({"rows": []}))  # e.g. the demo's own summary
    assert len(find_runs([runs])) == 5
    out = tmp_path / "report"
    write_report([runs], out)
    with open(out / "im.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "Ar→Cl", "Rw→Ar", "Avg"]  # the benchmark's domain order
    dapl = dict(zip(rows[0], next(r for r in rows if r[0] == "dapl"), strict=True))
    assert dapl["Ar→Cl"] == _cell([0.55, 0.51]) and dapl["Rw→Ar"] == _cell([0.75, 0.70])
    assert dapl["Avg"] == _cell([(0.75 + 0.55) / 2, (0.70 + 0.51) / 2])  # std over seeds of the task average
    gh = next(r for r in rows if r[0] == "dann+gh")
    assert gh == ["dann+gh", "42.0", "", ""]  # one seed: the mean; a missing task: no average
    oracle = (out / "oracle.md").read_text()
    assert "chosen WITH target labels" in oracle and _cell([0.80, 0.84]) in oracle
    tables = (out / "tables.md").read_text()
    assert tables.index("## last step") < tables.index("selected by im") < tables.index("selected by snd") < tables.index("## oracle")
    with open(out / "runs.csv") as f:
        long = list(csv.DictReader(f))
    assert len(long) == 5 * 4 and {r["selection"] for r in long} == {"last", "im", "snd", "oracle"}


def test_vlda_report_cli(runs, tmp_path, capsys):
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    assert "| dapl |" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "empty-nothing"), "--out", str(tmp_path / "r2")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")]) == 2
    assert "no finished vlda run" in capsys.readouterr().err


def test_the_same_run_twice_is_refused(runs, tmp_path, capsys):
    fake_run(tmp_path / "other", "dapl", "art", "clipart", 1, 0.1, 0.2, {"im": 0.1, "snd": 0.1})
    assert main(["report", str(runs), str(tmp_path / "other"), "--out", str(tmp_path / "r")]) == 2
    assert "the same run" in capsys.readouterr().err


def test_hyper_parameters_are_chosen_by_each_tables_own_criterion(tmp_path):
    """Two learning rates x two seeds on one task: each table keeps the setting its validator
    scores best on average over seeds (the oracle table: the best target), never mixing seeds
    of different settings."""
    root = tmp_path / "sweep"
    #                  lr     seed  last  oracle  im-choice  im-score  snd-choice  snd-score
    for lr, seed, last, oracle, im, im_s, snd, snd_s in [
        (0.1, 1, 0.50, 0.70, 0.60, 1.0, 0.55, 5.0),
        (0.1, 2, 0.52, 0.72, 0.62, 1.2, 0.57, 5.0),
        (0.01, 1, 0.40, 0.90, 0.80, 0.5, 0.45, 9.0),
        (0.01, 2, 0.42, 0.80, 0.82, 0.9, 0.47, 2.0),
    ]:
        fake_run(root, "dapl", "art", "clipart", seed, last, oracle, {"im": im, "snd": snd}, lr=lr,
                 val={"im": im_s, "snd": snd_s})
    out = tmp_path / "r"
    write_report([root], out)

    def cell(sel):
        with open(out / f"{sel}.csv") as f:
            return list(csv.reader(f))[1][1]

    assert cell("im") == _cell([0.60, 0.62])  # lr 0.1: mean im score 1.1 > 0.7
    assert cell("snd") == _cell([0.45, 0.47])  # lr 0.01: mean snd score 5.5 > 5.0
    assert cell("oracle") == _cell([0.90, 0.80])  # lr 0.01: mean target 0.85 > 0.71
    assert cell("last") == _cell([0.50, 0.52])  # chosen by the primary validator (im): lr 0.1
    text = (out / "im.md").read_text()
    assert "Hyper-parameters chosen per method and task by the mean over seeds of im's score" in text
    assert "ORACLE" in (out / "oracle.md").read_text()


def test_the_hyper_parameter_note_counts_settings_per_method_and_task(tmp_path):
    root = tmp_path / "sweep"
    for target in ("clipart", "product"):
        for lr in (0.1, 0.01):
            fake_run(root, "dapl", "art", target, 1, 0.5, 0.6, {"im": 0.5}, lr=lr)
    write_report([root], tmp_path / "r")
    assert "Hyper-parameters chosen" in (tmp_path / "r" / "im.md").read_text()
    single = tmp_path / "single"
    for target in ("clipart", "product"):
        fake_run(single, "dapl", "art", target, 1, 0.5, 0.6, {"im": 0.5}, lr=0.1 if target == "clipart" else 0.01)
    write_report([single], tmp_path / "r1")
    assert "Hyper-parameters chosen" not in (tmp_path / "r1" / "im.md").read_text()

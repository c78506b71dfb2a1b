"""``vlda sweep``: search spaces, the plan (tasks × hyper-parameters × seeds), idempotent runs."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml

from vlda.cli.main import main
from vlda.config import ConfigError
from vlda.config.search import Choice, IntUniform, LogUniform, Uniform, parse_distribution
from vlda.config.sweep import SweepConfig, load_sweep
from vlda.sweep.plan import expand_task, hparam_sets, make_plan

BASE = {
    "data": {"benchmark": "officehome", "root": "/nowhere", "source": ["art"], "target": "clipart"},
    "model": {"backbone": "timm", "name": "efficientnet_lite0", "pretrained": None},
    "method": {"name": "dann"},
}


def sweep(tmp_path, **fields):
    return SweepConfig.model_validate({"config": BASE, "out": str(tmp_path / "sw"), **fields})


# -- distributions ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ({"uniform": [0.5, 2]}, Uniform(0.5, 2.0)),
    ({"log_uniform": [1e-4, 1e-2]}, LogUniform(1e-4, 1e-2)),
    ({"int_uniform": [4, 16]}, IntUniform(4, 16)),
    ({"choice": [16, 32]}, Choice((16, 32))),
    ([16, 32], Choice((16, 32))),
])
def test_distributions_parse_and_round_trip(text, expected):
    d = parse_distribution("k", text)
    assert d == expected
    assert parse_distribution("k", d.to_dict()) == d


@pytest.mark.parametrize("bad", [{"uniform": [2, 1]}, {"log_uniform": [0, 1]}, {"gauss": [0, 1]}, 3, {"uniform": [1]}])
def test_bad_distributions_name_the_key(bad):
    with pytest.raises(ValueError, match=r"space\.optim\.lr"):
        parse_distribution("optim.lr", bad)


def test_samples_stay_in_bounds_and_log_uniform_is_uniform_in_log():
    rng = random.Random(0)
    logs = [math.log10(LogUniform(1e-4, 1e-2).sample(rng)) for _ in range(4000)]
    assert min(logs) >= -4 and max(logs) <= -2
    assert abs(sum(logs) / len(logs) + 3) < 0.05  # midpoint of [-4, -2] in log space
    ints = {IntUniform(4, 6).sample(rng) for _ in range(200)}
    assert ints == {4, 5, 6}


# -- the plan ---------------------------------------------------------------------------------
def test_benchmark_all_is_every_ordered_pair_in_canonical_order():
    pairs = expand_task("officehome/all", BASE)
    assert len(pairs) == 12 and pairs[0] == ("officehome", ["art"], "clipart")
    assert pairs[-1] == ("officehome", ["real_world"], "product")
    assert expand_task("art+product->clipart", BASE) == [(None, ["art", "product"], "clipart")]
    assert expand_task("base", BASE) == [(None, ["art"], "clipart")]
    with pytest.raises(ConfigError, match="source->target"):
        expand_task("art_to_clipart", BASE)


def test_grid_is_the_product_and_random_sets_are_seeded(tmp_path):
    grid = hparam_sets(sweep(tmp_path, search="grid", grid={"optim.lr": [0.1, 0.2], "method.trade_off": [1, 2, 3]}), {})
    assert len(grid) == 6 and grid[0] == {"optim.lr": 0.1, "method.trade_off": 1}
    space = {"optim.lr": LogUniform(1e-3, 1e-1)}
    a = hparam_sets(sweep(tmp_path, search="random", n_trials=4, search_seed=7), space)
    b = hparam_sets(sweep(tmp_path, search="random", n_trials=4, search_seed=7), space)
    c = hparam_sets(sweep(tmp_path, search="random", n_trials=4, search_seed=8), space)
    assert a == b and a != c and a[0] == {} and len(a) == 4
    assert all(1e-3 <= s["optim.lr"] <= 1e-1 for s in a[1:])


def test_plan_applies_task_seed_and_hyper_parameters(tmp_path):
    spec = sweep(tmp_path, tasks="officehome/all", seeds=2, search="random", n_trials=3,
                 space={"method.trade_off": [0.3, 3.0]})
    trials = make_plan(spec, tmp_path)
    assert len(trials) == 12 * 3 * 2
    by_name = {t.name: t for t in trials}
    assert len(by_name) == len(trials)
    t = next(t for t in trials if t.task == "product-real_world" and t.seed == 2 and t.hparams)
    cfg = t.config
    assert cfg.data.source == ["product"] and cfg.data.target == "real_world" and cfg.train.seed == 2
    assert cfg.method["trade_off"] == t.hparams["method.trade_off"] in (0.3, 3.0)
    assert cfg.optim.lr == t.hparams["optim.lr"] and cfg.output == str(tmp_path / "sw" / t.name)
    # The same hyper-parameter set on every task and seed (one set per method in a table).
    sets = {json.dumps(x.hparams, sort_keys=True) for x in trials}
    assert len(sets) == 3


def test_a_bad_trial_fails_the_plan_before_anything_runs(tmp_path):
    spec = sweep(tmp_path, search="grid", grid={"method.tradeoff": [1.0]})
    with pytest.raises(ConfigError, match="sweep trial .*tradeoff"):
        make_plan(spec, tmp_path)
    assert not (tmp_path / "sw").exists()


def test_sweep_file_errors_are_one_sentence(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"config": BASE, "workers": 0}))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "workers" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")


# -- running ----------------------------------------------------------------------------------
def _color_sweep(tmp_path, color_data, **fields):
    cfg = {
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "coop", "n_ctx": 2},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 2},
        "cache": {"views": 1, "dir": str(tmp_path / "cache")},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"config": cfg, "tasks": "all", "out": str(tmp_path / "sw"), **fields}))
    return path


def test_local_sweep_runs_skips_finished_resumes_partial_and_refuses_changes(tmp_path, color_data, capsys):
    path = _color_sweep(tmp_path, color_data, workers=2)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "2 to start" in capsys.readouterr().out and not (tmp_path / "sw").exists()

    assert main(["sweep", str(path), "-q"]) == 0
    runs = [tmp_path / "sw" / t / "default" / "seed1" for t in ("src-tgt", "tgt-src")]
    assert all((r / "summary.json").is_file() for r in runs)
    assert json.loads((runs[1] / "config.json").read_text())["data"]["target"] == "src"
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [t["exit_code"] for t in record["trials"]] == [0, 0]

    (runs[0] / "summary.json").unlink()  # as if killed before the end
    finished = (runs[1] / "summary.json").read_bytes()
    assert main(["sweep", str(path), "-q"]) == 0
    states = {t["name"]: (t["state"], t["exit_code"]) for t in json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]}
    assert states == {"src-tgt/default/seed1": ("partial", 0), "tgt-src/default/seed1": ("finished", None)}
    assert (runs[1] / "summary.json").read_bytes() == finished and (runs[0] / "summary.json").is_file()

    capsys.readouterr()
    assert main(["sweep", str(path), "overrides=[train.steps=3]"]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "train.steps" in err


def test_a_failing_trial_is_reported_and_the_others_finish(tmp_path, color_data, capsys):
    path = _color_sweep(tmp_path, color_data)
    (color_data / "tgt").rename(tmp_path / "moved")  # the tgt domain's folder is gone
    (color_data / "tgt").mkdir()
    assert main(["sweep", str(path), "tasks=[src->tgt]", "-q"]) == 1
    log = (tmp_path / "sw" / "src-tgt" / "default" / "seed1" / "train.log").read_text()
    assert "error" in log


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path, color_data):
    pytest.importorskip("submitit")
    path = _color_sweep(tmp_path, color_data, launcher="submitit_local", tasks=["src->tgt"])
    assert main(["sweep", str(path), "-q"]) == 0
    assert (tmp_path / "sw" / "src-tgt" / "default" / "seed1" / "summary.json").is_file()


SWEEPS = sorted((__import__("pathlib").Path(__file__).parents[2] / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_plan(path):
    spec, folder = load_sweep(path)
    trials = make_plan(spec, folder)
    assert len(trials) == 12 * spec.n_trials * len(spec.seeds)

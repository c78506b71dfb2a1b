"""``vlda demo`` end to end on tiny assets: every row, the summary.json format, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_demo_assets import tiny_recipe

from vlda.cli.main import main
from vlda.demo import assets as demo_assets
from vlda.demo.run import CLASSIC_METHODS, METHODS, select_methods
from vlda.demo.tables import format_table

ROW_KEYS = {"method", "target_acc_last", "target_acc_selected", "target_acc_oracle", "source_acc"}


@pytest.fixture
def tiny_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(demo_assets, "DATA_KWARGS", {"per_class": 3, "handwritten_limit": 30})
    monkeypatch.setattr(demo_assets, "RECIPE", tiny_recipe())
    return tmp_path / "cache"


def test_demo_lists_the_paper_methods() -> None:
    assert list(METHODS) == ["zeroshot", "coop", "dapl", "pga", "adclip", "cmkd", "cmkd+rst"]
    assert "dann+gh" in CLASSIC_METHODS and "dann+ghpp" in CLASSIC_METHODS


def test_demo_runs_every_clip_row_and_writes_the_summary(
    tiny_assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--cache-dir", str(tiny_assets), "--steps", "2",
               "--methods", *METHODS, "source_only", "--workers", "1", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["rows"]] == list(METHODS)
    for row in summary["rows"] + summary["classic_rows"]:
        assert ROW_KEYS <= set(row)
        for key in ROW_KEYS - {"method"}:
            assert 0.0 <= row[key] <= 1.0, (row["method"], key)
        # the oracle is the best evaluation on target labels, so never below the other two
        assert row["target_acc_oracle"] >= max(row["target_acc_last"], row["target_acc_selected"])
    assert [r["method"] for r in summary["classic_rows"]] in ([], ["source_only"])
    printed = capsys.readouterr().out
    assert "pga" in printed and "oracle" in printed and str(out / "summary.json") in printed
    # the PGA row really used the PGA gradient strategy
    pga_summary = json.loads((out / "pga" / "seed1" / "summary.json").read_text())
    assert pga_summary["config"]["gradients"]["name"] == "pga"
    assert "cos" in json.dumps(pga_summary.get("gradients", {}))
    # each row ran with its own official optimiser; CMKD fine-tuned the tower without the cache
    cmkd = json.loads((out / "cmkd" / "seed1" / "summary.json").read_text())["config"]
    assert cmkd["optim"]["nesterov"] and cmkd["cache"]["enabled"] is False
    adclip = json.loads((out / "adclip" / "seed1" / "summary.json").read_text())["config"]
    assert adclip["optim"]["name"] == "adam" and adclip["cache"]["enabled"]
    # every validator's choice is reported, and the report is written
    for row in summary["rows"]:
        assert {"source_val_acc", "entropy", "snd", "zeroshot_agreement"} <= set(row["selected_by"])
    assert "zeroshot_agreement" not in summary["classic_rows"][0]["selected_by"]
    assert (out / "report" / "report.html").is_file() and "entropy" in printed
    rst_row = next(r for r in summary["rows"] if r["method"] == "cmkd+rst")
    assert 0 < rst_row["artefact_bytes"] < rst_row["dense_bytes"] and "artefact" in printed


def test_demo_rejects_an_unknown_method(tiny_assets: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown demo method"):
        from vlda.demo.run import run_demo

        run_demo(tmp_path / "demo", cache_dir=tiny_assets, methods=["dapl", "nope"])


def test_format_table_marks_the_oracle() -> None:
    row = {"method": "dapl", "target_acc_last": 0.5, "target_acc_selected": 0.4,
           "target_acc_oracle": 0.6, "source_acc": None}
    table = format_table([row])
    assert "0.500" in table and "0.400" in table and "0.600" in table and "oracle" in table


def _run_values(run_dir: Path) -> tuple[float, float, float]:
    """(last, selected, oracle) target accuracy of one run, read from its own metrics.jsonl:
    last line, best source-validation accuracy (earliest of ties), best target accuracy."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best_src = max(r["validator/source_val_acc"] for r in recs)
    selected = next(r for r in recs if r["validator/source_val_acc"] == best_src)
    return recs[-1]["target/metric"], selected["target/metric"], max(r["target/metric"] for r in recs)


def test_demo_seeds_give_mean_and_std_of_the_runs(
    tiny_assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--cache-dir", str(tiny_assets), "--steps", "3",
               "--methods", "zeroshot", "coop", "--seeds", "3", "--workers", "2", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2, 3]
    zs, coop = summary["rows"]
    assert zs["seeds"] == [1] and zs["std"]["target_acc_last"] is None  # no training: one run
    assert coop["seeds"] == [1, 2, 3]
    for i, key in enumerate(("target_acc_last", "target_acc_selected", "target_acc_oracle")):
        values = [_run_values(out / "coop" / f"seed{s}")[i] for s in (1, 2, 3)]
        assert [r[key] for r in coop["per_seed"]] == pytest.approx(values)
        mean = sum(values) / 3
        std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5  # sample std, n - 1
        assert coop[key] == pytest.approx(mean) and coop["std"][key] == pytest.approx(std)
    # each seed is its own run: its config says so
    seeds = [json.loads((out / "coop" / f"seed{s}" / "summary.json").read_text())["config"]["train"]["seed"]
             for s in (1, 2, 3)]
    assert seeds == [1, 2, 3]
    printed = capsys.readouterr().out
    assert f"{coop['target_acc_selected']:.3f} ± {coop['std']['target_acc_selected']:.3f}" in printed
    assert "demo wall time" in printed


@pytest.mark.slow
def test_demo_is_deterministic_per_seed_in_worker_processes(tiny_assets: Path, tmp_path: Path) -> None:
    """The same seeds give the same numbers in one process and in two worker processes."""
    args = ["--cache-dir", str(tiny_assets), "--steps", "3", "--methods", "coop", "dapl", "--seeds", "2", "-q"]
    assert main(["demo", "--out", str(tmp_path / "a"), "--workers", "1", *args]) == 0
    assert main(["demo", "--out", str(tmp_path / "b"), "--workers", "2", *args]) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    keys = ("target_acc_last", "target_acc_selected", "target_acc_oracle", "selected_by")
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert [{k: r[k] for k in keys} for r in ra["per_seed"]] == [{k: r[k] for k in keys} for r in rb["per_seed"]]
    assert b["workers"] == 2


def test_select_methods_groups_and_order() -> None:
    clip, classic = select_methods(["clip", "dapl", "source_only"])
    assert clip == list(METHODS) and classic == ["source_only"]
    assert select_methods(["classic"]) == ([], list(CLASSIC_METHODS))
    assert select_methods(["all"]) == (list(METHODS), list(CLASSIC_METHODS))
    # the default: every CLIP row, the classic rows but the two GH ones (twice DANN's cost)
    assert select_methods(None) == (list(METHODS), ["source_only", "dann", "cdan", "mcc", "fixmatch"])


@pytest.mark.parametrize("option", [["--seeds", "0"], ["--workers", "0"], ["--threads", "0"],
                                    ["--methods", "nope"]])
def test_demo_bad_options_exit_2(tmp_path: Path, option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "c"), *option, "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("vlda demo: error:") and "Traceback" not in err
    assert not (tmp_path / "c").exists()  # refused before anything was built


def test_the_world_is_built_with_its_own_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count changes the world's rounding: it is the world's, not the runs'."""
    import torch

    from vlda.demo.run import run_demo

    seen: list[int] = []

    def fake_pretrain(*args: object, **kwargs: object) -> None:
        seen.append(torch.get_num_threads())
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(demo_assets, "build_demo_data", lambda *a, **k: None)
    monkeypatch.setattr(demo_assets, "pretrain_demo_clip", fake_pretrain)
    before = torch.get_num_threads()
    for threads in (1, 3):
        with pytest.raises(FileNotFoundError, match="stop here"):
            run_demo(tmp_path / "demo", cache_dir=tmp_path / "c", methods=["zeroshot"], threads=threads)
    assert seen == [demo_assets.BUILD_THREADS] * 2
    assert torch.get_num_threads() == before  # restored afterwards

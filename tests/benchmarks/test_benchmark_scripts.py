"""Smoke runs of the benchmark scripts: they still run against the library and write the JSON
their docs promise. (Timings are never asserted: speed is measured by the scripts, not tests.)"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))


def _main(name: str):
    return importlib.import_module(name).main


def test_dapl_speed_writes_four_settings_per_class_count(tmp_path: Path) -> None:
    out = tmp_path / "dapl.json"
    _main("dapl_speed")(["--classes", "5", "--batch", "4", "--steps", "1", "--warmup", "0",
                         "--repeats", "1", "--bank", "16", "--files", "4", "--threads", "1",
                         "--out", str(out)])
    rows = json.loads(out.read_text())["settings"]
    assert {(r["cache"], r["cut_at_eot"]) for r in rows} == {
        (False, False), (False, True), (True, False), (True, True)}
    assert all(r["steps_per_s"] > 0 for r in rows)


def test_pga_speed_quick_reports_speedup_and_floor_ratio(tmp_path: Path) -> None:
    out = tmp_path / "pga.json"
    _main("pga_speed")(["--quick", "--classes", "5", "--batch", "4", "--steps", "1",
                        "--warmup", "0", "--repeats", "1", "--bank", "16", "--threads", "1",
                        "--out", str(out)])
    settings = json.loads(out.read_text())["settings"]
    assert {s["csc"] for s in settings} == {False, True}
    for s in settings:
        assert {"speedup", "floor_ratio", "peak_mem_mb", "model", "csc", "device"} <= set(s)
        assert s["speedup"] > 0 and s["floor_ratio"] > 0


def test_gh_cost_compares_every_strategy_with_the_sum(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    out = tmp_path / "gh.json"
    _main("gh_cost")(["--pretrained", "none", "--size", "32", "--batch", "2", "--classes", "3",
                      "--steps", "1", "--warmup", "0", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["strategy"]: r for r in result["rows"]}
    assert {"sum", "gh", "ghpp", "pcgrad"} <= set(rows) and rows["sum"]["x_sum"] == 1.0


def test_cmkd_speed_compares_vlda_with_the_official_step(tmp_path: Path) -> None:
    out = tmp_path / "cmkd.json"
    _main("cmkd_speed")(["--models", "tiny", "--batch", "2", "--classes", "3", "--steps", "1",
                         "--warmup", "0", "--repeats", "1", "--threads", "1", "--out", str(out)])
    (model,) = json.loads(out.read_text())["models"]
    rows = {r["setting"]: r for r in model["rows"]}
    assert set(rows) == {"official", "official_rst", "vlda"} and rows["official"]["x_official_time"] == 1.0
    assert all(r["images_per_s"] > 0 for r in rows.values()) and "official_rst_overhead_pct" in model


def test_rst_speed_quick_reports_both_projections_against_the_step(tmp_path: Path) -> None:
    out = tmp_path / "rst.json"
    _main("rst_speed")(["--quick", "--classes", "3", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["setting"]: r for r in result["rows"]}
    assert set(rows) == {"step", "rst", "rst_official_style"} and rows["step"]["x_step"] == 1.0
    assert all(r["s_per_call"] > 0 and r["median_x_step"] > 0 for r in rows.values())
    assert result["setup"]["tower_params"] > 0 and "command" in result


def teardown_module() -> None:
    for name in ("dapl_speed", "pga_speed", "gh_cost", "cmkd_speed", "rst_speed", "adclip_speed", "bench_common"):
        sys.modules.pop(name, None)


def test_adclip_speed_compares_with_the_official_style_step(tmp_path: Path) -> None:
    out = tmp_path / "adclip.json"
    _main("adclip_speed")(["--classes", "3", "--batch", "2", "--steps", "1", "--warmup", "0",
                           "--repeats", "1", "--bank", "8", "--threads", "1", "--out", str(out)])
    rows = {r["setting"]: r for r in json.loads(out.read_text())["settings"]}
    assert set(rows) == {"official", "vlda_images", "vlda_cached"}
    assert rows["official"]["speedup_vs_official"] == 1.0 and all(r["steps_per_s"] > 0 for r in rows.values())


def test_cache_scale_synthetic_cache_loads_through_the_real_reader(tmp_path: Path, monkeypatch) -> None:
    """The benchmark's fast path writes what ``vlda cache`` writes: the training run of the
    benchmark's config loads every set (checksums verified) without building anything."""
    import argparse

    import numpy as np

    from vlda.data import feature_cache
    from vlda.engine import experiment
    from vlda.engine.experiment import build_trainer, cache_features

    bench = importlib.import_module("cache_scale")
    args = argparse.Namespace(views=2, batch=8, steps=1, warmup=0, eval_batch=64)
    info = bench.write_lists(tmp_path, 800)
    assert info["lines"] == sum(bench.split_counts(800).values())
    monkeypatch.setattr(experiment, "load_run_backbone", lambda cfg, device="cpu": bench.tiny_clip_512())
    monkeypatch.setattr(feature_cache, "_build", bench.synthetic_build)
    assert cache_features(bench.run_config(tmp_path, args)) == 6  # 5 sources + the target
    monkeypatch.setattr(feature_cache, "_build", bench._refuse_build)
    trainer = build_trainer(bench.run_config(tmp_path, args), tmp_path / "run")
    for src in trainer.source_stream.sources + trainer.target_stream.sources:
        fs = src.feature_set
        assert isinstance(fs.features, np.memmap) and fs.features.dtype == np.float16
        assert fs.features.shape[1:] == (3, 512) and bool(fs.valid.all())
        assert np.isfinite(np.asarray(fs.features[:4], dtype=np.float32)).all()


@pytest.mark.slow
def test_cache_scale_quick_measures_every_size(tmp_path: Path) -> None:
    """The DomainNet-scale benchmark on two small sizes: its synthetic cache loads through the
    real reader (a miss would raise in the measured process) and every size gets its row."""
    out = tmp_path / "scale.json"
    _main("cache_scale")(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["size"] for r in rows] == [2000, 4000]
    for r in rows:
        assert r["lines"] >= r["size"] - 12 and r["cache_bytes"] > r["lines"] * 2 * 512 * 2
        assert r["step_ms"]["best"] > 0 and r["anon_eval_mb"] > 0 and r["eval_rows"] > 0
        assert r["lists"]["read_s"]["best"] > 0
    assert not (tmp_path / "work").exists()  # removed without --keep

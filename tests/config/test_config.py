"""The typed config: every value converted to its declared type or refused in one sentence;
the method and gradients options checked at load time, before any data is read."""

import time

import pytest

from vlda.config import ConfigError, RunConfig, build_config, load_config
from vlda.engine.options import check_options, load_run_config

BASE = ["data.benchmark=officehome", "data.root=/nowhere", "data.source=[art]", "data.target=clipart"]


def test_values_are_converted_to_their_declared_types():
    # YAML reads 1e-3 and 5e-1 as strings and `off` as False: each becomes what the key declares
    cfg = load_run_config(None, [*BASE, "optim.lr=1e-3", "method.name=dapl", "method.tau=5e-1", "train.amp=off"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)
    assert cfg.method["tau"] == 0.5 and isinstance(cfg.method["tau"], float)
    assert cfg.train.amp == "off"
    for amp in ("bf16", "fp16"):
        assert load_config(None, [*BASE, f"train.amp={amp}"]).train.amp == amp
    assert load_run_config(None, [*BASE, "gradients.name=pga", "gradients.radius=3e-4"]).gradients["radius"] == 3e-4


@pytest.mark.parametrize(
    "override,words",
    [
        ("optim.lr=fast", ["optim.lr", "'fast'", "a number"]),
        ("train.steps=1.5", ["train.steps", "1.5", "an integer"]),
        ("train.amp=fp32", ["train.amp", "'fp32'", "'off', 'bf16' or 'fp16'"]),
        ("train.progress=maybe", ["train.progress", "'maybe'", "true or false"]),
        ("optim.lrr=1", ["optim.lrr", "did you mean 'lr'"]),
        ("trian.steps=1", ["trian", "did you mean 'train'"]),
    ],
)
def test_a_wrong_value_is_one_sentence_naming_key_value_and_type(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [*BASE, override])
    msg = str(err.value)
    assert all(w in msg for w in words), msg
    assert "\n" not in msg and "pydantic" not in msg


@pytest.mark.parametrize(
    "override,words",
    [
        ("method.tua=0.5", ["tua", "unknown option", "tau"]),
        ("method.tau=high", ["method.tau", "'high'", "number"]),
        ("gradients.radius=big", ["gradients.radius", "'big'", "number"]),
        ("gradients.radus=0.1", ["radus", "unknown option", "radius"]),
        ("gradients.name=pgaa", ["unknown gradient strategy", "pga"]),
        ("method.name=dappl", ["unknown method", "dapl"]),
        ("selection.validators=[oracle]", ["unknown validator", "oracle"]),
        ("data.target=nowhere", ["officehome has no domain 'nowhere'"]),
    ],
)
def test_method_and_gradients_options_are_checked_when_the_config_is_loaded(override, words):
    overrides = [*BASE, "method.name=dapl", "gradients.name=pga", override]
    with pytest.raises(ConfigError) as err:
        load_run_config(None, overrides)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_typo_fails_in_under_a_second_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    from vlda.cli.main import main
    from vlda.engine import experiment

    monkeypatch.setattr(experiment, "load_run_data", lambda cfg: pytest.fail("data was read"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {benchmark: officehome, root: /nowhere, source: [art], target: clipart}\n"
                   "method: {name: dapl, tau: 0.5}\n")
    t0 = time.perf_counter()
    code = main(["train", "-c", str(cfg), "method.tua=0.3"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and "tua" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert elapsed < 1.0


def test_saved_config_loads_back_unchanged():
    cfg = load_run_config(None, [*BASE, "train.epochs=3", "method.name=pga", "gradients.name=pga"])
    again = check_options(build_config(cfg.to_dict()))
    assert again == cfg and again.train.epochs == 3 and again.train.steps is None


def test_run_length():
    assert load_config(None, BASE).train.fixed_steps == 1000
    assert load_config(None, [*BASE, "train.steps=7"]).train.fixed_steps == 7
    assert load_config(None, [*BASE, "train.epochs=2"]).train.fixed_steps is None


def test_config_model_forbids_unknown_keys_and_validates_assignment():
    cfg = load_config(None, BASE)
    assert isinstance(cfg, RunConfig)
    with pytest.raises(ValueError):
        cfg.optim.lr = "fast"  # type: ignore[assignment]


def test_a_section_typo_on_the_command_line_fails_before_torch_is_imported(tmp_path):
    """The fixed sections are checked before the registries (which import torch) are loaded."""
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {benchmark: officehome, root: /nowhere, source: [art], target: clipart}\n")
    code = (
        f"import sys; from vlda.cli.main import main; rc = main(['train', '-c', {str(cfg)!r}, 'optim.lr=fast']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "NO-TORCH" in out.stdout
    assert "optim.lr = 'fast'" in out.stderr and "Traceback" not in out.stderr


def test_rst_needs_a_method_that_fine_tunes_an_encoder():
    with pytest.raises(ConfigError, match="rst.enabled"):
        load_run_config(None, [*BASE, "method.name=dapl", "rst.enabled=true"])
    cfg = load_run_config(None, [*BASE, "method.name=dapl", "rst.threshold=1e-6"])
    assert cfg.rst.threshold == 1e-6 and not cfg.rst.enabled

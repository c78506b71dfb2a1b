"""Every failure a user can cause is one sentence, exit code 2, no traceback (issue #12, items
3-5, 8): damaged weights and checkpoints, a full disk, empty class folders, list labels out of
range, no training steps, batches larger than a domain, unreadable images in strict mode, class
names attached to prompt names, and quiet feature-cache builds."""

import errno
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import kill_after_first_checkpoint
from vlda.cli.main import main
from vlda.models.weights_file import DamagedWeightsError, load_weights_file

from .test_cli import write_config


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "weights_only" not in err  # never torch's advice to load without the safety check
    return err


def _damaged_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(256)}, good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "garbage": b"this is not a weights file" * 4,
        "empty": b"",
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(content)

    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    out["code"] = tmp_path / "code.pt"
    torch.save({"w": Code()}, out["code"])
    return out


def test_damaged_weights_files_are_one_sentence(tmp_path):
    files = _damaged_files(tmp_path)
    for name, path in files.items():
        with pytest.raises(DamagedWeightsError) as err:
            load_weights_file(path)
        msg = str(err.value)
        assert msg.startswith(f"the weights file {path} ") and "\n" not in msg, msg
        assert "weights_only" not in msg and "download it again or check the path" in msg
        if name == "code":
            assert "holds pickled Python code" in msg and "getcwd" in msg
        else:
            assert "is damaged (" in msg
    assert "the file is empty" in str(pytest.raises(DamagedWeightsError, load_weights_file, files["empty"]).value)


def test_a_damaged_open_clip_folder_or_file_is_one_sentence(tmp_path, tiny_vit, monkeypatch):
    import open_clip

    from vlda.models.loading import load_backbone

    cfg = {"model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(tiny_vit.model.state_dict(), tmp_path / "weights.pt")
    data = (tmp_path / "weights.pt").read_bytes()
    (tmp_path / "weights.pt").write_bytes(data[: len(data) - 1000])
    with pytest.raises(DamagedWeightsError, match=r"weights\.pt is damaged \(PytorchStreamReader"):
        load_backbone(f"open_clip:{tmp_path}")
    # A local file given as model.pretrained: whatever open_clip's loader raises is translated.
    monkeypatch.setattr(open_clip, "create_model", lambda name, pretrained: torch.load(pretrained, weights_only=True))
    with pytest.raises(DamagedWeightsError, match="weights.pt is damaged"):
        load_backbone(f"open_clip:RN50@{tmp_path / 'weights.pt'}")


def test_damaged_weights_on_the_command_line(tmp_path, color_data, capsys):
    bad = _damaged_files(tmp_path)["truncated"]
    cfg = write_config(tmp_path, color_data, model={"backbone": "timm", "name": "test_resnet", "pretrained": str(bad)},
                       method={"name": "source_only"})
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    err = _one_line(capsys)
    assert f"the weights file {bad} is damaged" in err and "download it again" in err
    assert not (tmp_path / "run").exists()

    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--weights", str(bad), "-q"]) == 2
    assert "is damaged" in _one_line(capsys)


def test_a_truncated_checkpoint_on_resume_says_what_to_do(tmp_path, color_data, capsys, monkeypatch):
    cfg = write_config(tmp_path, color_data)
    real = kill_after_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(cfg), "-q"]) == 130  # killed after its first checkpoint
    from vlda.engine import trainer

    monkeypatch.setattr(trainer, "save_atomic", real)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 2
    err = _one_line(capsys)
    assert f"the checkpoint {ckpt} is damaged" in err and "--overwrite" in err
    assert main(["train", "-c", str(cfg), "-q", "--overwrite"]) == 0


def test_a_missing_checkpoint_weights_file_on_resume_says_what_to_do(tmp_path, color_data, capsys, monkeypatch):
    cfg = write_config(tmp_path, color_data)
    real = kill_after_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(cfg), "-q"]) == 130
    from vlda.engine import trainer

    monkeypatch.setattr(trainer, "save_atomic", real)
    (weights,) = (tmp_path / "run").glob("checkpoint.weights-*.pt")
    weights.unlink()
    capsys.readouterr()
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 2
    err = _one_line(capsys)
    assert f"the checkpoint's weights file {weights} is missing" in err and "--overwrite" in err


def test_a_torch_file_that_is_not_a_vlda_checkpoint_on_resume_is_refused(tmp_path, color_data, capsys, monkeypatch):
    cfg = write_config(tmp_path, color_data)
    real = kill_after_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(cfg), "-q"]) == 130
    from vlda.engine import trainer

    monkeypatch.setattr(trainer, "save_atomic", real)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    torch.save({"model": torch.zeros(2)}, ckpt)  # e.g. another tool's weights copied over it
    capsys.readouterr()
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 2
    err = _one_line(capsys)
    assert f"{ckpt} is not a vlda checkpoint" in err and "--overwrite" in err


def test_a_checkpoint_of_an_older_vlda_with_the_weights_inside_still_resumes(tmp_path, color_data, monkeypatch):
    from vlda.engine.checkpoint import load_checkpoint

    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q"]) == 0
    want = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]["last"]
    for p in (tmp_path / "run").iterdir():
        if p.name not in ("config.json", "task.json"):
            p.unlink() if p.is_file() else None
    real = kill_after_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(cfg), "-q", "--overwrite"]) == 130
    from vlda.engine import trainer

    monkeypatch.setattr(trainer, "save_atomic", real)
    run = tmp_path / "run"
    old = load_checkpoint(run)  # the layout before the weights file: weights inside checkpoint.pt
    old.pop("weights")
    torch.save(old, run / "checkpoint.pt")
    for p in run.glob("checkpoint.weights-*.pt"):
        p.unlink()
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 0
    got = json.loads((run / "summary.json").read_text())["results"]["last"]
    assert got == want


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, color_data, capsys, monkeypatch):
    from vlda import files

    cfg = write_config(tmp_path, color_data)
    real_fsync, seen = os.fsync, {"n": 0}

    def fsync(fd):  # the second checkpoint write finds the disk full
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            seen["n"] += 1
            if seen["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file is written")
    monkeypatch.setattr(files.os, "fsync", fsync)
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    err = _one_line(capsys)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert "no space left on the device" in err and f"{ckpt} could not be written" in err
    assert "is intact" in err and "--resume" in err
    assert torch.load(ckpt, weights_only=True)["step"] == 2  # the first checkpoint, loadable
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert main(["train", "-c", str(cfg), "-q", "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["results"]["last"]["step"] == 4


def test_an_empty_class_folder_warns_and_keeps_the_class_count(tmp_path, color_data, caplog):
    for f in (color_data / "tgt" / "green").iterdir():
        f.unlink()
    cfg = write_config(tmp_path, color_data)
    with caplog.at_level(logging.INFO):
        assert main(["train", "-c", str(cfg), "-q"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(color_data / "tgt" / "green") in w and "3 classes" in w for w in warned), warned
    task = json.loads((tmp_path / "run" / "task.json").read_text())
    assert task["classnames"] == ["blue", "green", "red"]


def test_a_list_label_out_of_range_names_file_and_line(tmp_path, color_data, capsys):
    lst = tmp_path / "tgt.txt"
    lst.write_text("red/0.png 2\nred/1.png 3\n")
    custom = {"root": str(color_data), "classnames": ["blue", "green", "red"],
              "domains": {"src": "src", "tgt": {"list": str(lst), "images": "tgt"}}}
    cfg = write_config(tmp_path, color_data)
    raw = json.loads(json.dumps(__import__("yaml").safe_load(cfg.read_text())))
    raw["data"]["custom"] = custom
    cfg.write_text(__import__("yaml").safe_dump(raw))
    assert main(["train", "-c", str(cfg), "-q"]) == 2
    err = _one_line(capsys)
    assert f"{lst}:2: label 3 is outside 0..2 (3 classes)" in err


def test_zero_training_steps_is_refused_before_anything_is_written(tmp_path, color_data, capsys):
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q", "train.steps=0"]) == 2
    assert "train.steps=0" in _one_line(capsys)
    assert not (tmp_path / "run").exists()
    # zero-shot trains nothing: no steps is what it does
    cfg = write_config(tmp_path, color_data, method={"name": "zeroshot"})
    assert main(["train", "-c", str(cfg), "-q", "train.steps=0"]) == 0


def test_a_batch_larger_than_a_domain_warns_that_images_repeat(tmp_path, color_data, caplog):
    cfg = write_config(tmp_path, color_data, train={"steps": 2, "batch_size": 16, "eval_every": 2})
    with caplog.at_level(logging.INFO):
        assert main(["train", "-c", str(cfg), "-q"]) == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # 12 source images, 3 held out for validation -> 9; the target keeps its 12
    assert "16 images from source domain 'src', which has only 9" in warned
    assert "16 images from target domain 'tgt', which has only 12" in warned
    assert warned.count("repeat within a batch") == 2


def test_strict_images_lists_every_unreadable_file_without_a_traceback(tmp_path, color_data, capsys):
    bad = [color_data / "tgt" / "red" / "x.png", color_data / "src" / "blue" / "y.png"]
    for p in bad:
        p.write_bytes(b"broken")
    cfg = write_config(tmp_path, color_data)
    assert main(["train", "-c", str(cfg), "-q", "data.strict_images=true"]) == 2
    err = capsys.readouterr().err.strip()
    first, *rest = err.splitlines()
    assert "Traceback" not in err
    assert first.startswith("vlda train: error: 2 image(s) cannot be read and data.strict_images is true")
    assert sorted(line.split()[0] for line in rest) == sorted(str(p) for p in bad)
    assert not (tmp_path / "run").exists()


def test_a_run_prints_and_records_each_class_with_its_prompt_name(tmp_path, color_data, caplog):
    cfg = write_config(tmp_path, color_data)
    raw = __import__("yaml").safe_load(cfg.read_text())
    raw["data"]["custom"]["prompt_names"] = {"red": "crimson square", "Blue": "navy square"}
    cfg.write_text(__import__("yaml").safe_dump(raw))
    with caplog.at_level(logging.INFO):
        assert main(["train", "-c", str(cfg), "-q"]) == 0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "0: blue -> 'navy square', 1: green -> 'green', 2: red -> 'crimson square'" in logged
    task = json.loads((tmp_path / "run" / "task.json").read_text())
    assert task["classes"] == [
        {"label": 0, "name": "blue", "prompt_name": "navy square"},
        {"label": 1, "name": "green", "prompt_name": "green"},
        {"label": 2, "name": "red", "prompt_name": "crimson square"},
    ]


def test_quiet_feature_cache_build_logs_start_progress_and_end(tmp_path, color_data, caplog, monkeypatch):
    from vlda.data import heartbeat

    monkeypatch.setattr(heartbeat, "EVERY_SECONDS", 0.0)  # a line after every batch
    cfg = write_config(tmp_path, color_data)
    with caplog.at_level(logging.INFO, logger="vlda"):
        assert main(["cache", "-c", str(cfg), "-q"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "vlda.data"]
    starts = [m for m in lines if m.startswith("building the feature cache of 12 images x 3 views")]
    ends = [m for m in lines if m.startswith("built the feature cache")]
    assert len(starts) >= 2 and len(ends) == 2  # two domains
    assert any("36/36 (100%)" in m for m in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vlda"):
        assert main(["cache", "-c", str(cfg), "-q"]) == 0  # cached: nothing is built, nothing said
    assert not [r for r in caplog.records if r.getMessage().startswith("building")]


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "--json"]])
def test_help_and_list_import_neither_torch_nor_pydantic(argv):
    code = (
        "import sys, time; t = time.perf_counter(); from vlda.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'pydantic', 'PIL') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr


def test_list_names_every_registered_method_and_strategy_and_says_what_is_offline(capsys):
    from vlda.cli.catalog import GRADIENTS, METHODS
    from vlda.gradients.registry import STRATEGIES
    from vlda.methods.registry import METHODS as REGISTERED
    from vlda.models.loading import KNOWN_BACKBONES

    assert sorted(METHODS) == sorted(REGISTERED), "add the new method to vlda/cli/catalog.py"
    assert sorted(GRADIENTS) == sorted(STRATEGIES), "add the new strategy to vlda/cli/catalog.py"
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backbones"] == list(KNOWN_BACKBONES)
    assert out["offline_backbones"] == ["tiny:vit", "tiny:resnet", "tiny:hf", "timm:efficientnet_lite0@imagenet"]
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "tiny:* are random models for tests" in text
    assert "timm:efficientnet_lite0@imagenet" in text and "offline" in text


def test_a_damaged_hugging_face_folder_is_one_sentence(tmp_path):
    pytest.importorskip("transformers")
    from vlda.models.loading import load_backbone

    tiny = load_backbone("tiny:hf")
    tiny.model.save_pretrained(tmp_path)
    weights = next(p for p in tmp_path.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(DamagedWeightsError) as err:
        load_backbone(f"hf:{tmp_path}")
    msg = str(err.value)
    assert msg.startswith(f"the Hugging Face model folder {tmp_path} is damaged (") and "\n" not in msg


def test_a_full_disk_during_a_feature_cache_build_is_one_sentence(tmp_path, color_data, capsys, monkeypatch):
    from vlda.data import feature_cache

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if not hasattr(feature_cache.os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")
    monkeypatch.setattr(feature_cache.os, "posix_fallocate", full)
    cfg = write_config(tmp_path, color_data)
    assert main(["cache", "-c", str(cfg), "-q"]) == 2
    err = _one_line(capsys)
    assert "no space left on the device" in err and "features.npy could not be written" in err
    assert not [p for p in (tmp_path / "cache").iterdir()]  # the half-built directory is gone

"""Residual Sparse Training: the projection against a direct elementwise computation, its
invariant over a run, the sparse-residual artefact (export -> load -> identical predictions,
through ``vlda eval`` and ``vlda predict`` too), the summary's counts, and exact resume."""

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from conftest import kill_after_first_checkpoint
from vlda.cli.main import main
from vlda.config import ConfigError, build_config
from vlda.engine import trainer as trainer_mod
from vlda.engine.artefact import FORMAT, expand_state, load_weights, sparse_state
from vlda.engine.checkpoint import load_checkpoint, load_safe
from vlda.engine.experiment import build_trainer, run
from vlda.engine.rst import ResidualSparseTraining, encoder_parameters, tensors_digest
from vlda.methods import registry
from vlda.methods.base import Method, Task

TASK = Task(("a", "b"), ("a", "b"), ("s",), "t")


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Parameter(torch.randn(3, 2, 2))
        self.frozen = nn.Parameter(torch.randn(4), requires_grad=False)


class _Toy(Method):
    image_encoder = "trained"

    def attach_backbone(self, backbone: nn.Module) -> None:
        self.enc = backbone
        self.head = nn.Linear(5, 2)

    def finetuned_encoder(self) -> nn.Module:
        return self.enc


def _toy() -> _Toy:
    torch.manual_seed(0)
    return _Toy(_Encoder(), TASK, None)


# -- the projection -----------------------------------------------------------------------------
def test_projection_keeps_weights_that_moved_more_than_tau_and_resets_the_others_bitwise():
    m, tau = _toy(), 1e-3
    rst = ResidualSparseTraining(m, tau)
    assert rst.names == ["enc.b", "enc.a.weight", "enc.a.bias"]  # the frozen tensor is not RST's
    theta0 = [p.detach().clone() for p in rst.params]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in rst.params:  # drifts from far below to far above tau
            p.add_(torch.randn(p.shape, generator=gen) * tau * 2.0 ** torch.randint(-4, 4, p.shape, generator=gen))
        rst.params[0].view(-1)[0] = theta0[0].view(-1)[0] + tau  # |d| == tau (in fp32, or next to it)
    moved = [p.detach().clone() for p in rst.params]
    rst.project()
    for p, p0, q in zip(rst.params, theta0, moved, strict=True):
        want = torch.where((q - p0).abs() > tau, q, p0)  # the definition, per element
        assert torch.equal(p, want)
        assert 0 < int((p != p0).sum()) < p.numel()  # some kept, some reset: the test can fail
    assert rst.changed() == sum(int((p != p0).sum()) for p, p0 in zip(rst.params, theta0, strict=True))
    before = [p.detach().clone() for p in rst.params]
    rst.project()  # idempotent: a skipped step (GradScaler) changes nothing
    assert all(torch.equal(p, b) for p, b in zip(rst.params, before, strict=True))


def test_rst_refuses_a_method_that_trains_no_encoder_parameter():
    m = _toy()
    m.enc.requires_grad_(False)
    with pytest.raises(ValueError, match="rst.enabled"):
        ResidualSparseTraining(m, 1e-5)


# -- the artefact ---------------------------------------------------------------------------------
def test_sparse_residual_round_trips_bitwise_and_refuses_other_pretrained_weights():
    m = _toy()
    names, params = encoder_parameters(m)
    theta0 = [p.detach().clone() for p in params]
    with torch.no_grad():
        params[1].view(-1)[[1, 7]] += torch.tensor([0.3, -1e-7])  # a tiny change is stored too
        params[0].mul_(1.0 + 1e-3)
    dense = m.trainable_state_dict()
    state = sparse_state(dense, names, theta0, tensors_digest(theta0), 1e-5)
    assert state["format"] == FORMAT and set(state["dense"]) == {"head.weight", "head.bias"}
    assert state["encoder"]["enc.a.weight"]["index"].tolist() == [1, 7]
    assert state["encoder"]["enc.a.bias"]["index"].numel() == 0
    back = expand_state(state, names, theta0)
    assert set(back) == set(dense) and all(torch.equal(back[k], v) for k, v in dense.items())
    other = [t + 1 for t in theta0]
    with pytest.raises(ValueError, match="model.pretrained"):
        expand_state(state, names, other)


# -- runs -------------------------------------------------------------------------------------------
def _classic_config(data_root, out, **rst):
    return build_config({
        "data": {"custom": {"root": str(data_root), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "timm", "name": "test_resnet", "pretrained": None, "image_size": 32},
        "method": {"name": "dann", "bottleneck_dim": 16, "discriminator_hidden": 16, "discriminator_bn": False},
        "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "progress": False, "seed": 5},
        "optim": {"name": "sgd", "lr": 0.01},
        "rst": {"enabled": True, "threshold": 2e-5, **rst},
        "output": str(out),
    })


def _pretrained_encoder(cfg, tmp_path):
    """θ0 as a fresh build of the run's config gives it (independent of the trainer's copy)."""
    t = build_trainer(cfg, tmp_path / "fresh")
    names, params = encoder_parameters(t.method)
    return names, [p.detach().clone() for p in params]


def test_a_classic_run_keeps_the_invariant_and_reports_its_downstream_parameters(color_data, tmp_path):
    cfg = _classic_config(color_data, tmp_path / "run")
    summary = run(cfg)
    names, theta0 = _pretrained_encoder(cfg, tmp_path)
    last = load_safe(tmp_path / "run" / "last.pt")
    assert last["format"] == FORMAT and last["threshold"] == 2e-5
    dense = expand_state(last, names, theta0)
    changed = 0
    for n, p0 in zip(names, theta0, strict=True):
        d = (dense[n] - p0).abs()
        assert bool(((d == 0) | (d > 2e-5)).all()), n  # every weight is θ0 or moved by more than τ
        changed += int((d > 0).sum())
    numel = sum(t.numel() for t in theta0)
    assert 0 < changed < numel
    stats = summary["rst"]["last"]
    assert stats["encoder_changed"] == changed and stats["encoder_params"] == numel
    assert stats["encoder_changed_pct"] == pytest.approx(100 * changed / numel, abs=1e-4)
    head = sum(v.numel() for k, v in dense.items() if k not in names and not k.startswith("buffer:"))
    assert stats["other_params"] == head and stats["downstream_params"] == changed + head
    assert stats["file_bytes"] == (tmp_path / "run" / "last.pt").stat().st_size
    assert stats["dense_bytes"] == sum(v.numel() * v.element_size() for v in dense.values())
    assert "selected" in summary["rst"]
    plain = run(_classic_config(color_data, tmp_path / "plain", enabled=False))
    assert "rst" not in plain  # and the projection did something: a dense run moves every weight
    plain_last = load_safe(tmp_path / "plain" / "last.pt")
    assert sum(int((plain_last[n] != p0).sum()) for n, p0 in zip(names, theta0, strict=True)) > changed


def test_rst_needs_trained_encoder_parameters(color_data, tmp_path):
    cfg = _classic_config(color_data, tmp_path / "run")
    cfg.method["lr_backbone"] = 0.0
    with pytest.raises(ConfigError, match="rst.enabled"):
        build_trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_killed_and_resumed_rst_run_is_bitwise_equal(color_data, tmp_path, monkeypatch):
    run(_classic_config(color_data, tmp_path / "straight"))
    want = load_checkpoint(tmp_path / "straight")
    real = kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(_classic_config(color_data, tmp_path / "killed"))
    assert load_checkpoint(tmp_path / "killed")["trainable"]["format"] == FORMAT
    monkeypatch.setattr(trainer_mod, "save_atomic", real)
    torch.manual_seed(1234)
    run(_classic_config(color_data, tmp_path / "killed"), resume=True)
    got = load_checkpoint(tmp_path / "killed")
    names, theta0 = _pretrained_encoder(_classic_config(color_data, tmp_path / "x"), tmp_path)
    a, b = expand_state(got["trainable"], names, theta0), expand_state(want["trainable"], names, theta0)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    gs, ws = got["stepper"]["optimizer"]["state"], want["stepper"]["optimizer"]["state"]
    assert gs.keys() == ws.keys()
    for i in ws:
        assert all(torch.equal(gs[i][k], v) for k, v in ws[i].items() if torch.is_tensor(v)), i


def test_export_load_gives_the_dense_models_predictions_through_eval_and_predict(color_data, tmp_path, capsys):
    cfg = _classic_config(color_data, tmp_path / "run")
    trainer = build_trainer(cfg, tmp_path / "run")
    trainer.fit()
    dense_model = trainer.method.eval()  # the fine-tuned model in memory, dense
    fresh = build_trainer(cfg, tmp_path / "fresh").method.eval()
    load_weights(fresh, tmp_path / "run" / "last.pt")
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        want = dense_model.logits(dense_model.image_features({"images": images}))
        got = fresh.logits(fresh.image_features({"images": images}))
    assert torch.equal(got, want)

    run_dir = tmp_path / "run"
    record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert main(["eval", "--run", str(run_dir), "--weights", "last", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target/acc"] == record["target/acc"]  # the dense model's evaluation at that step
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run_dir), "--weights", "last", "--images", str(color_data / "tgt"),
                 "--out", str(preds)]) == 0
    rows = list(csv.DictReader(preds.open()))
    from vlda.data.dataset import ImageDataset, collate
    from vlda.data.transforms import eval_transform

    bb = dense_model.backbone
    ds = ImageDataset([(r["path"], -1) for r in rows], eval_transform(bb.image_size, bb.mean, bb.std))
    with torch.no_grad():
        batch = collate([ds[i] for i in range(len(ds))])["images"]
        dense_pred = dense_model.logits(dense_model.image_features({"images": batch})).argmax(-1)
    assert [int(r["label_index"]) for r in rows] == dense_pred.tolist()


def test_loading_a_residual_onto_other_pretrained_weights_is_one_sentence(color_data, tmp_path, capsys):
    run(_classic_config(color_data, tmp_path / "run"))
    assert main(["eval", "--run", str(tmp_path / "run"), "--quiet", "train.seed=6"]) == 2
    err = capsys.readouterr().err
    assert "model.pretrained" in err and "Traceback" not in err


# -- a method that fine-tunes the CLIP image tower -----------------------------------------------------
@dataclass
class _ProbeParams:
    lr_head: float = 1.0


class _ClipProbe(Method):
    """The tiny CLIP's image tower, fine-tuned, with a linear head (the CMKD family's shape)."""

    name = "rst_clip_probe"
    Params = _ProbeParams
    image_encoder = "trained"
    uses_feature_cache = False

    def attach_backbone(self, backbone: nn.Module) -> None:
        super().attach_backbone(backbone)
        backbone.requires_grad_(False)
        backbone.model.visual.requires_grad_(True)
        self.head = nn.Linear(backbone.embed_dim, self.task.n_classes)

    def finetuned_encoder(self) -> nn.Module:
        return self.backbone.model.visual

    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        return F.normalize(self.backbone.encode_image(batch["images"]).float(), dim=-1)

    def losses(self, source, target):
        return {"source_ce": F.cross_entropy(self.logits(self.image_features(source)), source["labels"])}

    def logits(self, features: Tensor) -> Tensor:
        return self.head(features)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_rst_on_a_fine_tuned_clip_image_tower(color_data, tmp_path, monkeypatch, amp):
    monkeypatch.setitem(registry.METHODS, _ClipProbe.name, _ClipProbe)
    calls = []
    real_project = ResidualSparseTraining.project
    monkeypatch.setattr(ResidualSparseTraining, "project", lambda self: calls.append(1) or real_project(self))
    cfg = build_config({
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": _ClipProbe.name},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "progress": False, "amp": amp},
        "optim": {"name": "adamw", "lr": 1e-3},
        "rst": {"enabled": True, "threshold": 5e-4},
        "output": str(tmp_path / "run"),
    })
    trainer = build_trainer(cfg)
    summary = trainer.fit()
    assert len(calls) == 4  # after every optimizer step
    names, theta0 = _pretrained_encoder(cfg, tmp_path)
    assert names and all(n.startswith("backbone.model.visual.") for n in names)
    stats = summary["rst"]["last"]
    assert 0 < stats["encoder_changed"] < stats["encoder_params"] == sum(t.numel() for t in theta0)
    for p, p0 in zip(trainer.rst.params, theta0, strict=True):
        assert p.dtype == torch.float32  # under autocast too: the weights the optimizer stepped
        d = (p.detach() - p0).abs()
        assert bool(((d == 0) | (d > 5e-4)).all())
    fresh = build_trainer(cfg, tmp_path / "fresh2").method.eval()
    load_weights(fresh, tmp_path / "run" / "last.pt")
    dense_model = trainer.method.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.logits(fresh.image_features({"images": x})),
                           dense_model.logits(dense_model.image_features({"images": x})))


# -- checkpoint writes ------------------------------------------------------------------------------
def test_the_weights_are_written_once_when_the_final_evaluation_is_also_selected(color_data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod.Trainer, "_is_best_selected", lambda self, rec: True)
    written = []
    real = trainer_mod.save_atomic
    monkeypatch.setattr(trainer_mod, "save_atomic", lambda obj, path: written.append(path.name) or real(obj, path))
    run(_classic_config(color_data, tmp_path / "run", enabled=False))
    # each evaluation (steps 3 and 6) writes the weights once, then the resume state; the
    # selected and last weights are hard links to the weights file, never second copies
    assert written == ["checkpoint.weights-3.pt", "checkpoint.pt", "checkpoint.weights-6.pt", "checkpoint.pt"]
    run_dir = tmp_path / "run"
    last, selected = run_dir / "last.pt", run_dir / "selected.pt"
    assert last.samefile(selected) and last.samefile(run_dir / "checkpoint.weights-6.pt")
    assert not (run_dir / "checkpoint.weights-3.pt").exists()  # the previous checkpoint's, removed
    want, got = load_checkpoint(run_dir)["trainable"], load_safe(selected)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_an_intermediate_selected_evaluation_is_a_link_that_outlives_its_checkpoint(color_data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod.Trainer, "_is_best_selected", lambda self, rec: rec["step"] == 3)
    written = []
    real = trainer_mod.save_atomic
    monkeypatch.setattr(trainer_mod, "save_atomic", lambda obj, path: written.append(path.name) or real(obj, path))
    trainer = build_trainer(_classic_config(color_data, tmp_path / "run", enabled=False), tmp_path / "run")
    at_step_3 = {}
    trainer.on_eval = lambda rec: rec["step"] == 3 and at_step_3.update({k: v.clone() for k, v in trainer.method.trainable_state_dict().items()})
    trainer.fit()
    assert written == ["checkpoint.weights-3.pt", "checkpoint.pt", "checkpoint.weights-6.pt", "checkpoint.pt"]
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["checkpoint.pt", "checkpoint.weights-6.pt", "last.pt", "selected.pt"]
    got = load_safe(run_dir / "selected.pt")  # step 3's weights, though their checkpoint is gone
    assert set(got) == set(at_step_3) and all(torch.equal(got[k], at_step_3[k]) for k in at_step_3)
    assert not any(torch.equal(got[k], load_safe(run_dir / "last.pt")[k]) for k in got if got[k].is_floating_point())


@pytest.mark.parametrize("hard_links", [True, False])
def test_link_atomic_survives_a_later_rewrite_of_its_source(tmp_path, monkeypatch, hard_links):
    import os

    from vlda.engine.checkpoint import link_atomic, save_atomic

    if not hard_links:
        monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError("no links here")))
    save_atomic({"w": torch.ones(3)}, tmp_path / "last.pt")
    (tmp_path / "selected.pt").write_bytes(b"old")
    link_atomic(tmp_path / "last.pt", tmp_path / "selected.pt")
    save_atomic({"w": torch.zeros(3)}, tmp_path / "last.pt")
    assert torch.equal(load_safe(tmp_path / "selected.pt")["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "selected.pt"]  # no temporary left


def test_vlda_train_with_rst_prints_its_cost_and_refuses_an_untrained_backbone(color_data, tmp_path, capsys):
    import yaml

    cfg = _classic_config(color_data, tmp_path / "run").to_dict()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(path), "-q", f"output={tmp_path / 'bad'}", "method.lr_backbone=0"]) == 2
    err = capsys.readouterr().err
    assert "rst.enabled" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # nothing written, not even an empty directory
    assert main(["train", "-c", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    r = summary["rst"]["selected"]
    assert f"rst (selected.pt): {r['encoder_changed']} of {r['encoder_params']} encoder weights kept" in out

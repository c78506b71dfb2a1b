"""The method contract: everything the engine asks of a method is declared on ``Method``, and a
new family of method (here: one that fine-tunes the CLIP image encoder) is one class and its
config, with no edit to the engine."""

import ast
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import vlda
from vlda.config import build_config
from vlda.engine.checkpoint import load_safe
from vlda.engine.experiment import run
from vlda.methods import registry
from vlda.methods.base import Method, Task
from vlda.methods.classic_base import ClassifierMethod


@dataclass
class ProbeParams:
    lr_head: float = 1.0


class FineTunedProbe(Method):
    """CLIP's image encoder, fine-tuned, with a linear head: the CMKD family's shape."""

    name = "finetuned_probe"
    Params = ProbeParams
    image_encoder = "trained"
    uses_feature_cache = False
    artefact = "the image encoder and the head"

    def attach_backbone(self, backbone: nn.Module) -> None:
        super().attach_backbone(backbone)
        backbone.requires_grad_(False)
        backbone.model.visual.requires_grad_(True)
        self.head = nn.Linear(backbone.embed_dim, self.task.n_classes)

    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        return F.normalize(self.backbone.encode_image(batch["images"]).float(), dim=-1)

    def losses(self, source, target):
        return {"source_ce": F.cross_entropy(self.logits(self.image_features(source)), source["labels"])}

    def logits(self, features: Tensor) -> Tensor:
        return self.head(features)


def test_a_new_method_family_needs_no_engine_edit(color_data, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.METHODS, FineTunedProbe.name, FineTunedProbe)
    cfg = build_config({
        "data": {"custom": {"root": str(color_data), "domains": {"src": "src", "tgt": "tgt"}},
                 "source": ["src"], "target": "tgt", "source_val_fraction": 0.25},
        "model": {"backbone": "tiny", "name": "vit", "pretrained": None},
        "method": {"name": "finetuned_probe"},
        "train": {"steps": 3, "batch_size": 4, "eval_every": 3, "progress": False},
        "optim": {"lr": 0.05},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "output": str(tmp_path / "run"),
    })
    summary = run(cfg)
    assert summary["config"]["cache"]["enabled"] is False  # the method declared it cannot use it
    state = load_safe(tmp_path / "run" / "last.pt")
    assert any(k.startswith("backbone.model.visual.") for k in state) and "head.weight" in state
    assert not any(".transformer." in k and "visual" not in k for k in state)  # text tower frozen
    assert not (tmp_path / "cache").exists()


def test_every_hook_the_engine_uses_is_declared_on_method():
    hooks = ["objectives", "losses", "forward_losses", "cache_encoder", "loss_weights", "param_groups", "optimizer_groups", "on_train_step",
             "target_train_transform", "logits", "image_features", "setup", "trainable_state_dict", "finetuned_encoder",
             "load_trainable_state_dict"]
    facts = ["name", "Params", "trains", "backbone_kind", "image_encoder", "uses_feature_cache", "artefact",
             "search_space"]
    for h in [*hooks, *facts]:
        assert h in vars(Method), h
    for h in hooks:
        assert inspect.getdoc(getattr(Method, h)), h


def test_a_method_without_losses_is_told_which_hooks_to_implement(tiny_vit):
    class Bare(Method):
        name = "bare"

    with pytest.raises(NotImplementedError, match="losses\\(\\), forward_losses\\(\\) or objectives"):
        Bare(tiny_vit, Task(("a", "b"), ("a", "b"), ("s",), "t"), None).objectives({}, {})


def test_the_engine_probes_no_method_by_name():
    root = Path(vlda.__file__).parent
    for path in [*(root / "engine").glob("*.py"), *(root / "gradients").glob("*.py"), *(root / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("hasattr", "getattr"):
                target = ast.unparse(node.args[0])
                assert "method" not in target and "strategy" not in target, f"{path.name}: {ast.unparse(node)}"


@pytest.mark.parametrize("name", ["source_only", "dann", "cdan", "mcc", "fixmatch"])
def test_classic_methods_run_the_base_initialiser(name, monkeypatch):
    from vlda.methods.base import Task
    from vlda.models.classifier import tiny_image_backbone

    calls = []
    real = Method.__init__
    monkeypatch.setattr(Method, "__init__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    cls = registry.get_method(name)
    task = Task(("a", "b"), ("a", "b"), ("s",), "t")
    m = cls(tiny_image_backbone(), task, cls.make_params({"bottleneck_dim": 8}))
    assert calls == [1] and isinstance(m, ClassifierMethod)
    assert m.image_encoder == "trained" and not m.uses_feature_cache and m.backbone_kind == "image_classifier"
    assert m.task is task and any(p.requires_grad for p in m.backbone.parameters())
    assert torch.is_tensor(next(iter(m.trainable_state_dict().values())))

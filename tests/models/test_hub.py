"""Named weights on a machine without network: a clear sentence at once, not after retries."""

import socket
import time

import pytest

from vlda.models import hub
from vlda.models.loading import WeightsNotFoundError, load_backbone


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def no_hub(monkeypatch):
    for var in hub._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")


def test_unreachable_endpoint_is_detected(no_hub):
    assert not hub.hub_reachable(timeout=1.0)


def test_a_proxy_is_trusted(no_hub, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.hub_reachable()


def test_offline_mode_only_inside_and_restored(no_hub):
    from huggingface_hub import constants

    assert not constants.HF_HUB_OFFLINE
    with hub.offline_unless_hub_reachable() as offline:
        assert offline and constants.HF_HUB_OFFLINE
    assert not constants.HF_HUB_OFFLINE


def test_reachable_hub_changes_nothing(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    with hub.offline_unless_hub_reachable() as offline:
        assert not offline and not constants.HF_HUB_OFFLINE


def test_named_open_clip_weights_offline_fail_fast_with_one_sentence(no_hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="hub cannot be reached") as info:
        load_backbone("open_clip:RN50@openai")
    assert time.perf_counter() - start < 30  # huggingface_hub's retries alone take about 50 s
    assert "model.pretrained=/path/to/RN50.pt" in str(info.value)


@pytest.mark.parametrize(
    ("text", "is_path"),
    [
        ("ViT-B-16", False), ("openai", False), ("laion2b_s34b_b88k", False), ("resnet50", False),
        ("imagenet", False), ("hub", False),
        ("openai/clip-vit-base-patch16", True), ("/abs/model", True), ("./here", True),
        (".hidden", True), ("weights.pt", True), ("w.pth", True), ("w.bin", True),
        ("w.safetensors", True),
    ],
)
def test_looks_like_path(text, is_path):
    # One test for the CLIP loader and the timm classifier (they had twin copies).
    assert hub.looks_like_path(text) is is_path

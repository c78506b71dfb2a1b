"""A feature-cache set damaged on disk is detected (sha256 of every file, in meta.json) and
rebuilt with a warning; an intact one is used as it is."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from fakes import make_fake_folder_domains
from vlda.data.feature_cache import (
    CHECKED_FILES,
    FEATURES_FILE,
    META_FILE,
    PATHS_FILE,
    VALID_FILE,
    build_or_load_features,
)
from vlda.data.transforms import eval_transform, train_transform

CLASSES = ["cls_a", "cls_b"]


@pytest.fixture
def samples(tmp_path):
    root = make_fake_folder_domains(tmp_path / "images", {"dom": CLASSES}, per_class=3)
    return [(p, y) for y, c in enumerate(CLASSES) for p in sorted((root / "dom" / c).iterdir())]


@pytest.fixture
def counted(tiny_vit, monkeypatch):
    """The backbone, with a count of the images it encodes."""
    calls = {"images": 0}
    real = tiny_vit.encode_image

    def encode_image(images):
        calls["images"] += len(images)
        return real(images)

    monkeypatch.setattr(tiny_vit, "encode_image", encode_image)
    return tiny_vit, calls


def build(backbone, samples, cache_dir):
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    return build_or_load_features(
        backbone, samples, eval_transform=eval_transform(size, mean, std),
        train_transform=train_transform(size, mean, std), n_views=2, cache_dir=cache_dir,
        progress=False, batch_size=4,
    )



def warnings_in(caplog):
    """The warnings logged (progress lines are INFO; a tmp path may contain "damaged")."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING]

def test_meta_holds_the_sha256_of_every_file(counted, samples, tmp_path):
    fs = build(counted[0], samples, tmp_path / "cache")
    meta = json.loads((fs.directory / META_FILE).read_text())
    assert set(CHECKED_FILES) == {FEATURES_FILE, VALID_FILE, PATHS_FILE}
    for name in CHECKED_FILES:
        assert meta["sha256"][name] == hashlib.sha256((fs.directory / name).read_bytes()).hexdigest()


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # a data byte, past the .npy header: np.load still reads the file
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_checksums(path):
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))


DAMAGE = {
    "features byte flipped": (FEATURES_FILE, _flip_last_byte, "features.npy does not match its checksum"),
    "features truncated": (FEATURES_FILE, _truncate, "features.npy does not match its checksum"),
    "features missing": (FEATURES_FILE, lambda p: p.unlink(), "features.npy"),
    "valid byte flipped": (VALID_FILE, _flip_last_byte, "valid.npy does not match its checksum"),
    "paths edited": (PATHS_FILE, lambda p: p.write_text("other\n"), "paths.txt does not match its checksum"),
    "meta not json": (META_FILE, lambda p: p.write_text('{"key": '), "meta.json is not valid JSON"),
    "meta without checksums": (META_FILE, _drop_checksums, "meta.json has no checksums"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_set_is_detected_and_rebuilt(counted, samples, tmp_path, caplog, damage):
    backbone, calls = counted
    first = build(backbone, samples, tmp_path / "cache")
    want = np.array(first.features)
    built = calls["images"]
    assert built == len(samples) * 3
    name, spoil, reason = DAMAGE[damage]
    spoil(first.directory / name)
    if damage == "features byte flipped":  # only the checksum can tell: the array still loads
        assert not np.array_equal(np.load(first.directory / FEATURES_FILE), want)

    with caplog.at_level(logging.WARNING, logger="vlda"):
        again = build(backbone, samples, tmp_path / "cache")
    (line,) = [r.getMessage() for r in warnings_in(caplog) if "is damaged" in r.getMessage()]
    assert str(first.directory) in line and reason in line and "rebuilding" in line
    assert calls["images"] == 2 * built  # encoded again
    assert again.directory == first.directory and np.array_equal(np.asarray(again.features), want)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vlda"):
        third = build(backbone, samples, tmp_path / "cache")  # the rebuilt set is whole
    assert calls["images"] == 2 * built and not warnings_in(caplog)
    assert np.array_equal(np.asarray(third.features), want)


def test_an_intact_set_is_loaded_without_encoding(counted, samples, tmp_path, caplog):
    backbone, calls = counted
    first = build(backbone, samples, tmp_path / "cache")
    n = calls["images"]
    copy = tmp_path / "copy"
    shutil.copytree(first.directory, copy)  # what "intact" means: the same bytes
    with caplog.at_level(logging.WARNING, logger="vlda"):
        second = build(backbone, samples, tmp_path / "cache")
    assert calls["images"] == n and not warnings_in(caplog)
    for name in (*CHECKED_FILES, META_FILE):
        assert (second.directory / name).read_bytes() == (copy / name).read_bytes()
    torch.testing.assert_close(second.gather(torch.arange(len(samples))), first.gather(torch.arange(len(samples))))


def test_a_run_on_a_damaged_cache_rebuilds_it_and_gets_the_same_result(tmp_path, color_data, caplog):
    """End to end: ``vlda train`` with the cache, a flipped byte in one set, the same run again."""
    from reliability.procs import assert_bitwise_equal, final_state, write_config
    from vlda.cli.main import main

    cache = tmp_path / "cache"
    first = write_config(tmp_path / "a.yaml", color_data, tmp_path / "a", cache)
    assert main(["train", "-c", str(first), "-q"]) == 0
    sets = sorted(d for d in cache.iterdir() if not d.name.startswith("."))
    assert len(sets) == 2
    _flip_last_byte(sets[0] / FEATURES_FILE)

    second = write_config(tmp_path / "b.yaml", color_data, tmp_path / "b", cache)
    with caplog.at_level(logging.WARNING, logger="vlda"):
        assert main(["train", "-c", str(second), "-q"]) == 0
    damaged = [r.getMessage() for r in warnings_in(caplog) if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and sets[0].name in damaged[0] and FEATURES_FILE in damaged[0]
    assert_bitwise_equal(final_state(tmp_path / "b"), final_state(tmp_path / "a"))

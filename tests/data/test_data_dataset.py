"""ImageDataset, collate and BadImageLog: seeding, bad images skipped and counted."""

import warnings
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from fakes import make_fake_benchmark
from vlda.data.dataset import BadImageError, BadImageLog, BadImageWarning, ImageDataset, collate
from vlda.data.readers import load_domain
from vlda.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform, train_transform


@pytest.fixture
def demo_samples(tmp_path):
    root = make_fake_benchmark(
        "demo_digits", tmp_path, per_class=2, image_size=12, domains=["inverted"], corrupt=2
    )
    return load_domain("demo_digits", "inverted", root).samples


def test_getitem_and_seeding(demo_samples):
    ds = ImageDataset(demo_samples, train_transform(8, CLIP_MEAN, CLIP_STD, scale=(0.2, 0.6)))
    good = next(i for i in range(len(ds)) if ds[i]["image"] is not None)
    item = ds[good]
    assert item["image"].shape == (3, 8, 8)
    assert item["label"] == demo_samples[good][1] and item["index"] == good
    assert item["path"] == str(demo_samples[good][0])
    assert torch.equal(ds[good]["image"], ds[(good, good)]["image"])  # int -> seeded by index
    assert torch.equal(ds[(good, 5)]["image"], ds[(good, 5)]["image"])
    assert not torch.equal(ds[(good, 5)]["image"], ds[(good, 6)]["image"])
    assert ds[(good, (1, 2, 3))]["image"].shape == (3, 8, 8)  # sequence seeds work too


def test_corrupt_and_missing_images(demo_samples, tmp_path):
    samples = list(demo_samples) + [(tmp_path / "gone.png", 3)]
    ds = ImageDataset(samples, eval_transform(8, CLIP_MEAN, CLIP_STD))
    bad = [i for i in range(len(ds)) if ds[i]["image"] is None]
    assert len(bad) == 3 and bad[-1] == len(ds) - 1
    strict = ImageDataset(samples, eval_transform(8, CLIP_MEAN, CLIP_STD), strict=True)
    with pytest.raises(BadImageError, match="gone.png"):
        strict[len(ds) - 1]
    with pytest.raises(BadImageError, match=r"Cannot read image .*\.png"):
        strict[bad[0]]


def test_collate_drops_bad_and_log_counts(demo_samples):
    ds = ImageDataset(demo_samples, eval_transform(8, CLIP_MEAN, CLIP_STD))
    loader = DataLoader(ds, batch_size=5, collate_fn=collate)
    log = BadImageLog()
    total = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: each bad file warns once
            for batch in loader:
                b = batch["images"].shape[0]
                assert batch["images"].shape[1:] == (3, 8, 8)
                assert batch["labels"].dtype == torch.long and batch["labels"].shape == (b,)
                assert batch["indices"].shape == (b,) and len(batch["paths"]) == b
                total += b
                log.update(batch)
    assert total == 2 * (len(ds) - 2)
    assert log.count == 2 and log.skipped == 4
    assert len([w for w in caught if issubclass(w.category, BadImageWarning)]) == 2
    assert "2 unreadable image(s)" in log.summary()
    restored = BadImageLog()
    restored.load_state_dict(log.state_dict())
    assert restored.paths == log.paths and restored.skipped == 4
    assert BadImageLog().summary() == "No unreadable images."


def test_collate_all_bad_batch():
    batch = [{"image": None, "label": 1, "index": 0, "path": "a"}] * 2
    out = collate(batch)
    assert out["images"].shape[0] == 0 and out["labels"].shape == (0,)
    assert out["bad_paths"] == ["a", "a"]
    shaped = partial(collate, image_shape=(3, 8, 8))(batch)
    assert shaped["images"].shape == (0, 3, 8, 8)

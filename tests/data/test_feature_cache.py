"""The frozen-feature cache: exact features, deterministic views, reuse, invalidation, bad images,
and no half-built cache ever trusted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakes import make_fake_folder_domains
from vlda.data.dataset import BadImageError, ImageDataset
from vlda.data.feature_cache import (
    META_FILE,
    FeatureSet,
    PathsFile,
    build_or_load_features,
    cache_key,
    clear_cache,
    view_seed,
)
from vlda.data.transforms import eval_transform, train_transform
from vlda.models.loading import load_backbone

CLASSES = ["cls_a", "cls_b"]


@pytest.fixture(scope="module")
def backbone():
    torch.set_num_threads(1)
    return load_backbone("tiny:vit")


@pytest.fixture
def samples(tmp_path: Path) -> list[tuple[Path, int]]:
    root = tmp_path / "images"
    make_fake_folder_domains(root, {"dom": CLASSES}, per_class=2)
    out = []
    for label, cls in enumerate(CLASSES):
        out += [(p, label) for p in sorted((root / "dom" / cls).iterdir()) if p.is_file()]
    assert len(out) == 4
    return out


@pytest.fixture
def tfs(backbone):
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    return eval_transform(size, mean, std), train_transform(size, mean, std)


def build(backbone, samples, tfs, cache_dir, **kw) -> FeatureSet:
    kw.setdefault("n_views", 2)
    return build_or_load_features(
        backbone, samples, eval_transform=tfs[0], train_transform=tfs[1], cache_dir=cache_dir,
        progress=False, batch_size=3, **kw,
    )


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def encode(backbone, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.encode_image(image[None])[0]


def test_clean_view_equals_direct_encoding(backbone, samples, tfs, tmp_path):
    fs = build(backbone, samples, tfs, tmp_path / "cache")
    assert fs.features.dtype == np.float16 and fs.features.shape == (4, 3, backbone.embed_dim)
    assert isinstance(fs.features, np.memmap)
    assert fs.n_views == 2 and len(fs) == 4 and fs.valid.all()
    assert fs.labels.tolist() == [0, 0, 1, 1] and list(fs.paths) == [str(p) for p, _ in samples]
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as img:
            direct = encode(backbone, tfs[0](img, None))
        got = fs.gather(torch.tensor([i]))[0]
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, direct.half().float(), rtol=2e-3, atol=2e-3)
    meta = fs.meta
    assert (meta["n"], meta["n_views"], meta["dim"], meta["dtype"], meta["n_bad"]) == (
        4, 2, backbone.embed_dim, "float16", 0,
    )


def test_a_loaded_set_is_memory_mapped_and_reads_its_paths_from_disk(backbone, samples, tfs, tmp_path):
    """At DomainNet's scale (600k images) neither the features nor a string per image may sit in
    memory: the features are a read-only memory map, the paths a view of ``paths.txt``."""
    build(backbone, samples, tfs, tmp_path / "cache")
    fs = build(backbone, samples, tfs, tmp_path / "cache")  # loaded, not built
    assert isinstance(fs.features, np.memmap) and fs.features.mode == "r"
    assert isinstance(fs.paths, PathsFile) and not isinstance(fs.paths, list)
    want = [str(p) for p, _ in samples]
    assert len(fs.paths) == 4 and list(fs.paths) == want and list(fs.paths) == want  # re-iterable
    assert fs.paths[1] == want[1] and fs.paths[-1] == want[-1] and fs.paths[1:3] == want[1:3]


def test_paths_file_keeps_spaces_and_a_last_line_without_newline(tmp_path):
    f = tmp_path / "paths.txt"
    f.write_text("a b/c d.jpg\n/x/y.png")
    assert list(PathsFile(f, 2)) == ["a b/c d.jpg", "/x/y.png"]


def test_augmented_views_are_seeded_deterministic_and_differ(backbone, samples, tfs, tmp_path):
    a = build(backbone, samples, tfs, tmp_path / "a", seed=3)
    b = build(backbone, samples, tfs, tmp_path / "b", seed=3)  # an independent rebuild
    assert np.array_equal(np.asarray(a.features), np.asarray(b.features))
    feats = torch.from_numpy(np.asarray(a.features, dtype=np.float32))
    for v in (1, 2):
        assert not torch.allclose(feats[:, v], feats[:, 0], atol=1e-2)
    assert not torch.allclose(feats[:, 1], feats[:, 2], atol=1e-2)
    # View j of image i is the dataset's key (i, view_seed(seed, i, j)) under the train transform.
    ds = ImageDataset(samples, tfs[1])
    direct = encode(backbone, ds[(1, view_seed(3, 1, 2))]["image"])
    torch.testing.assert_close(a.gather(torch.tensor([1]), 2)[0], direct.half().float(),
                               rtol=2e-3, atol=2e-3)
    # Per-sample views.
    got = a.gather(torch.tensor([0, 3, 3]), torch.tensor([2, 0, 1]))
    torch.testing.assert_close(got, feats[[0, 3, 3], [2, 0, 1]])
    assert view_seed(3, 1, 2) != view_seed(3, 2, 1) != view_seed(4, 1, 2)


def test_second_call_is_a_cache_hit(backbone, samples, tfs, tmp_path, monkeypatch):
    first = build(backbone, samples, tfs, tmp_path / "cache")
    mtime = (first.directory / META_FILE).stat().st_mtime_ns

    def fail(images):
        raise AssertionError("encode_image called on a cache hit")

    monkeypatch.setattr(backbone, "encode_image", fail)
    second = build(backbone, samples, tfs, tmp_path / "cache")
    assert second.key == first.key and second.directory == first.directory
    assert np.array_equal(np.asarray(second.features), np.asarray(first.features))
    assert (second.directory / META_FILE).stat().st_mtime_ns == mtime
    assert entries(tmp_path / "cache") == [first.key]


def test_a_built_cache_directory_has_a_plain_mkdirs_permissions(backbone, samples, tfs, tmp_path):
    """Built under a temporary directory and renamed: not mkdtemp's 0700 (a shared cache)."""
    import stat

    plain = tmp_path / "plain"
    plain.mkdir()
    built = build(backbone, samples, tfs, tmp_path / "cache")
    assert stat.S_IMODE(built.directory.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_labels_are_not_part_of_the_key(backbone, samples, tfs, tmp_path):
    a = build(backbone, samples, tfs, tmp_path / "cache")
    relabelled = [(p, 1 - y) for p, y in samples]
    b = build(backbone, relabelled, tfs, tmp_path / "cache")
    assert a.key == b.key and b.labels.tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize(
    "change",
    ["eval_transform", "train_transform", "n_views", "seed", "touch", "rewrite", "missing",
     "order", "backbone"],
)
def test_any_change_changes_the_key(backbone, samples, tfs, tmp_path, monkeypatch, change):
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    args = dict(eval_tf=tfs[0], train_tf=tfs[1], n_views=2, seed=0)
    base = cache_key(backbone, samples, **args)
    assert cache_key(backbone, samples, **args) == base  # stable
    path = samples[0][0]
    if change == "eval_transform":
        args["eval_tf"] = eval_transform(size, mean, (0.5, 0.5, 0.5))
    elif change == "train_transform":
        args["train_tf"] = train_transform(size, mean, std, scale=(0.5, 1.0))
    elif change == "n_views":
        args["n_views"] = 3
    elif change == "seed":
        args["seed"] = 1
    elif change == "touch":
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "rewrite":
        with Image.open(path) as img:
            img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    elif change == "missing":
        path.unlink()
    elif change == "order":
        samples = samples[::-1]
    elif change == "backbone":
        monkeypatch.setattr(backbone, "weights_id", "other-weights")
    assert cache_key(backbone, samples, **args) != base


def test_a_changed_file_rebuilds(backbone, samples, tfs, tmp_path):
    first = build(backbone, samples, tfs, tmp_path / "cache")
    path = samples[2][0]
    with Image.open(path) as img:
        img.convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(path)
    second = build(backbone, samples, tfs, tmp_path / "cache")
    assert second.key != first.key
    assert entries(tmp_path / "cache") == sorted([first.key, second.key])
    a, b = np.asarray(first.features), np.asarray(second.features)
    assert np.array_equal(a[[0, 1, 3]], b[[0, 1, 3]]) and not np.array_equal(a[2, 0], b[2, 0])


def test_corrupt_image_is_invalid_and_counted(backbone, samples, tfs, tmp_path):
    samples[1][0].write_bytes(b"this is not an image")
    with pytest.warns(UserWarning, match=r"1 of 4 images could not be read") as rec:
        fs = build(backbone, samples, tfs, tmp_path / "cache")
    assert str(samples[1][0]) in str(rec[0].message)
    assert fs.valid.tolist() == [True, False, True, True]
    assert not np.asarray(fs.features[1]).any() and np.asarray(fs.features[0]).any()
    assert fs.meta["n_bad"] == 1 and fs.meta["bad_paths"] == [str(samples[1][0])]


def test_strict_raises_and_caches_nothing(backbone, samples, tfs, tmp_path):
    samples[3][0].write_bytes(b"")
    with pytest.raises(BadImageError, match="could not be read"):
        build(backbone, samples, tfs, tmp_path / "cache", strict=True)
    assert entries(tmp_path / "cache") == []


def test_killed_build_leaves_no_trusted_cache(backbone, samples, tfs, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = backbone.encode_image

    def dies_midway(images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # like Ctrl-C half-way
        return real(images)

    monkeypatch.setattr(backbone, "encode_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build(backbone, samples, tfs, tmp_path / "cache")
    assert entries(tmp_path / "cache") == []
    monkeypatch.undo()

    # A hard kill (no clean-up) leaves a .tmp-* directory and, say, a hand-damaged key
    # directory without meta.json: neither is trusted, the next call rebuilds.
    key = cache_key(backbone, samples, tfs[0], tfs[1], 2, 0)
    (tmp_path / "cache" / f".tmp-{key[:16]}-dead").mkdir()
    (tmp_path / "cache" / key).mkdir()
    (tmp_path / "cache" / key / "features.npy").write_bytes(b"half")
    fs = build(backbone, samples, tfs, tmp_path / "cache")
    assert fs.valid.all() and (fs.directory / META_FILE).is_file()
    assert np.asarray(fs.features).any(axis=-1).all()
    removed = clear_cache(tmp_path / "cache")
    assert len(removed) == 2 and entries(tmp_path / "cache") == []


def test_no_augmented_views(backbone, samples, tfs, tmp_path):
    fs = build_or_load_features(
        backbone, samples, eval_transform=tfs[0], train_transform=None, n_views=0,
        cache_dir=tmp_path / "cache", progress=False,
    )
    assert fs.features.shape == (4, 1, backbone.embed_dim) and fs.n_views == 0
    assert fs.random_views(torch.arange(3)).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="train_transform"):
        build(backbone, samples, (tfs[0], None), tmp_path / "cache", n_views=1)

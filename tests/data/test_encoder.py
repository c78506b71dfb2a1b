"""The data layer's ImageEncoder protocol: the backbones satisfy it, and cache keys are stable
(an existing cache directory stays valid while the cache format is unchanged)."""

from __future__ import annotations

import pytest

from vlda.data import feature_cache
from vlda.data.encoder import ImageEncoder
from vlda.data.feature_cache import cache_key
from vlda.data.transforms import eval_transform, train_transform
from vlda.models.loading import load_backbone

# Cache format 1, computed before the feature cache stopped importing vlda.models (missing files
# are hashed as "missing", so the key does not depend on the machine).
GOLDEN = {
    "vit": ("faa3b1007fb388c2",
            "d2c762712e00570ecb055c424f26ca95c88eb38c2b46375ea0ed0ca84ceae560",
            "2ad5542ec6141c094a7be54968fd8b306f6de6fc785bc2ae0c10bda54833c932"),
    "resnet": ("1bb4b259a48c7452",
               "9a3c5229141b9a57c480d71d36ed51870ac2ce65eeeb3c47f385a0c154a0cb32",
               "d97038aca6555947eb7bc17c7d8428e32a60245eb306ae1715b323f78f645357"),
    "hf": ("cb78ab0316654ad3",
           "968c5615e06186efa2107daf8e953f8588de209ba40e1cce0deac8f6329cde5a",
           "0df38bfe9ad3a70050b47c7cab64a63226a7b4172b53e2cdd25ece4a4718d41d"),
}
# Cache format 2 (sha256 of every file in meta.json): the same parts, another format number.
GOLDEN_FORMAT_2 = {
    "vit": ("7ba06fd30954aadc26735e0ee98ba2bbcb02cea57fdbce30cb6b626262832fcb",
            "f884e121a64e6ce2d66f56119a29d8389c25ca726b5ec4e344e46c27c0dfcfb3"),
    "resnet": ("fa2c7f901a84b4a7059670cd6884908ffa3eeb4498b5bcb1962c528359c1afee",
               "052d7e2b2f4d59db15d7fecd0920a1b4d3ff6a1cf0abd9bcb09a29884b6b94b5"),
    "hf": ("f142523e6f5567772c9bf555ea3dcc15509a1ff10261068487571ee895ce4b3f",
           "eafdbbf0397b140010946f68eebe7875c954848bc4e18a785de8282433deb573"),
}
SAMPLES = [("/nonexistent/vlda/a.png", 0), ("/nonexistent/vlda/b.png", 1)]


@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_backbones_are_image_encoders_with_unchanged_keys(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = load_backbone(f"tiny:{variant}")
    assert isinstance(backbone, ImageEncoder)
    key_views, key_plain = GOLDEN_FORMAT_2[variant]
    assert cache_key(backbone, SAMPLES, eval_transform(32), train_transform(32), 2, 0) == key_views
    assert cache_key(backbone, SAMPLES, eval_transform(32), None, 0, 0) == key_plain
    # Only the format number changed since format 1.
    monkeypatch.setattr(feature_cache, "FORMAT_VERSION", 1)
    fp, key_views, key_plain = GOLDEN[variant]
    assert backbone.fingerprint == fp
    assert cache_key(backbone, SAMPLES, eval_transform(32), train_transform(32), 2, 0) == key_views
    assert cache_key(backbone, SAMPLES, eval_transform(32), None, 0, 0) == key_plain


def test_data_layer_does_not_import_models() -> None:
    import ast
    from pathlib import Path

    import vlda.data

    for path in Path(vlda.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.startswith("vlda.models")], path.name

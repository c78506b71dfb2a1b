"""A domain's data as the engine reads it: cached frozen features, or images.

With a method that ``uses_feature_cache`` (frozen image encoder) and ``cache.enabled``, every
image is encoded once (view 0: eval transform; views 1..K: train transform) and memory-mapped
(:mod:`vlda.data.feature_cache`; in a data-parallel run each process encodes its share,
:mod:`vlda.data.feature_cache_shards`); otherwise images are decoded and transformed per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlda.config import RunConfig
from vlda.data.dataset import BadImageLog, ImageDataset
from vlda.data.encoder import ImageEncoder
from vlda.data.feature_cache_shards import build_or_load_features_sharded
from vlda.data.readers import DomainData
from vlda.data.transforms import eval_transform, train_transform
from vlda.engine.sampling import stratified_holdout
from vlda.engine.streams import Source
from vlda.files import default_cache_dir
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.classifier import ImageBackbone


def feature_cache_dir(cfg: RunConfig) -> Path:
    return Path(cfg.cache.dir).expanduser() if cfg.cache.dir else default_cache_dir() / "features"


@dataclass
class SourceBuilder:
    """Makes :class:`Source` views of domains for one run (shared settings)."""

    cfg: RunConfig
    backbone: VisionLanguageBackbone | ImageBackbone
    cached: bool
    bad_log: BadImageLog
    progress: bool = True
    encoder: ImageEncoder | None = None  # what the cache stores (default: the backbone's features)

    def views(self, domain: DomainData, index: int, n_views: int) -> tuple[Source, Source]:
        """(training view, evaluation view) of one domain."""
        b, cfg = self.backbone, self.cfg
        ev = eval_transform(b.image_size, b.mean, b.std)
        tr = train_transform(b.image_size, b.mean, b.std, scale=(cfg.augment.scale_min, 1.0), flip=cfg.augment.flip)
        if self.cached:
            if not isinstance(b, VisionLanguageBackbone):
                raise TypeError("the feature cache needs a vision-language backbone")
            fs = build_or_load_features_sharded(
                self.encoder or b, domain.samples, eval_transform=ev, train_transform=tr, n_views=n_views,
                cache_dir=feature_cache_dir(cfg), progress=self.progress,
                strict=cfg.data.strict_images, num_workers=cfg.data.num_workers,
            )
            if int((~fs.valid).sum()):
                self.bad_log.update([p for p, ok in zip(fs.paths, fs.valid.tolist(), strict=True) if not ok])
            pool = np.flatnonzero(fs.valid.numpy())
            return Source(index, pool, features=fs), Source(index, pool.copy(), features=fs)
        strict = cfg.data.strict_images
        pool = np.arange(len(domain.samples))
        return (
            Source(index, pool, dataset=ImageDataset(domain.samples, tr, strict=strict)),
            Source(index, pool.copy(), dataset=ImageDataset(domain.samples, ev, strict=strict)),
        )

    def source_domains(self, domains: list[DomainData], n_views: int) -> tuple[list[Source], list[Source]]:
        """(training views, held-out validation views) of the source domains, split per class
        by ``data.source_val_fraction``."""
        train, val = [], []
        for i, dom in enumerate(domains):
            train_view, eval_view = self.views(dom, i, n_views)
            labels = train_view.labels.numpy()[train_view.pool]
            tr_pos, val_pos = stratified_holdout(labels, self.cfg.data.source_val_fraction, self.cfg.data.split_seed)
            train_view.pool = train_view.pool[tr_pos]
            eval_view.pool = eval_view.pool[val_pos]
            train.append(train_view)
            val.append(eval_view)
        return train, val

"""From a :class:`~vlda.cli.config.RunConfig` to a finished run: data, backbone, method, streams.

This is the glue the CLI (``vlda train``, ``eval``, ``predict``, ``cache``, ``demo``) and the
Python API share, so every entry point builds a run the same way.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlda.cli.config import ConfigError, RunConfig
from vlda.data.dataset import BadImageLog, ImageDataset
from vlda.data.readers import DomainData
from vlda.data.transforms import eval_transform, train_transform
from vlda.engine.sampling import split_batch, stratified_holdout
from vlda.engine.streams import Source, TrainStream
from vlda.engine.trainer import Trainer, resolve_device
from vlda.files import default_cache_dir
from vlda.gradients.registry import get_strategy
from vlda.methods.base import Method, Task
from vlda.methods.registry import get_method
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.loading import BackboneSpec, load_backbone

log = logging.getLogger("vlda")


@dataclass
class RunData:
    """The domains of a run, read from disk (paths and labels, no pixels yet)."""

    task: Task
    sources: list[DomainData]
    target: DomainData
    target_eval: DomainData
    metric: str


def load_run_data(cfg: RunConfig) -> RunData:
    """Read the source, target and target-evaluation domains named in ``cfg.data``."""
    d = cfg.data
    if d.custom is not None:
        from vlda.data.custom import load_custom_domains

        domains = load_custom_domains(d.custom)
        missing = [x for x in [*d.source, d.target] if x not in domains]
        if missing:
            raise ConfigError(f"data.custom has no domain(s) {missing}; it has {sorted(domains)}")
        sources = [domains[s] for s in d.source]
        target = target_eval = domains[d.target]
        metric = "accuracy"
    else:
        from vlda.data.benchmarks import get_benchmark
        from vlda.data.readers import load_domain

        if not d.root:
            raise ConfigError(f"data.root: where is {d.benchmark} on disk? (data.root=/path/to/it)")
        bench = get_benchmark(d.benchmark)
        for name in [*d.source, d.target]:
            if name not in bench.domains:
                raise ConfigError(f"{bench.id} has no domain {name!r}; its domains: {list(bench.domains)}")
        sources = [load_domain(bench, s, d.root, d.source_split) for s in d.source]
        target = load_domain(bench, d.target, d.root, d.target_split)
        eval_split = d.eval_split or d.target_split
        target_eval = target if eval_split == d.target_split else load_domain(bench, d.target, d.root, eval_split)
        metric = bench.metric
    first = sources[0]
    for dom in [*sources[1:], target, target_eval]:
        if tuple(dom.classnames) != tuple(first.classnames):
            raise ConfigError(f"domain {dom.name!r} has a different class list than {first.name!r}")
    task = Task(
        classnames=tuple(first.classnames),
        prompt_names=tuple(first.prompt_names),
        source_domains=tuple(s.name for s in sources),
        target_domain=target.name,
        domain_words={x.name: x.domain_prompt_name for x in [*sources, target]},
    )
    return RunData(task, sources, target, target_eval, metric)


def is_classifier_method(cfg: RunConfig) -> bool:
    """Whether the configured method trains an image classifier (the classic baselines)."""
    return getattr(get_method(cfg.method["name"]), "model_family", "") == "classifier"


def load_run_backbone(cfg: RunConfig, device: torch.device | str = "cpu") -> Any:
    """What ``cfg.model`` names: a timm image backbone for the classic methods (``model_family
    = "classifier"``), a vision-language backbone for the others."""
    m, name = cfg.model, cfg.method["name"]
    if is_classifier_method(cfg):
        if m.backbone != "timm":
            raise ConfigError(
                f"method {name!r} trains an image classifier: set model.backbone: timm (e.g. "
                "model.name: efficientnet_lite0, model.pretrained: imagenet, which works offline)"
            )
        from vlda.models.classifier import load_image_backbone

        return load_image_backbone(m.name, m.pretrained, m.image_size).to(device)
    if m.backbone == "timm":
        raise ConfigError(
            f"model.backbone: timm builds image classifiers for the classic methods; method "
            f"{name!r} needs a vision-language backbone (open_clip, hf or tiny)"
        )
    return load_backbone(BackboneSpec(m.backbone, m.name, m.pretrained), device)


def build_method(cfg: RunConfig, task: Task, backbone: VisionLanguageBackbone) -> Method:
    opts = dict(cfg.method)
    cls = get_method(opts.pop("name"))
    try:
        params = cls.make_params(opts)
    except TypeError as err:
        raise ConfigError(f"method {cls.name!r}: {err}") from err
    return cls(backbone, task, params)


def _sources_for(
    cfg: RunConfig,
    backbone: VisionLanguageBackbone,
    domain: DomainData,
    index: int,
    n_views: int,
    bad_log: BadImageLog,
    progress: bool,
) -> tuple[Source, Source]:
    """(training view, evaluation view) of one domain: cached features or image datasets."""
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    ev = eval_transform(size, mean, std)
    tr = train_transform(size, mean, std, scale=(cfg.augment.scale_min, 1.0), flip=cfg.augment.flip)
    if cfg.cache.enabled:
        from vlda.data.feature_cache import build_or_load_features

        cache_dir = Path(cfg.cache.dir).expanduser() if cfg.cache.dir else default_cache_dir() / "features"
        fs = build_or_load_features(
            backbone, domain.samples, eval_transform=ev, train_transform=tr, n_views=n_views,
            cache_dir=cache_dir, progress=progress, strict=cfg.data.strict_images,
            num_workers=cfg.data.num_workers,
        )
        n_bad = int((~fs.valid).sum())
        if n_bad:
            bad_log.update([p for p, ok in zip(fs.paths, fs.valid.tolist(), strict=True) if not ok])
        pool = np.flatnonzero(fs.valid.numpy())
        return Source(index, pool, features=fs), Source(index, pool, features=fs)
    strict = cfg.data.strict_images
    pool = np.arange(len(domain.samples))
    return (
        Source(index, pool, dataset=ImageDataset(domain.samples, tr, strict=strict)),
        Source(index, pool, dataset=ImageDataset(domain.samples, ev, strict=strict)),
    )


def build_trainer(cfg: RunConfig, out: Path | None = None) -> Trainer:
    """Everything a run needs, ready to :meth:`~vlda.engine.trainer.Trainer.fit`."""
    torch.manual_seed(cfg.train.seed)
    data = load_run_data(cfg)
    device = resolve_device(cfg.train.device)
    if is_classifier_method(cfg) and cfg.cache.enabled:
        # The classic methods train the image network: its features change, nothing to cache.
        log.info("method %s trains the image network: feature cache off", cfg.method["name"])
        cfg.cache.enabled = False
    backbone = load_run_backbone(cfg, device)
    method = build_method(cfg, data.task, backbone)
    n_views = cfg.cache.views if method.trains else 0
    bad_log = BadImageLog()
    progress = cfg.train.progress

    src_train, src_val = [], []
    for i, dom in enumerate(data.sources):
        train_view, eval_view = _sources_for(cfg, backbone, dom, i, n_views, bad_log, progress)
        labels = train_view.labels.numpy()[train_view.pool]
        tr_pos, val_pos = stratified_holdout(labels, cfg.data.source_val_fraction, cfg.data.split_seed)
        train_view.pool = train_view.pool[tr_pos]
        eval_view.pool = eval_view.pool[val_pos]
        src_train.append(train_view)
        src_val.append(eval_view)
    t_index = len(data.sources)
    tgt_train, tgt_eval = _sources_for(cfg, backbone, data.target, t_index, n_views, bad_log, progress)
    if data.target_eval is not data.target:
        _, tgt_eval = _sources_for(cfg, backbone, data.target_eval, t_index, 0, bad_log, progress)
    if hasattr(method, "target_train_transform") and tgt_train.dataset is not None:
        # e.g. FixMatch: a weak and a strong view of every target image
        tgt_train.dataset.transform = method.target_train_transform(tgt_train.dataset.transform)
    for s in [*src_train, tgt_train]:
        if len(s.pool) == 0:
            raise ConfigError("a training domain has no usable image (empty, or every image unreadable)")
    if method.trains and not sum(len(v.pool) for v in src_val):
        log.warning(
            "no source-validation images (data.source_val_fraction=%s): `selected` will be the last "
            "step, not a validated one", cfg.data.source_val_fraction,
        )

    tcfg = cfg.train
    if tcfg.epochs is not None:
        n_train = sum(len(s.pool) for s in src_train)
        tcfg.steps = max(1, math.ceil(tcfg.epochs * n_train / tcfg.batch_size))
        log.info("train.epochs=%s over %d source images -> %d steps", tcfg.epochs, n_train, tcfg.steps)
    sizes = split_batch(tcfg.batch_size, len(src_train))
    workers = cfg.data.num_workers
    source_stream = TrainStream(src_train, sizes, tcfg.seed, 0, True, workers, bad_log)
    target_stream = TrainStream(
        [tgt_train], [tcfg.target_batch_size or tcfg.batch_size], tcfg.seed, 1, False, workers, bad_log
    )
    out = Path(out or cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    task = data.task
    (out / "task.json").write_text(
        json.dumps(
            {
                "classnames": task.classnames, "prompt_names": task.prompt_names,
                "source_domains": task.source_domains, "target_domain": task.target_domain,
                "domain_words": dict(task.domain_words),
            },
            indent=2,
        )
    )
    return Trainer(
        method, get_strategy(cfg.gradients), source_stream, target_stream,
        tgt_eval, src_val, cfg.train, cfg.optim, cfg.schedule, out, headline_metric=data.metric,
        config=cfg.to_dict(), num_workers=workers, bad_log=bad_log,
    )


def run(cfg: RunConfig, resume: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Train (or, for zero-shot, just evaluate) and return ``summary.json``'s content."""
    trainer = build_trainer(cfg, out)
    summary = trainer.fit(resume=resume)
    if trainer.bad_log is not None and trainer.bad_log.count:
        log.warning(trainer.bad_log.summary())
    return summary

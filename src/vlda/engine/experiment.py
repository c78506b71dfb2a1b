"""From a :class:`~vlda.config.RunConfig` to a finished run, an evaluation or a cache.

This is the glue the CLI (``vlda train``, ``eval``, ``cache``, ``demo``) and the Python API
share, so every entry point builds a run the same way, and each builds only what it needs:
``train`` the whole trainer, ``eval`` the evaluation splits and the method, ``cache`` the
features.

Under ``torchrun`` (a process group of ``W > 1``, :mod:`vlda.distributed`) every process builds
the same run (same seed: same initial weights); rank 0 alone takes the run directory's lock and
writes into it; the per-domain parts of the global batch must divide by ``W``; trained BatchNorm
layers normalise over the global batch (:func:`~vlda.models.sync_batchnorm.convert_batchnorm`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlda import distributed as D
from vlda.config import ConfigError, RunConfig
from vlda.data.dataset import BadImageLog, require_readable
from vlda.data.readers import DomainData
from vlda.engine.artefact import load_weights
from vlda.engine.build import autocast_for, build_method, load_run_backbone, resolve_device
from vlda.engine.checkpoint import write_text_atomic
from vlda.engine.evaluate import Evaluator, feature_splits
from vlda.engine.options import check_options, method_class
from vlda.engine.rst import encoder_parameters
from vlda.engine.run_data import RunData, load_run_data
from vlda.engine.run_dir import (
    DISK_FULL,
    DiskFullError,
    RunLock,
    check_resume_config,
    check_run_dir,
    clear_run_dir,
    disk_full_error,
)
from vlda.engine.sampling import split_batch
from vlda.engine.sources import SourceBuilder
from vlda.engine.streams import Source, TrainStream
from vlda.engine.trainer import Trainer
from vlda.gradients.registry import get_strategy
from vlda.methods.base import Method, Task
from vlda.models.sync_batchnorm import convert_batchnorm
from vlda.selection.validators import get_validator

__all__ = ["build_trainer", "cache_features", "evaluate_run", "run"]

log = logging.getLogger("vlda")


@dataclass
class Prepared:
    """A run's data, backbone, method and a :class:`SourceBuilder` for its domains."""

    data: RunData
    method: Method
    sources: SourceBuilder
    n_views: int


def class_order(task: Task) -> str:
    """``0: mug -> 'coffee mug', 1: pen -> 'pen', ...``: each label's class and prompt name."""
    pairs = zip(task.classnames, task.prompt_names, strict=True)
    return ", ".join(f"{i}: {c} -> {p!r}" for i, (c, p) in enumerate(pairs))


def task_record(task: Task) -> dict[str, Any]:
    """``task.json``: the task, plus ``classes``: label, class name and prompt name of each."""
    classes = [
        {"label": i, "name": c, "prompt_name": p}
        for i, (c, p) in enumerate(zip(task.classnames, task.prompt_names, strict=True))
    ]
    return {**task.to_dict(), "classes": classes}


def _prepare(cfg: RunConfig, train: bool) -> Prepared:
    check_options(cfg)
    if not D.is_main():
        cfg.train.progress = False  # rank 0 alone shows progress bars
    torch.manual_seed(cfg.train.seed)
    data = load_run_data(cfg)
    if cfg.data.strict_images:
        domains = [*data.sources, data.target, data.target_eval]
        require_readable(dict.fromkeys(p for d in domains for p, _ in d.samples), progress=cfg.train.progress)
    device = resolve_device(cfg.train.device)
    cls = method_class(cfg)
    if cfg.cache.enabled and not cls.uses_feature_cache:
        log.info("method %s trains the image network: feature cache off", cls.name)
        cfg.cache.enabled = False
    cached = cfg.cache.enabled
    backbone = load_run_backbone(cfg, device)
    method = build_method(cfg, data.task, backbone)
    n_views = cfg.cache.views if (train and method.trains) else 0
    encoder = method.cache_encoder() if cached else None
    builder = SourceBuilder(cfg, backbone, cached, BadImageLog(), cfg.train.progress, encoder)
    return Prepared(data, method, builder, n_views)


def _eval_splits(p: Prepared, src_val: list[Source], tgt_train_view: Source | None) -> dict[str, list[Source]]:
    """Evaluation splits; ``tgt_train_view``: the target's training images under the eval
    transform (also the scored images when the run is transductive)."""
    t_index = len(p.data.sources)
    if p.data.target_eval is p.data.target and tgt_train_view is not None:
        tgt_eval = tgt_train_view
    else:
        _, tgt_eval = p.sources.views(p.data.target_eval, t_index, 0)
    splits = {"source_val": src_val, "target_eval": [tgt_eval]}
    if tgt_train_view is not None:
        splits["target_train"] = [tgt_train_view]
    return splits


def _total_steps(cfg: RunConfig, src_train: list[Source]) -> int:
    t = cfg.train
    if t.epochs is None:
        return int(t.fixed_steps or 0)
    n_train = sum(len(s.pool) for s in src_train)
    steps = max(1, math.ceil(t.epochs * n_train / t.batch_size))
    log.info("train.epochs=%s over %d source images -> %d steps", t.epochs, n_train, steps)
    return steps


def _warn_small_domains(views: list[Source], sizes: list[int], domains: list[DomainData], role: str) -> None:
    """Warn when a step takes more images from a domain than it has: they repeat in a batch."""
    for view, size, dom in zip(views, sizes, domains, strict=True):
        if 0 < len(view.pool) < size:
            log.warning(
                "warning: each step takes %d images from %s domain %r, which has only %d training "
                "images: images repeat within a batch (lower train.batch_size to avoid it)",
                size, role, dom.name, len(view.pool),
            )


def _check_divisible(src_sizes: list[int], tgt_sizes: list[int]) -> None:
    """Refuse a global batch whose per-domain parts do not divide among the processes: per-rank
    mean losses averaged over the ranks equal the global batch's mean only over equal slices."""
    w = D.world_size()
    if w > 1 and any(n % w for n in (*src_sizes, *tgt_sizes)):
        raise ConfigError(
            f"the global batch (per source domain {src_sizes}, target {tgt_sizes}) does not divide "
            f"into {w} equal slices, one per process; choose train.batch_size (a multiple of {w} "
            f"times the number of source domains) and train.target_batch_size (a multiple of {w})"
        )


def build_trainer(
    cfg: RunConfig,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    resume_with_changes: bool = False,
) -> Trainer:
    """Everything a run needs, ready to :meth:`~vlda.engine.trainer.Trainer.fit`. A directory
    that already holds a run is refused before anything is written (unless ``resume``, or
    ``overwrite``, which removes the old run's files); a resumed run's config must be the
    saved one (unless ``resume_with_changes``)."""
    out = Path(out or cfg.output)
    resume = resume or resume_with_changes
    check_run_dir(out, resume, overwrite)
    cls = method_class(cfg)
    if cfg.train.fixed_steps == 0 and cls.trains:
        raise ConfigError(
            f"train.steps=0: method {cls.name!r} needs at least one training step; give "
            "train.steps=N (N >= 1), or evaluate without training with method.name=zeroshot"
        )
    p = _prepare(cfg, train=True)
    if resume:  # every process checks; rank 0 records accepted changes
        check_resume_config(out, cfg.to_dict(), resume_with_changes, record=D.is_main())
    method, t_index = p.method, len(p.data.sources)
    if cfg.rst.enabled and not encoder_parameters(method)[1]:
        raise ConfigError(
            f"rst.enabled: method {method.name!r} trains no encoder parameter with this config (a "
            "frozen or zero-learning-rate backbone); turn RST off or train the encoder"
        )
    src_train, src_val = p.sources.source_domains(p.data.sources, p.n_views)
    tgt_train, tgt_eval_view = p.sources.views(p.data.target, t_index, p.n_views)
    if tgt_train.dataset is not None:  # e.g. FixMatch: a weak and a strong view of every image
        tgt_train.dataset.transform = method.target_train_transform(tgt_train.dataset.transform)
    for s in [*src_train, tgt_train]:
        if len(s.pool) == 0:
            raise ConfigError("a training domain has no usable image (empty, or every image unreadable)")
    if method.trains and not sum(len(v.pool) for v in src_val):
        log.warning(
            "no source-validation images (data.source_val_fraction=%s): `selected` will be the last "
            "step, not a validated one", cfg.data.source_val_fraction,
        )
    t = cfg.train
    src_sizes, tgt_sizes = split_batch(t.batch_size, len(src_train)), [t.target_batch_size or t.batch_size]
    _check_divisible(src_sizes, tgt_sizes)
    _warn_small_domains(src_train, src_sizes, p.data.sources, "source")
    _warn_small_domains([tgt_train], tgt_sizes, [p.data.target], "target")
    workers, bad = cfg.data.num_workers, p.sources.bad_log
    source_stream = TrainStream(src_train, src_sizes, t.seed, 0, True, workers, bad)
    target_stream = TrainStream([tgt_train], tgt_sizes, t.seed, 1, False, workers, bad)
    if overwrite and D.is_main():
        clear_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("classes (label: name -> prompt name): %s", class_order(p.data.task))
    if D.is_main():
        write_text_atomic(json.dumps(task_record(p.data.task), indent=2), out / "task.json")
    if D.initialised() and (n_bn := convert_batchnorm(method)):
        log.info("%d BatchNorm layers normalise over the global batch of %d processes", n_bn, D.world_size())
    validators = [get_validator(n) for n in cfg.selection.validators]
    evaluator = Evaluator(method, _eval_splits(p, src_val, tgt_eval_view), t.eval_batch_size, workers, bad)
    return Trainer(
        method, get_strategy(cfg.gradients), source_stream, target_stream, evaluator, validators,
        t, cfg.optim, cfg.schedule, _total_steps(cfg, src_train), out, headline_metric=p.data.metric,
        config=cfg.to_dict(), bad_log=bad, extra_summary={"splits": p.data.splits}, rst=cfg.rst,
        eval_cfg=cfg.eval,
    )


def run(
    cfg: RunConfig,
    resume: bool = False,
    out: Path | None = None,
    overwrite: bool = False,
    resume_with_changes: bool = False,
) -> dict[str, Any]:
    """Train (or, for zero-shot, just evaluate) and return ``summary.json``'s content. The run
    directory is locked while the run writes it (:class:`~vlda.engine.run_dir.RunLock`); a
    resumed run must have the same config, unless ``resume_with_changes`` (the changes are
    recorded in the run directory)."""
    out = Path(out or cfg.output)
    resume = resume or resume_with_changes
    check_run_dir(out, resume, overwrite)
    D.barrier()  # every process has seen the directory before rank 0 writes into it
    with RunLock(out) if D.is_main() else contextlib.nullcontext():
        try:
            trainer = build_trainer(cfg, out, resume, overwrite, resume_with_changes)
            summary = trainer.fit(resume=resume)
        except OSError as err:
            if err.errno in DISK_FULL and not isinstance(err, DiskFullError):
                raise disk_full_error(out, err) from err
            raise
    if trainer.bad_log.count:
        log.warning(trainer.bad_log.summary())
    return summary


def evaluate_run(cfg: RunConfig, weights: Path | None) -> dict[str, Any]:
    """Scores of a trained method (its ``weights``; ``None``: untrained, e.g. zero-shot) on the
    configured target and source validation, without building a trainer or a run directory."""
    p = _prepare(cfg, train=False)
    _, src_val = p.sources.source_domains(p.data.sources, 0)
    splits = _eval_splits(p, src_val, None)
    device = resolve_device(cfg.train.device)
    method = p.method.to(device)
    method.setup(device)
    if weights is not None and method.trains:
        load_weights(method, weights)  # dense, or a sparse residual (RST) on the pretrained encoder
    t = cfg.train
    evaluator = Evaluator(
        method, splits, t.eval_batch_size, cfg.data.num_workers, p.sources.bad_log, device,
        autocast_for(t.amp, device),
    )
    validators = [get_validator(n) for n in cfg.selection.validators]
    outputs = evaluator.outputs(evaluator.needed(validators), features=feature_splits(validators))
    result = evaluator.record(outputs, validators, p.data.metric)
    return {**result, "splits": p.data.splits}


def cache_features(cfg: RunConfig) -> int:
    """Build (or reuse) the feature cache of every domain a run of ``cfg`` reads; returns the
    number of feature sets. Nothing else is built."""
    if not cfg.cache.enabled:
        raise ConfigError("cache.enabled is false in this config; nothing to cache")
    cls = method_class(cfg)
    if not cls.uses_feature_cache:
        raise ConfigError(f"method {cls.name!r} trains its image encoder, so it cannot use the feature cache; nothing to cache")
    p = _prepare(cfg, train=True)
    # the training domains with the run's K augmented views, as `vlda train` reads them (a
    # transductive target is also the scored one: it needs them too); a separate eval split none
    trained = [*p.data.sources, p.data.target]
    for i, dom in enumerate(trained):
        p.sources.views(dom, i, p.n_views)
    if p.data.target_eval is not p.data.target:
        p.sources.views(p.data.target_eval, len(trained), 0)
        return len(trained) + 1
    return len(trained)

"""The loop: batches -> objectives -> update -> evaluate -> log -> checkpoint.

Iteration-based. Every ``eval_every`` steps (and at the last step) the target and the held-out
source validation split are evaluated and one JSON line is appended to ``OUT/metrics.jsonl``;
the checkpoint (``OUT/checkpoint.pt``) is then written atomically. ``OUT/summary.json`` reports
three results:

* ``last`` — the final step;
* ``selected`` — the evaluation with the best *source-validation* accuracy (uses no target label);
* ``oracle`` — the evaluation with the best target metric: chosen with target labels, reported
  only under this name, for comparison with papers that select this way.

Resuming (``resume=True``) reloads the learned tensors, the optimizer and scaler state and the
evaluation history from the checkpoint; batches and augmentations are functions of the step, so
the resumed run ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlda.engine.checkpoint import load_safe, save_atomic, write_text_atomic
from vlda.engine.metrics import accuracy, mean_class_accuracy
from vlda.engine.optim import OptimConfig, build_optimizer
from vlda.engine.schedule import ScheduleConfig, lr_at
from vlda.engine.streams import Source, TrainStream, eval_batches
from vlda.gradients.base import GradientStrategy, objectives_from_method, summarize_diagnostics
from vlda.methods.base import Method
from vlda.selection.summary import summarize

log = logging.getLogger("vlda")

AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Loop settings. ``amp``: ``off``, ``bf16`` or ``fp16`` (fp16 uses a GradScaler on CUDA).

    ``epochs`` reproduces the epoch-based official configs: Dassl counts an epoch as
    ``len(source loader)`` iterations (``COUNT_ITER: train_x``), so ``steps = ceil(epochs *
    |source train| / batch_size)``."""

    steps: int = 1000
    epochs: float | None = None  # if set: steps = ceil(epochs * |source train| / batch_size)
    batch_size: int = 32
    target_batch_size: int | None = None
    eval_every: int = 200
    eval_batch_size: int = 256
    amp: str = "off"
    seed: int = 1
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"train.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.steps < 0 or self.batch_size <= 0 or self.eval_every <= 0:
            raise ValueError("train.steps must be >= 0 and batch_size, eval_every > 0")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Runs one method on one task and writes the run directory ``out``."""

    def __init__(
        self,
        method: Method,
        strategy: GradientStrategy,
        source_stream: TrainStream,
        target_stream: TrainStream,
        target_eval: Source,
        source_val: list[Source],
        train: TrainConfig,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        out: Path,
        headline_metric: str = "accuracy",
        config: dict[str, Any] | None = None,
        num_workers: int = 0,
        bad_log: Any = None,
        on_eval: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.method = method
        self.strategy = strategy
        self.source_stream = source_stream
        self.target_stream = target_stream
        self.target_eval = target_eval
        self.source_val = source_val
        self.cfg = train
        self.optim_cfg = optim
        self.schedule = schedule
        self.out = Path(out)
        self.headline = headline_metric
        self.config = config or {}
        self.num_workers = num_workers
        self.bad_log = bad_log
        self.on_eval = on_eval
        self.device = resolve_device(train.device)
        self.history: list[dict[str, Any]] = []

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, sources: list[Source]) -> tuple[torch.Tensor, torch.Tensor]:
        preds, labels = [], []
        batches = (
            b
            for s in sources
            for b in eval_batches(s, self.cfg.eval_batch_size, self.num_workers, self.bad_log)
        )
        for batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self._autocast():
                logits = self.method.logits(self.method.image_features(batch))
            preds.append(logits.argmax(dim=-1).cpu())
            labels.append(batch["labels"].cpu())
        if not preds:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        return torch.cat(preds), torch.cat(labels)

    def evaluate(self) -> dict[str, float]:
        """Target accuracy and mean per-class accuracy; source-validation accuracy."""
        self.method.eval()
        n_cls = self.method.task.n_classes
        pred, labels = self._predict([self.target_eval])
        res = {
            "target/acc": accuracy(pred, labels),
            "target/mean_class_acc": mean_class_accuracy(pred, labels, n_cls),
        }
        res["target/metric"] = res["target/mean_class_acc" if self.headline == "mean_class_accuracy" else "target/acc"]
        if sum(len(s.pool) for s in self.source_val):
            pred, labels = self._predict(self.source_val)
            res["source_val/acc"] = accuracy(pred, labels)
        self.method.train()
        return res

    def _autocast(self):
        if self.cfg.amp == "off":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        method = self.method.to(self.device)
        method.setup(self.device)
        ckpt_path = self.out / "checkpoint.pt"
        params = method.trainable_parameters() if method.trains else []
        # Methods with per-part learning rates give groups with an `lr_scale` (classic methods).
        groups = method.optimizer_groups() if hasattr(method, "optimizer_groups") and params else params
        optimizer = build_optimizer(groups, self.optim_cfg) if params else None
        use_scaler = self.cfg.amp == "fp16" and self.device.type == "cuda" and optimizer is not None
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        start = 0
        if resume and ckpt_path.is_file():
            state = load_safe(ckpt_path)
            method.load_trainable_state_dict(state["trainable"])
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            self.history = json.loads(state["history"])
            start = int(state["step"])
            log.info("resumed %s at step %d", self.out, start)
        elif ckpt_path.is_file():
            raise FileExistsError(
                f"{self.out} already holds a run (checkpoint.pt); pass --resume to continue it "
                "or choose another output directory"
            )
        self._rewrite_metrics()
        write_text_atomic(json.dumps(self.config, indent=2, default=str), self.out / "config.json")
        writer = self._tensorboard()

        total = self.cfg.steps if method.trains else 0
        if not method.trains or total == 0:
            if not self.history:
                self._record(0, {}, {}, 0.0)
            return self._finish(writer)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=total, initial=start, disable=not self.cfg.progress, desc=f"{method.name}",
            unit="step", dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        n_since = 0
        t0 = time.perf_counter()
        batches = zip(
            self.source_stream.iterate(start, total), self.target_stream.iterate(start, total),
            strict=True,
        )
        weights = method.loss_weights()
        for step, (src, tgt) in enumerate(batches, start=start):
            lr = lr_at(step, total, self.optim_cfg.lr, self.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            src = {k: v.to(self.device, non_blocking=True) for k, v in src.items()}
            tgt = {k: v.to(self.device, non_blocking=True) for k, v in tgt.items()}

            def closure(src=src, tgt=tgt):
                with self._autocast():
                    return method.losses(src, tgt)

            if hasattr(method, "on_train_step"):  # progress-dependent schedules (DANN's λ)
                method.on_train_step(step, total)
            objectives = objectives_from_method(method, src, tgt, self._autocast, weights)
            diag = self.strategy.step(closure, weights, params, optimizer, scaler, objectives=objectives)
            diag.update(method.last_metrics)
            for k, v in diag.items():
                sums[k] = sums.get(k, 0.0) + v
            n_since += 1
            if not math.isfinite(diag.get("loss/total", 0.0)):
                raise FloatingPointError(f"non-finite loss at step {step}: {diag}")
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{diag.get('loss/total', float('nan')):.3f}", lr=f"{lr:.2e}")
            if done % self.cfg.eval_every == 0 or done == total:
                train_means = {k: v / n_since for k, v in sums.items()}
                self._record(done, train_means, {"lr": lr}, time.perf_counter() - t0)
                if writer is not None:
                    for k, v in self.history[-1].items():
                        if isinstance(v, float):
                            writer.add_scalar(k, v, done)
                sums, n_since = {}, 0
                bar.set_postfix(loss=f"{diag['loss/total']:.3f}", tgt=f"{self.history[-1]['target/metric']:.3f}")
                state = {
                    "step": done,
                    "trainable": method.trainable_state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "history": json.dumps(self.history),
                }
                save_atomic(state, ckpt_path)
        bar.close()
        return self._finish(writer)

    def _record(self, step: int, train_means: dict[str, float], extra: dict[str, float], elapsed: float) -> None:
        rec: dict[str, Any] = {"step": step, **self.evaluate(), **extra}
        rec.update({f"train/{k}": v for k, v in train_means.items()})
        rec["time_s"] = round(elapsed, 3)
        self.history.append(rec)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if step == self.cfg.steps or not self.method.trains:
            save_atomic(self.method.trainable_state_dict(), self.out / "last.pt")
        if self._is_best_selected(rec):
            save_atomic(self.method.trainable_state_dict(), self.out / "selected.pt")
        if self.on_eval is not None:
            self.on_eval(rec)
        if not self.cfg.progress:
            log.info("step %d: %s", step, {k: round(v, 4) for k, v in rec.items() if isinstance(v, float)})

    def _is_best_selected(self, rec: dict[str, Any]) -> bool:
        key = "source_val/acc"
        prev = [r[key] for r in self.history[:-1] if key in r]
        return key not in rec or not prev or rec[key] > max(prev)

    def _rewrite_metrics(self) -> None:
        # The checkpoint's history is authoritative: drop lines a killed run wrote after it.
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        write_text_atomic(lines, self.out / "metrics.jsonl")

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("train.tensorboard needs `pip install tensorboard`") from err
        return SummaryWriter(str(self.out / "tensorboard"))

    def _finish(self, writer) -> dict[str, Any]:
        if writer is not None:
            writer.close()
        summary = {
            "config": self.config,
            "method": self.method.name,
            "headline_metric": self.headline,
            "results": summarize(self.history),
            # run means of the strategy's per-step diagnostics (cosine, conflict rate, norms)
            "gradients": {"strategy": self.strategy.name, **summarize_diagnostics(self.history)},
            "bad_images": self.bad_log.count if self.bad_log is not None else 0,
        }
        write_text_atomic(json.dumps(summary, indent=2, default=str), self.out / "summary.json")
        return summary

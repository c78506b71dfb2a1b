"""The loop: batches -> objectives -> gradients -> step -> evaluate -> log -> checkpoint.

Iteration-based. Every ``eval_every`` steps (and at the last step) the evaluation splits are
run (:class:`~vlda.engine.evaluate.Evaluator`) and one JSON line is appended to
``OUT/metrics.jsonl``; the checkpoint (``OUT/checkpoint.pt``) is then written atomically.
``OUT/summary.json`` reports, under ``results``:

* ``last`` — the final step;
* ``selected_by`` — for every configured validator (``selection.validators``), the evaluation
  with its best score (no target label); ``selected`` — the same for the first, the primary
  validator (``selected.pt`` holds its weights);
* ``oracle`` — the evaluation with the best target metric: chosen with target labels, reported
  only under this name, for comparison with papers that select this way.

With ``eval.save_outputs``, each evaluation's outputs are written to
``OUT/outputs/step_XXXXXXX.pt`` (and zero-shot CLIP's target logits once, to
``OUT/outputs/target_zeroshot.pt``), so that ``vlda select`` can score other validators later.

The method gives its objectives; the gradient strategy writes the gradients; the engine
(:class:`~vlda.engine.stepper.Stepper`) unscales, clips, steps and updates the scaler.
With ``rst.enabled`` the trainer then projects the fine-tuned encoder
(:class:`~vlda.engine.rst.ResidualSparseTraining`) and saves it as a sparse residual
(:mod:`vlda.engine.artefact`).

Weights are written once per evaluation (:mod:`vlda.engine.checkpoint`): while training, to
the checkpoint's weights file ``checkpoint.weights-<step>.pt``, of which ``selected.pt`` (when
the first validator improves) and ``last.pt`` (at the final step) are hard links; a method that
does not train writes ``last.pt`` and links ``selected.pt`` to it.

Resuming (``resume=True``) reloads the learned tensors, the optimizer, scaler and strategy
state, the evaluation history, the bad-image tally and the global RNG state (dropout) from the
checkpoint; batches and augmentations are functions of the step, so the resumed run ends with
parameters bitwise equal to an uninterrupted one (CPU).

Data-parallel (``torchrun``, :mod:`vlda.distributed`): every process runs this loop on its slice
of each step's global batch; the strategy averages the gradients over the processes
(``ctx.comm``), the logged per-step values are averaged too (:func:`vlda.distributed.average_floats`),
evaluation is sharded and gathered (:class:`~vlda.engine.evaluate.Evaluator`), and only rank 0
writes files, logs and progress bars. Checkpoints are written by rank 0 behind a barrier; they
hold one copy of the (identical) state, so a run may be resumed with another number of processes.
The bad-image tally is the union of every process's.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vlda import distributed as D
from vlda.config import EvalConfig, OptimConfig, RstConfig, ScheduleConfig, TrainConfig
from vlda.data.dataset import BadImageLog
from vlda.engine.artefact import artefact_stats, expand_state, sparse_state
from vlda.engine.build import autocast_for, resolve_device
from vlda.engine.checkpoint import (
    CHECKPOINT,
    link_atomic,
    load_checkpoint,
    remove_stale_weights,
    save_atomic,
    weights_name,
    write_text_atomic,
)
from vlda.engine.evaluate import Evaluator, feature_splits
from vlda.engine.optim import build_optimizer
from vlda.engine.rng import rng_state, set_rng_state
from vlda.engine.rst import ResidualSparseTraining, encoder_parameters
from vlda.engine.schedule import lr_at
from vlda.engine.stepper import Stepper
from vlda.engine.streams import TrainStream
from vlda.gradients.base import GradientStrategy, summarize_diagnostics
from vlda.methods.base import Method
from vlda.selection.outputs import ZEROSHOT, ZEROSHOT_FILE, pack_outputs
from vlda.selection.summary import summarize, validator_key
from vlda.selection.validators import Validator

log = logging.getLogger("vlda")


class Trainer:
    """Runs one method on one task and writes the run directory ``out``.

    Args:
        method, strategy: what is trained and how its objectives become gradients.
        source_stream, target_stream: the training batches of each step.
        evaluator: the evaluation splits (source validation, target train, target eval).
        validators: scored at every evaluation; the first chooses ``selected``.
        train, optim, schedule: the config sections.
        total_steps: the run length (``train.steps``, or resolved from ``train.epochs``).
        out: the run directory.
        headline_metric: ``accuracy`` or ``mean_class_accuracy`` (VisDA).
        config: the run config as a dict (``config.json``, ``summary.json``).
        bad_log: tally of unreadable images.
        extra_summary: more entries for ``summary.json`` (e.g. the splits used).
        on_eval: called with each evaluation record.
        rst: Residual Sparse Training of the method's fine-tuned encoder (``rst`` section;
            :mod:`vlda.engine.rst`): projected after every step, saved as a sparse residual
            (:mod:`vlda.engine.artefact`).
    """

    def __init__(
        self,
        method: Method,
        strategy: GradientStrategy,
        source_stream: TrainStream,
        target_stream: TrainStream,
        evaluator: Evaluator,
        validators: Sequence[Validator],
        train: TrainConfig,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        total_steps: int,
        out: Path,
        headline_metric: str = "accuracy",
        config: dict[str, Any] | None = None,
        bad_log: BadImageLog | None = None,
        extra_summary: dict[str, Any] | None = None,
        on_eval: Callable[[dict[str, Any]], None] | None = None,
        rst: RstConfig | None = None,
        eval_cfg: EvalConfig | None = None,
    ) -> None:
        self.method = method
        self.strategy = strategy
        self.source_stream = source_stream
        self.target_stream = target_stream
        self.evaluator = evaluator
        self.validators = list(validators)
        self.cfg = train
        self.eval_cfg = eval_cfg or EvalConfig()
        self.optim_cfg = optim
        self.schedule = schedule
        self.total_steps = total_steps if method.trains else 0
        self.out = Path(out)
        self.headline = headline_metric
        self.config = config or {}
        self.bad_log = bad_log if bad_log is not None else BadImageLog()
        self.extra_summary = extra_summary or {}
        self.on_eval = on_eval
        self.rst_cfg = rst if rst is not None and rst.enabled else None
        self.rst: ResidualSparseTraining | None = None
        self._weights_at: tuple[int, dict[str, Any]] | None = None
        self._checkpointing = False  # whether every evaluation is followed by a checkpoint
        self.device = resolve_device(train.device)
        self.history: list[dict[str, Any]] = []
        self._resumed_rng: dict[str, Any] | None = None
        self._bad_base: dict[str, Any] = BadImageLog().state_dict()  # the tally restored on resume
        self.autocast = autocast_for(train.amp, self.device)
        evaluator.device, evaluator.autocast = self.device, self.autocast

    def evaluate(self, step: int) -> dict[str, Any]:
        """One evaluation record (target and source-validation accuracy, validator scores);
        saves the outputs when ``eval.save_outputs`` asks for it."""
        save = self.eval_cfg.save_outputs
        names = self.evaluator.needed(self.validators, all_splits=save != "none")
        features = True if save == "features" else feature_splits(self.validators)
        outputs = self.evaluator.outputs(names, features=features)
        rec = self.evaluator.record(outputs, self.validators, self.headline)
        if save != "none":
            packed = pack_outputs(outputs, getattr(torch, self.eval_cfg.outputs_dtype), save == "features")
            rec["outputs"] = f"outputs/step_{step:07d}.pt"
            if D.is_main():
                save_atomic(packed, self.out / rec["outputs"])
        return rec

    def _prepare_zeroshot(self) -> None:
        """Zero-shot CLIP's target logits, from the still-pretrained backbone (before any step
        and before a resumed run loads its weights), when a validator or the saved outputs use
        them."""
        saving = self.eval_cfg.save_outputs != "none"
        if not saving and not any(ZEROSHOT in v.needs for v in self.validators):
            return
        ref = self.evaluator.prepare_zeroshot()
        if ref is not None and saving and D.is_main():
            dtype = getattr(torch, self.eval_cfg.outputs_dtype)
            save_atomic(ref.to_dict(dtype), self.out / ZEROSHOT_FILE)

    # -- the loop -----------------------------------------------------------------------------
    def _stepper(self) -> Stepper | None:
        method = self.method
        params = method.trainable_parameters() if method.trains else []
        if not params:
            return None
        optimizer = build_optimizer(method.optimizer_groups(), self.optim_cfg)
        use_scaler = self.cfg.amp == "fp16" and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        return Stepper(self.strategy, params, optimizer, scaler, self.optim_cfg.clip_grad_norm)

    def _restore(self, stepper: Stepper | None, resume: bool) -> int:
        ckpt_path = self.out / CHECKPOINT
        if not ckpt_path.is_file():
            return 0
        if not resume:
            raise FileExistsError(
                f"{self.out} already holds a run (checkpoint.pt); pass --resume to continue it "
                "or choose another output directory"
            )
        state = load_checkpoint(self.out)
        # a sparse residual (RST) is expanded onto θ0: the encoder still holds it here
        names, theta0 = (self.rst.names, self.rst.theta0) if self.rst is not None else encoder_parameters(self.method)
        self.method.load_trainable_state_dict(expand_state(state["trainable"], names, theta0))
        if stepper is not None:
            stepper.load_state_dict(state["stepper"])
        self.history = json.loads(state["history"])
        self.bad_log.load_state_dict(state.get("bad_images", {}))
        self._bad_base = self.bad_log.state_dict()
        self._resumed_rng = state.get("rng")
        log.info("resumed %s at step %d", self.out, int(state["step"]))
        return int(state["step"])

    def fit(self, resume: bool = False) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        method = self.method.to(self.device)
        method.setup(self.device)
        self._prepare_zeroshot()
        stepper = self._stepper()
        if self.rst_cfg is not None and stepper is not None:  # θ0: the pretrained weights, before any restore
            self.rst = ResidualSparseTraining(method, self.rst_cfg.threshold)
        start = self._restore(stepper, resume)
        D.barrier()  # every process has read the checkpoint before rank 0 rewrites the directory
        writer = None
        if D.is_main():
            self._rewrite_metrics()
            write_text_atomic(json.dumps(self.config, indent=2, default=str), self.out / "config.json")
            writer = self._tensorboard()
        total = self.total_steps
        self._checkpointing = stepper is not None and total > 0
        if stepper is None or not self._checkpointing:
            if not self.history:
                self._record(0, {}, {}, 0.0, writer)
            return self._finish(writer)
        bar = tqdm(total=total, initial=start, disable=not (self.cfg.progress and D.is_main()), desc=method.name,
                   unit="step", dynamic_ncols=True)
        sums: dict[str, float] = {}
        n_since, t0 = 0, time.perf_counter()
        batches = self._batches(start, total)
        for step, (src, tgt) in enumerate(batches, start=start):
            lr, diag = self._train_step(stepper, step, total, src, tgt)
            for k, v in diag.items():
                sums[k] = sums.get(k, 0.0) + v
            n_since += 1
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{diag.get('loss/total', float('nan')):.3f}", lr=f"{lr:.2e}")
            if done % self.cfg.eval_every == 0 or done == total:
                self._record(done, {k: v / n_since for k, v in sums.items()}, {"lr": lr}, time.perf_counter() - t0, writer)
                sums, n_since = {}, 0
                bar.set_postfix(loss=f"{diag['loss/total']:.3f}", tgt=f"{self.history[-1]['target/metric']:.3f}")
                self._checkpoint(done, stepper)
        bar.close()
        return self._finish(writer)

    def _batches(self, start: int, total: int) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        """The (source, target) batches of steps ``start..total-1``. On resume, the global RNG is
        restored once the streams have started: starting an image stream draws DataLoader seeds
        from the global RNG, which the uninterrupted run did at step 0, not here."""
        batches = zip(self.source_stream.iterate(start, total), self.target_stream.iterate(start, total), strict=True)
        first = next(batches, None)
        if self._resumed_rng is not None:
            set_rng_state(self._resumed_rng)
        if first is not None:
            yield first
            yield from batches

    def _train_step(
        self, stepper: Stepper, step: int, total: int, src: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]
    ) -> tuple[float, dict[str, float]]:
        lr = lr_at(step, total, self.optim_cfg.lr, self.schedule)
        for group in stepper.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        src = {k: v.to(self.device, non_blocking=True) for k, v in src.items()}
        tgt = {k: v.to(self.device, non_blocking=True) for k, v in tgt.items()}
        self.method.on_train_step(step, total)
        with self.autocast():
            objectives = self.method.objectives(src, tgt)
        objectives.run_in = self.autocast
        diag = stepper.step(objectives)
        if self.rst is not None:
            self.rst.project()
        diag.update(objectives.metrics)
        diag = D.average_floats(diag)  # each rank's values are its slice's: the global batch's mean
        if not math.isfinite(diag.get("loss/total", 0.0)):
            raise FloatingPointError(f"non-finite loss at step {step}: {diag}")
        return lr, diag

    def _checkpoint(self, step: int, stepper: Stepper) -> None:
        bad = self._bad_images()
        if D.is_main():
            weights = weights_name(step)  # written by _save_weights at this step's evaluation
            state = {
                "step": step,
                "weights": weights,
                "stepper": stepper.state_dict(),
                "history": json.dumps(self.history),
                "bad_images": bad,
                "rng": rng_state(),
            }
            save_atomic(state, self.out / CHECKPOINT)
            remove_stale_weights(self.out, keep=weights)
        D.barrier()  # no process goes on before the checkpoint of this step is on disk
        self._weights_at = None  # do not hold a copy of the weights until the next evaluation

    def _bad_images(self) -> dict[str, Any]:
        """The bad-image tally of the whole run: the restored one plus what every process met
        since (each saw its own slices and shards)."""
        states = D.gather_objects(self.bad_log.state_dict())
        if len(states) == 1:
            return states[0]
        base = self._bad_base
        paths = dict(base["paths"])
        skipped = base["skipped"]
        for st in states:
            skipped += st["skipped"] - base["skipped"]
            for p, c in st["paths"].items():
                paths[p] = paths.get(p, 0) + c - base["paths"].get(p, 0)
        return {"paths": paths, "skipped": skipped}

    def _record(
        self, step: int, train_means: dict[str, float], extra: dict[str, float], elapsed: float, writer: Any
    ) -> None:
        rec: dict[str, Any] = {"step": step, **self.evaluate(step), **extra}
        rec.update({f"train/{k}": v for k, v in train_means.items()})
        rec["time_s"] = round(elapsed, 3)
        self.history.append(rec)
        if D.is_main():
            self._write_record(step, rec, writer)
        if self.on_eval is not None:
            self.on_eval(rec)

    def _write_record(self, step: int, rec: dict[str, Any], writer: Any) -> None:
        """The record's line in ``metrics.jsonl``, the weights it calls for, TensorBoard, the log."""
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        self._save_weights(step, rec)
        if writer is not None:
            for k, v in rec.items():
                if isinstance(v, float):
                    writer.add_scalar(k, v, step)
        if not self.cfg.progress:
            log.info("step %d: %s", step, {k: round(v, 4) for k, v in rec.items() if isinstance(v, float)})

    def _save_weights(self, step: int, rec: dict[str, Any]) -> None:
        """The evaluation's weights, written once: to the checkpoint's weights file while
        training (``last.pt`` at the final step and ``selected.pt`` when the first validator
        improves are hard links to it), else to ``last.pt`` (``selected.pt`` linked to it)."""
        final = step == self.total_steps or not self.method.trains
        selected = self._is_best_selected(rec)
        if not (self._checkpointing or final or selected):
            return
        stored = self.out / (weights_name(step) if self._checkpointing else "last.pt")
        save_atomic(self._weights(step), stored)
        for name, wanted in (("last.pt", final), ("selected.pt", selected)):
            if wanted and stored.name != name:
                link_atomic(stored, self.out / name)

    def _weights(self, step: int) -> dict[str, Any]:
        """The method's trainable state as saved: dense, or with RST the encoder as a sparse
        residual (:func:`~vlda.engine.artefact.sparse_state`)."""
        if self._weights_at is not None and self._weights_at[0] == step:
            return self._weights_at[1]  # the evaluation's weights, already gathered for another file
        state = self.method.trainable_state_dict()
        if self.rst is not None:
            r = self.rst
            state = sparse_state(state, r.names, r.theta0, r.digest, r.threshold)
        self._weights_at = (step, state)
        return state

    def _rst_summary(self) -> dict[str, Any]:
        """``summary.json``'s ``rst`` entry: threshold and the cost of each saved artefact."""
        assert self.rst is not None
        out: dict[str, Any] = {"threshold": self.rst.threshold}
        for name in ("last", "selected"):
            path = self.out / f"{name}.pt"
            if path.is_file():
                out[name] = artefact_stats(path, self.rst.theta0)
        return out

    def _is_best_selected(self, rec: dict[str, Any]) -> bool:
        key = validator_key(self.validators[0].name) if self.validators else ""
        prev = [r[key] for r in self.history[:-1] if key in r]
        return key not in rec or not prev or rec[key] > max(prev)

    def _rewrite_metrics(self) -> None:
        # The checkpoint's history is authoritative: drop lines a killed run wrote after it.
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        write_text_atomic(lines, self.out / "metrics.jsonl")

    def _tensorboard(self) -> Any:
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("train.tensorboard needs `pip install tensorboard`") from err
        return SummaryWriter(str(self.out / "tensorboard"))

    def _finish(self, writer: Any) -> dict[str, Any]:
        if writer is not None:
            writer.close()
        bad = self._bad_images()
        validators = [v.name for v in self.validators] or ["source_val_acc"]
        summary = {
            "config": self.config,
            "method": self.method.name,
            "headline_metric": self.headline,
            **self.extra_summary,
            "results": summarize(self.history, validators),
            # run means of the strategy's per-step diagnostics (cosine, conflict rate, norms)
            "gradients": {"strategy": self.strategy.name, **summarize_diagnostics(self.history)},
            "bad_images": len(bad["paths"]),
        }
        if not D.is_main():
            return summary
        if self.rst is not None:
            summary["rst"] = self._rst_summary()
        write_text_atomic(json.dumps(summary, indent=2, default=str), self.out / "summary.json")
        return summary

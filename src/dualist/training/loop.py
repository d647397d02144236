"""One training loop for the teacher and the student, readable top to bottom (nanoGPT style).

The loop knows nothing about retrieval: it takes a model, a function that yields the batches of an
epoch and a function that turns one batch into a loss. :func:`train_loop` is the loop itself, about
forty lines; each thing it does is a named method of ``_Trainer`` (``start``, ``forward_backward``,
``optimizer_step``, ``after_step`` = probes, ``evaluate`` and the checkpoint, ``finish``). Checkpoint
files live in :mod:`dualist.training.checkpoints`, device/precision/seeding in
:mod:`dualist.training.runtime`. Around the step it does what every run needs:

- AdamW (no weight decay on biases and LayerNorm weights), linear warmup then linear decay
  (:func:`dualist.training.schedule.lr_at`, set by hand on every step);
- gradient accumulation (each micro-batch's loss scaled by 1/accum), clipping, autocast on GPU;
- seeding, and deterministic algorithms on CPU, so the same seed gives the same weights;
- a progress bar, ``metrics.jsonl`` (one row per optimizer step) and TensorBoard when installed;
- checkpoints every ``checkpoint_every`` steps and at each epoch end, written to a temporary
  folder renamed into place, so a ``checkpoints/step-N/`` folder is always complete;
- ``resume=True`` continues from the newest checkpoint to the same weights as an uninterrupted run;
- ``eval_fn`` before the first step (``eval_start``), at each epoch end and every ``eval_every`` steps
  selects the best model, so the starting model is kept when no step beats it on dev (by more than
  ``select_min_delta``, and with ``select_alpha`` by a gain a paired test over the dev queries tells from
  chance); probes record scores along the way.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same call trains one model on several processes with
DDP (:mod:`dualist.distributed`): every process builds the same batches from the same seed, the step
function takes its slice of each batch (``student_step``/``teacher_step`` do) and returns its share of
the loss; gradients are averaged by DDP, so a step equals one process's step on the whole batch.
Rank 0 alone writes the files below, evaluates on dev (the selection is broadcast to all) and
checkpoints; a checkpoint counts batches of the whole run, so it resumes with any number of processes.
Dropout draws from a stream of its own on each process (rank 0's is the one-process stream).

Output layout of ``out_dir``::

    dualist.json            resolved config, inputs, status (write_meta)
    metrics.jsonl           {"step", "epoch", "loss", "lr", "grad_norm", "elapsed_s"} per optimizer step
    eval.jsonl              {"step", "epoch", **eval_fn(model)} at each evaluation (+ "select_p", the
                            paired test's p against the kept checkpoint, with select_alpha)
    probes.jsonl            {"step", "probe", **probe(model, step)} at step 0, every probe_every, at the end
    checkpoints/step-N/     model/, optimizer.pt, scheduler.json, rng.pt, [scaler.pt,] trainer_state.json
    best/                   the model with the best ``select_metric`` (only with eval_fn)
    final/                  the model after the last step
    model/                  the model to use downstream: a copy of best/ with eval_fn, else of final/

Resuming reproduces the uninterrupted run because every input to a step is restored or recomputed:
weights, optimizer moments and the RNG states come from the checkpoint, the learning rate is a pure
function of the step, and ``batches(epoch)`` must be a pure function of the epoch (seeded from
``(seed, epoch)`` with a local RNG, never the global one), so the loop rebuilds the epoch and skips the
batches the checkpoint says were consumed.

Its length (~500 lines) is the loop's driver plus ``_Trainer``, whose named steps each carry their
single- and multi-process (torchrun) behaviour side by side, so that a reader sees in one place what
rank 0 does differently; checkpoint files and runtime set-up already live in their own modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualist import distributed
from dualist._io import progress, write_meta
from dualist.errors import ConfigError
from dualist.training.checkpoints import (CHECKPOINTS, State, append_jsonl, atomic_dir, check_same_run, clear_outputs,
                                          latest_checkpoint, link_or_copy, load_checkpoint, remove_temporaries,
                                          save_checkpoint, share_identical_files, truncate_jsonl)
from dualist.training.config import TrainConfig
from dualist.training.runtime import (autocast, deterministic, enable_gradient_checkpointing, process_seed,
                                      resolve_amp, resolve_device, seed_everything)
from dualist.training.schedule import lr_at, warmup_steps_for

__all__ = ["train_loop", "TrainResult"]

logger = logging.getLogger(__name__)

@dataclass
class TrainResult:
    """Where a finished run left its models, and how it went."""

    out_dir: Path
    model_dir: Path  # the model to use: best_dir when eval_fn was given, else final_dir (a copy)
    final_dir: Path
    best_dir: Path | None
    best_metric: float | None
    best_step: int | None
    steps: int  # optimizer steps taken, counting those before a resume
    last_loss: float | None


def train_loop(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[Any]],
    step_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    steps_per_epoch: int,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    probes: Sequence[Callable[[torch.nn.Module, int], dict[str, Any]]] = (),
    resume: bool = False,
    save_fn: Callable[[torch.nn.Module, Path], None] | None = None,
    load_fn: Callable[[torch.nn.Module, Path], None] | None = None,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``batches(epoch)`` with the loss ``step_fn(model, batch)``.

    Args:
        batches: ``batches(epoch)`` yields the micro-batches of that epoch, always the same ones in
            the same order for the same epoch (see the module docstring: that is what makes resume exact).
        step_fn: returns the mean loss of one micro-batch (a scalar with grad); under torchrun, this
            process's share of it (see the module docstring). An object with a
            ``forward_backward(model, batch, backward, precision)`` method (gradient caching,
            :class:`dualist.training.grad_cache.GradCacheStep`) backpropagates itself instead.
        steps_per_epoch: how many micro-batches ``batches(epoch)`` yields. An epoch makes
            ``ceil(steps_per_epoch / grad_accum)`` optimizer steps; the last group of an epoch may be
            shorter, and its losses are then averaged over the micro-batches it has.
        eval_fn: ``eval_fn(model) -> {"ndcg@10": ...}`` at step 0 (``config.eval_start``), at each epoch
            end, at the last step and every ``config.eval_every`` steps;
            ``config.select_metric`` (higher is better) picks ``best/``.
        probes: ``probe(model, step) -> dict`` rows for ``probes.jsonl``.
        resume: continue from the newest complete checkpoint in ``out_dir`` (if any; a checkpoint of
            another model, loss, data or trajectory setting raises :class:`StaleArtifactError` and
            deletes nothing). Without it, the run starts over and deletes the outputs of an earlier
            run in ``out_dir``.
        save_fn / load_fn: how to write a model folder / read one back into ``model``; by default
            ``model.save_pretrained(dir)`` and ``type(model).from_pretrained(dir)`` + ``load_state_dict``.
        meta: extra entries for ``out_dir/dualist.json``: ``stage``, ``inputs`` (fingerprints),
            ``config`` (more configs, e.g. the model's), anything else goes in as is.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if steps_per_epoch < 1:
        raise ConfigError("no training batches: the training split has no usable examples "
                          "(queries with a positive and at least one candidate negative)")
    trainer = _Trainer(model, step_fn, config, out_dir, _Schedule.of(config, steps_per_epoch), eval_fn=eval_fn,
                       probes=probes, save_fn=save_fn or _save_pretrained)
    trainer.start(resume, load_fn or _load_pretrained, meta or {})
    try:
        with deterministic(trainer.device.type == "cpu"):
            trainer.at_start()
            for epoch in range(trainer.state.epoch, trainer.schedule.num_epochs):
                if trainer.finished:
                    break
                seen = 0
                for i, batch in enumerate(batches(epoch)):
                    seen = i + 1
                    if i >= steps_per_epoch:
                        raise ValueError(f"batches({epoch}) yields more than steps_per_epoch="
                                         f"{steps_per_epoch} batches")
                    if epoch == trainer.state.epoch and i < trainer.state.batch_in_epoch:
                        continue  # consumed before the checkpoint we resumed from
                    if not trainer.forward_backward(batch, epoch, i):
                        continue  # the accumulation group is not complete yet
                    trainer.optimizer_step(epoch, i)
                    trainer.after_step(epoch, epoch_done=i + 1 == steps_per_epoch)
                    if trainer.finished:
                        break
                if not trainer.finished and seen != steps_per_epoch:
                    raise ValueError(f"batches({epoch}) yielded {seen} batches, expected "
                                     f"steps_per_epoch={steps_per_epoch}")
    finally:
        trainer.close()
    return trainer.finish()


@dataclass(frozen=True)
class _Schedule:
    """How long a run is: micro-batches per epoch -> optimizer steps -> warmup."""

    steps_per_epoch: int  # micro-batches
    total_steps: int  # optimizer steps
    num_epochs: int
    warmup_steps: int

    @classmethod
    def of(cls, config: TrainConfig, steps_per_epoch: int) -> "_Schedule":
        steps_in_epoch = math.ceil(steps_per_epoch / config.grad_accum)
        total = config.max_steps or config.epochs * steps_in_epoch
        return cls(steps_per_epoch, total, math.ceil(total / steps_in_epoch),
                   warmup_steps_for(total, config.warmup_ratio))


class _Trainer:
    """The moving parts of one run, each step of the loop a named method: set up the model and the
    optimizer, start fresh or from a checkpoint, forward/backward a micro-batch, take an optimizer
    step, log it, probe, evaluate and keep the best model, checkpoint, and write the final models."""

    def __init__(self, model: torch.nn.Module, step_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
                 config: TrainConfig, out_dir: Path, schedule: _Schedule, *,
                 eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None,
                 probes: Sequence[Callable[[torch.nn.Module, int], dict[str, Any]]],
                 save_fn: Callable[[torch.nn.Module, Path], None]):
        self.model, self.step_fn, self.config, self.out_dir = model, step_fn, config, out_dir
        self.schedule, self.eval_fn, self.probes, self.save_fn = schedule, eval_fn, probes, save_fn
        device = resolve_device(config.device)
        self.world = distributed.init_process_group(device)
        self.device = distributed.local_device(device)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        model.to(self.device)
        if config.freeze_layers:
            from dualist.models.backbone import freeze_bottom

            freeze_bottom(model, config.freeze_layers)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model, layers=config.checkpoint_layers or None)
        if config.lean_activations:
            from dualist.training.lean_activations import enable_lean_activations

            enable_lean_activations(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ddp = _ddp(model, step_fn, self.device) if self.world.distributed else None
        self.optimizer = _build_optimizer(model, config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.state = State()
        self.group_losses: list[float] = []
        self.recent_losses: list[float] = []
        self.last_loss: float | None = None
        self.last_lr = self.last_grad_norm = 0.0

    @property
    def finished(self) -> bool:
        return self.state.step >= self.schedule.total_steps

    # -- start: a checkpoint, or from scratch
    def start(self, resume: bool, load_fn: Callable[[torch.nn.Module, Path], None], meta: dict[str, Any]) -> None:
        out_dir, config, main = self.out_dir, self.config, self.world.is_main
        # rank 0 picks the checkpoint, so no process can see another's half-cleared folder
        checkpoint = distributed.broadcast_object(latest_checkpoint(out_dir) if resume and main else None)
        if main:
            remove_temporaries(out_dir)
        run_meta = dict(meta)
        self.stage = run_meta.pop("stage", "train")
        self.inputs = run_meta.pop("inputs", None)
        self.all_config = {"train": config, **run_meta.pop("config", {})}
        self.run_meta = run_meta
        if checkpoint is not None:
            check_same_run(out_dir, checkpoint, self.stage, self.all_config, self.inputs)
            self.state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scaler, config, load_fn,
                                          self.device)
            logger.info("resuming from %s (step %d, epoch %d, batch %d)", checkpoint, self.state.step,
                        self.state.epoch, self.state.batch_in_epoch)
        else:
            if resume:
                logger.info("no checkpoint in %s; starting from scratch", out_dir)
            if main:
                clear_outputs(out_dir)
            seed_everything(config.seed)
        if self.world.rank:  # dropout masks: a stream of its own on each process but rank 0
            torch.manual_seed(process_seed(config.seed, self.world.rank, self.state.step))
        for name in ("metrics.jsonl", "eval.jsonl", "probes.jsonl"):  # rows of steps redone after a crash
            if main:
                truncate_jsonl(out_dir / name, self.state.step)
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        self.resolved = {"device": str(self.device), "amp": amp, "total_steps": self.schedule.total_steps,
                         "warmup_steps": self.schedule.warmup_steps,
                         "steps_per_epoch": self.schedule.steps_per_epoch, "processes": self.world.size}
        self.writer = self.metrics_file = None
        if main:
            write_meta(out_dir, stage=self.stage, config=self.all_config, inputs=self.inputs,
                       extra={"resolved": self.resolved, **run_meta, "status": "running"})
            self.writer = _tensorboard(out_dir)
            self.metrics_file = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - close()
        self.bar = progress(total=self.schedule.total_steps, initial=self.state.step, desc="train",
                            disable=None if main else True)
        self.clock = time.perf_counter() - self.state.elapsed_s
        distributed.barrier()  # no process steps before rank 0 has replaced an earlier run's outputs

    def at_start(self) -> None:
        """Probes and (``eval_start``) the dev evaluation of the starting model, on a fresh run only."""
        if self.state.step == 0 and self.probes:
            self.probe(0)
        if self.state.step == 0 and self.eval_fn is not None and self.config.eval_start:
            self.evaluate(0, 0)  # the start is a candidate: a run that only hurts on dev keeps it
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)

    # -- one micro-batch, one optimizer step
    def forward_backward(self, batch: Any, epoch: int, i: int) -> bool:
        """Loss and gradients of micro-batch ``i``, scaled by its share of the accumulation group;
        True when the group is complete (time for an optimizer step). Under torchrun the forward goes
        through DDP, whose backward averages the gradients over the processes at the group's end."""
        group_start = i - i % self.config.grad_accum
        group_size = min(self.config.grad_accum, self.schedule.steps_per_epoch - group_start)
        group_done = i + 1 >= group_start + group_size

        def backward(loss: torch.Tensor) -> None:
            self.scaler.scale(loss / group_size).backward()

        cached = hasattr(self.step_fn, "forward_backward")  # gradient caching: the step backpropagates itself
        no_sync = self.ddp is not None and not cached and not group_done
        with self.ddp.no_sync() if no_sync else contextlib.nullcontext():
            if cached:
                loss = self.step_fn.forward_backward(self.model, batch, backward,
                                                     lambda: autocast(self.device, self.amp_dtype))
            else:
                with autocast(self.device, self.amp_dtype):
                    loss = self.step_fn(self.model, batch) if self.ddp is None else self.ddp(batch)
            value = distributed.all_mean(loss.item(), self.device)  # the whole batch's loss on every process
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value} at step {self.state.step + 1} (epoch {epoch}, batch {i}); "
                    "lower train.lr, set train.amp=off, or check the batch for empty texts")
            if not cached:
                backward(loss)
        if cached and group_done and self.ddp is not None:
            backward(self.ddp(_SYNC))  # one pass through DDP averages what the chunks accumulated
        self.group_losses.append(value)
        return group_done

    def optimizer_step(self, epoch: int, i: int) -> None:
        """Set the lr (a pure function of the step), unscale, clip, step; then log the step."""
        lr = lr_at(self.state.step, self.schedule.total_steps, self.config.lr, self.schedule.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.epoch, self.state.batch_in_epoch = epoch, i + 1
        self.last_loss = sum(self.group_losses) / len(self.group_losses)
        self.group_losses = []
        self._log(epoch, lr, grad_norm)

    def _log(self, epoch: int, lr: float, grad_norm: float) -> None:
        step = self.state.step
        self.state.elapsed_s = time.perf_counter() - self.clock
        row = {"step": step, "epoch": epoch, "loss": self.last_loss, "lr": lr, "grad_norm": grad_norm,
               "elapsed_s": round(self.state.elapsed_s, 3)}
        if self.metrics_file is None:  # not rank 0
            return
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        if self.writer is not None:
            for k in ("loss", "lr", "grad_norm"):
                self.writer.add_scalar(f"train/{k}", row[k], step)
        self.recent_losses = (self.recent_losses + [self.last_loss])[-self.config.log_every:]
        running = sum(self.recent_losses) / len(self.recent_losses)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
        if step % self.config.log_every == 0:
            logger.info("step %d/%d epoch %d loss %.4f lr %.3g grad_norm %.3g", step, self.schedule.total_steps,
                        epoch, running, lr, grad_norm)

    # -- after a step: probes, evaluation and selection, checkpoint
    def after_step(self, epoch: int, *, epoch_done: bool) -> None:
        cfg, step = self.config, self.state.step
        if self.probes and ((cfg.probe_every and step % cfg.probe_every == 0) or self.finished):
            self.probe(step)
        if self.eval_fn is not None and (epoch_done or self.finished
                                         or (cfg.eval_every and step % cfg.eval_every == 0)):
            self.evaluate(step, epoch)
        if epoch_done:
            self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or epoch_done or self.finished:
            self.state.elapsed_s = time.perf_counter() - self.clock
            if self.world.is_main:  # every process holds the same weights and optimizer state
                save_checkpoint(self.out_dir, self.model, self.optimizer, self.scaler, self.state, cfg, self.save_fn,
                                 total_steps=self.schedule.total_steps, warmup_steps=self.schedule.warmup_steps)
            distributed.barrier()

    def probe(self, step: int) -> None:
        if not self.world.is_main:
            return
        self.model.eval()
        with torch.no_grad():
            rows = [{"step": step, "probe": _name(p), **p(self.model, step)} for p in self.probes]
        self.model.train()
        append_jsonl(self.out_dir / "probes.jsonl", rows)

    def evaluate(self, step: int, epoch: int) -> None:
        """Dev metrics of the current model; the best so far (on ``select_metric``) goes to ``best/``."""
        assert self.eval_fn is not None
        main = self.world.is_main
        cfg = self.config
        outcome: Any = None
        if main:  # rank 0 evaluates; every process takes its selection
            self.model.eval()
            try:
                with torch.no_grad():
                    raw = self.eval_fn(self.model)
                per_query = getattr(raw, "per_query", {}).get(cfg.select_metric)
                outcome = ({k: float(v) for k, v in raw.items()},
                           None if per_query is None else {q: float(v) for q, v in per_query.items()})
            except Exception as err:
                outcome = err
            self.model.train()
        outcome = distributed.broadcast_object(outcome)
        if isinstance(outcome, Exception):
            if main:
                raise outcome
            raise RuntimeError(f"rank 0 failed to evaluate at step {step}: {outcome!r}")
        metrics, per_query = outcome
        if cfg.select_metric not in metrics:
            raise ConfigError(f"eval_fn returned {sorted(metrics)}, which lacks select_metric="
                              f"{cfg.select_metric!r}; set train.select_metric to one of them")
        if cfg.select_alpha is not None and per_query is None:
            raise ConfigError(f"train.select_alpha needs per-query {cfg.select_metric} values from the eval_fn "
                              "(return a dualist.evaluation.QueryMetrics, as dualist.stages.dev_eval_fn does), "
                              "or leave select_alpha unset")
        value = float(metrics[cfg.select_metric])
        replaces, p_value = self.replaces_kept(value, per_query)
        row = {"step": step, "epoch": epoch, **metrics}
        if p_value is not None:
            row["select_p"] = p_value
        if main:
            append_jsonl(self.out_dir / "eval.jsonl", [row])
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"eval/{k}", v, step)
        logger.info("step %d eval: %s", step, metrics)
        if replaces:
            self.state.best_metric, self.state.best_step = value, step
            self.state.best_per_query = per_query if cfg.select_alpha is not None else None
            if main:
                with atomic_dir(self.out_dir / "best") as tmp:
                    self.save_fn(self.model, tmp)

    def replaces_kept(self, value: float, per_query: dict[str, float] | None) -> tuple[bool, float | None]:
        """Whether an evaluation of ``value`` replaces the kept checkpoint, and the p-value it was tested at.

        Ties keep the earlier step; ``select_min_delta`` asks a later one for more than noise, and
        ``select_alpha`` for a gain that a paired permutation test over the dev queries tells from chance.
        """
        cfg, state = self.config, self.state
        if state.best_metric is None:
            return True, None
        if cfg.select_alpha is None:
            return value > state.best_metric + cfg.select_min_delta, None
        from dualist.evaluation import paired_test

        if state.best_per_query is None or per_query is None:
            raise ConfigError("train.select_alpha: the kept checkpoint has no per-query dev values (a checkpoint "
                              "written without select_alpha); resume with the setting it was written with")
        p_value = paired_test(per_query, state.best_per_query).p_value
        return value > state.best_metric + cfg.select_min_delta and p_value < cfg.select_alpha, p_value

    # -- the end: final/, and model/ = best/ (with eval_fn) or final/
    def close(self) -> None:
        for name in ("bar", "metrics_file", "writer"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.close()

    def finish(self) -> TrainResult:
        out_dir, state = self.out_dir, self.state
        final_dir, model_dir = out_dir / "final", out_dir / "model"
        if self.world.is_main:
            self.write_final(final_dir, model_dir)
        distributed.barrier()  # every process returns the folders rank 0 wrote
        best_dir = out_dir / "best" if self.eval_fn is not None and (out_dir / "best").exists() else None
        return TrainResult(out_dir=out_dir, model_dir=model_dir, final_dir=final_dir, best_dir=best_dir,
                           best_metric=state.best_metric, best_step=state.best_step, steps=state.step,
                           last_loss=self.last_loss)

    def write_final(self, final_dir: Path, model_dir: Path) -> None:
        out_dir, state = self.out_dir, self.state
        # The last checkpoint holds final's weights and a checkpoint may hold best's: hard links, not
        # copies, where they agree.
        last = out_dir / CHECKPOINTS / f"step-{state.step}" / "model"
        with atomic_dir(final_dir) as tmp:
            if last.is_dir():
                shutil.copytree(last, tmp, dirs_exist_ok=True, copy_function=link_or_copy)
            else:
                self.save_fn(self.model, tmp)
        best_dir = out_dir / "best" if self.eval_fn is not None and (out_dir / "best").exists() else None
        if best_dir is not None and state.best_step is not None:
            share_identical_files(out_dir / CHECKPOINTS / f"step-{state.best_step}" / "model", best_dir)
        if best_dir is not None and state.best_step == 0:
            logger.warning("no training step beat the starting model on dev (%s %.4f at step 0): %s/model is the "
                           "starting model", self.config.select_metric, state.best_metric, out_dir)
        with atomic_dir(model_dir) as tmp:
            shutil.copytree(best_dir or final_dir, tmp, dirs_exist_ok=True, copy_function=link_or_copy)
        write_meta(out_dir, stage=self.stage, config=self.all_config, inputs=self.inputs,
                   extra={"resolved": self.resolved, **self.run_meta, "status": "done", "steps": state.step,
                          "best_metric": state.best_metric, "best_step": state.best_step,
                          "kept_start": best_dir is not None and state.best_step == 0,
                          "select_metric": self.config.select_metric if self.eval_fn is not None else None})


_SYNC = object()  # the input of the DDP pass that only synchronises gradients (gradient caching)


class _Step(torch.nn.Module):
    """What DDP wraps: the model, with the step function as its forward, so that a micro-batch's
    forward goes through DDP and its backward averages the gradients over the processes."""

    def __init__(self, model: torch.nn.Module, step_fn: Callable[[torch.nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.model, self.step_fn = model, step_fn

    def forward(self, batch: Any) -> torch.Tensor:
        if batch is _SYNC:  # zero, but through every parameter that holds a gradient: DDP reduces them
            return sum((p.sum() * 0.0 for p in self.model.parameters() if p.grad is not None),
                       torch.zeros((), device=next(self.model.parameters()).device))
        return self.step_fn(self.model, batch)


def _ddp(model: torch.nn.Module, step_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
         device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: a backbone's pooler, or a tower a chunk does not use, gets no gradient
    return DistributedDataParallel(_Step(model, step_fn), device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, forward_sync_buffers=False)


def _build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors (biases, LayerNorm weights) do not, as in nanoGPT and BERT."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


def _tensorboard(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; metrics.jsonl always has everything
        return None
    return SummaryWriter(str(out_dir / "tb"))


def _save_pretrained(model: torch.nn.Module, path: Path) -> None:
    model.save_pretrained(path)  # type: ignore[operator]


def _load_pretrained(model: torch.nn.Module, path: Path) -> None:
    loaded = type(model).from_pretrained(path)  # type: ignore[attr-defined]
    model.load_state_dict(loaded.state_dict())


def _name(probe: Callable) -> str:
    return getattr(probe, "__name__", type(probe).__name__)

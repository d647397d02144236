"""One training loop for the teacher and the student, readable top to bottom (nanoGPT style).

The loop knows nothing about retrieval: it takes a model, a function that yields the batches of an
epoch and a function that turns one batch into a loss. Around that it does what every run needs:

- AdamW (no weight decay on biases and LayerNorm weights), linear warmup then linear decay
  (:func:`dualist.training.schedule.lr_at`, set by hand on every step);
- gradient accumulation (each micro-batch's loss scaled by 1/accum), clipping, autocast on GPU;
- seeding, and deterministic algorithms on CPU, so the same seed gives the same weights;
- a progress bar, ``metrics.jsonl`` (one row per optimizer step) and TensorBoard when installed;
- checkpoints every ``checkpoint_every`` steps and at each epoch end, written to a temporary
  folder renamed into place, so a ``checkpoints/step-N/`` folder is always complete;
- ``resume=True`` continues from the newest checkpoint to the same weights as an uninterrupted run;
- ``eval_fn`` at each epoch end (and every ``eval_every`` steps) selects the best model, probes record
  scores along the way.

Output layout of ``out_dir``::

    dualist.json            resolved config, inputs, status (write_meta)
    metrics.jsonl           {"step", "epoch", "loss", "lr", "grad_norm", "elapsed_s"} per optimizer step
    eval.jsonl              {"step", "epoch", **eval_fn(model)} at each evaluation
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualist._io import atomic_write, progress, read_json, write_json, write_meta
from dualist.errors import ConfigError, StaleArtifactError
from dualist.training.config import TrainConfig
from dualist.training.schedule import lr_at, warmup_steps_for

__all__ = ["train_loop", "TrainResult", "latest_checkpoint", "seed_everything", "resolve_device",
           "enable_gradient_checkpointing"]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last: a checkpoint without it is incomplete
# Settings that change what a step computes; resuming with other values cannot match the first run.
_TRAJECTORY_FIELDS = ("batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio", "max_grad_norm",
                      "seed", "num_negatives", "negatives", "neg_rank_min", "neg_rank_max", "positives",
                      "in_batch_negatives", "amp")
_RUN_OUTPUTS = ("metrics.jsonl", "eval.jsonl", "probes.jsonl", CHECKPOINTS, "best", "final", "model", "tb")


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


@dataclass
class _State:
    """What a checkpoint needs to continue: where in the data we are and the best result so far."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epoch to continue in
    batch_in_epoch: int = 0  # batches of that epoch already consumed
    best_metric: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0


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
        step_fn: returns the mean loss of one micro-batch (a scalar with grad).
        steps_per_epoch: how many micro-batches ``batches(epoch)`` yields. An epoch makes
            ``ceil(steps_per_epoch / grad_accum)`` optimizer steps; the last group of an epoch may be
            shorter, and its losses are then averaged over the micro-batches it has.
        eval_fn: ``eval_fn(model) -> {"ndcg@10": ...}`` at each epoch end, at the last step and every
            ``config.eval_every`` steps;
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
    save_fn = save_fn or _save_pretrained
    load_fn = load_fn or _load_pretrained
    device = resolve_device(config.device)
    amp_dtype = _resolve_amp(config.amp, device)

    # -- how long: micro-batches per epoch -> optimizer steps -> schedule
    if steps_per_epoch < 1:
        raise ConfigError("no training batches: the training split has no usable examples "
                          "(queries with a positive and at least one candidate negative)")
    steps_in_epoch = math.ceil(steps_per_epoch / config.grad_accum)
    total_steps = config.max_steps or config.epochs * steps_in_epoch
    num_epochs = math.ceil(total_steps / steps_in_epoch)
    warmup_steps = warmup_steps_for(total_steps, config.warmup_ratio)

    # -- model and optimizer
    model.to(device)
    if config.freeze_layers:
        from dualist.models.backbone import freeze_bottom

        freeze_bottom(model, config.freeze_layers)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model, layers=config.checkpoint_layers or None)
    if config.lean_activations:
        from dualist.training.lean_activations import enable_lean_activations

        enable_lean_activations(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _build_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    run_meta = dict(meta or {})
    stage = run_meta.pop("stage", "train")
    inputs = run_meta.pop("inputs", None)
    all_config = {"train": config, **run_meta.pop("config", {})}

    # -- where to start: a checkpoint, or from scratch
    state = _State()
    checkpoint = latest_checkpoint(out_dir) if resume else None
    _remove_temporaries(out_dir)
    if checkpoint is not None:
        _check_same_run(out_dir, checkpoint, stage, all_config, inputs)
        state = _load_checkpoint(checkpoint, model, optimizer, scaler, config, load_fn, device)
        logger.info("resuming from %s (step %d, epoch %d, batch %d)", checkpoint, state.step, state.epoch,
                    state.batch_in_epoch)
    else:
        if resume:
            logger.info("no checkpoint in %s; starting from scratch", out_dir)
        _clear_outputs(out_dir)
        seed_everything(config.seed)
    for name in ("metrics.jsonl", "eval.jsonl", "probes.jsonl"):  # rows of steps redone after a crash
        _truncate_jsonl(out_dir / name, state.step)

    resolved = {"device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                "total_steps": total_steps, "warmup_steps": warmup_steps, "steps_per_epoch": steps_per_epoch}
    write_meta(out_dir, stage=stage, config=all_config, inputs=inputs,
               extra={"resolved": resolved, **run_meta, "status": "running"})

    writer = _tensorboard(out_dir)
    metrics_file = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed below
    recent_losses: list[float] = []
    last_loss: float | None = None
    bar = progress(total=total_steps, initial=state.step, desc="train")
    start = time.perf_counter() - state.elapsed_s

    def run_probes(step: int) -> None:
        model.eval()
        with torch.no_grad():
            rows = [{"step": step, "probe": _name(p), **p(model, step)} for p in probes]
        model.train()
        _append_jsonl(out_dir / "probes.jsonl", rows)

    def evaluate(step: int, epoch: int) -> None:
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in eval_fn(model).items()}
        model.train()
        if config.select_metric not in metrics:
            raise ConfigError(f"eval_fn returned {sorted(metrics)}, which lacks select_metric="
                              f"{config.select_metric!r}; set train.select_metric to one of them")
        _append_jsonl(out_dir / "eval.jsonl", [{"step": step, "epoch": epoch, **metrics}])
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"eval/{k}", v, step)
        value = float(metrics[config.select_metric])
        logger.info("step %d eval: %s", step, metrics)
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step = value, step
            with _atomic_dir(out_dir / "best") as tmp:
                save_fn(model, tmp)

    try:
        with _deterministic(device.type == "cpu"):
            if state.step == 0 and probes:
                run_probes(0)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            for epoch in range(state.epoch, num_epochs):
                if state.step >= total_steps:
                    break
                skip = state.batch_in_epoch if epoch == state.epoch else 0
                group_losses: list[float] = []
                seen = 0
                for i, batch in enumerate(batches(epoch)):
                    seen = i + 1
                    if i >= steps_per_epoch:
                        raise ValueError(f"batches({epoch}) yields more than steps_per_epoch="
                                         f"{steps_per_epoch} batches")
                    if i < skip:  # consumed before the checkpoint we resumed from
                        continue

                    # -- forward and backward one micro-batch; its share of the accumulated step
                    group_start = i - i % config.grad_accum
                    group_size = min(config.grad_accum, steps_per_epoch - group_start)
                    with _autocast(device, amp_dtype):
                        loss = step_fn(model, batch)
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(
                            f"loss is {loss_value} at step {state.step + 1} (epoch {epoch}, batch {i}); "
                            "lower train.lr, set train.amp=off, or check the batch for empty texts")
                    scaler.scale(loss / group_size).backward()
                    group_losses.append(loss_value)
                    if i + 1 < group_start + group_size:
                        continue

                    # -- optimizer step: set the lr, unscale, clip, step
                    lr = lr_at(state.step, total_steps, config.lr, warmup_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    scaler.unscale_(optimizer)
                    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    state.epoch, state.batch_in_epoch = epoch, i + 1

                    # -- log
                    last_loss = sum(group_losses) / len(group_losses)
                    group_losses = []
                    state.elapsed_s = time.perf_counter() - start
                    row = {"step": state.step, "epoch": epoch, "loss": last_loss, "lr": lr,
                           "grad_norm": grad_norm, "elapsed_s": round(state.elapsed_s, 3)}
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    if writer is not None:
                        for k in ("loss", "lr", "grad_norm"):
                            writer.add_scalar(f"train/{k}", row[k], state.step)
                    recent_losses = (recent_losses + [last_loss])[-config.log_every:]
                    running = sum(recent_losses) / len(recent_losses)
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
                    if state.step % config.log_every == 0:
                        logger.info("step %d/%d epoch %d loss %.4f lr %.3g grad_norm %.3g", state.step,
                                    total_steps, epoch, running, lr, grad_norm)

                    # -- probes, evaluation, checkpoint
                    epoch_done = i + 1 == steps_per_epoch
                    finished = state.step >= total_steps
                    if probes and ((config.probe_every and state.step % config.probe_every == 0)
                                   or finished):
                        run_probes(state.step)
                    if eval_fn is not None and (epoch_done or finished or (
                            config.eval_every and state.step % config.eval_every == 0)):
                        evaluate(state.step, epoch)
                    if epoch_done:
                        state.epoch, state.batch_in_epoch = epoch + 1, 0
                    if (config.checkpoint_every and state.step % config.checkpoint_every == 0) \
                            or epoch_done or finished:
                        state.elapsed_s = time.perf_counter() - start
                        _save_checkpoint(out_dir, model, optimizer, scaler, state, config, save_fn,
                                         total_steps=total_steps, warmup_steps=warmup_steps)
                    if finished:
                        break
                if state.step < total_steps and seen != steps_per_epoch:
                    raise ValueError(f"batches({epoch}) yielded {seen} batches, expected "
                                     f"steps_per_epoch={steps_per_epoch}")
    finally:
        bar.close()
        metrics_file.close()
        if writer is not None:
            writer.close()

    # -- the models to keep: final/, and model/ = best/ (with eval_fn) or final/. The last checkpoint
    # holds final's weights and a checkpoint may hold best's: hard links, not copies, where they agree.
    final_dir = out_dir / "final"
    last = out_dir / CHECKPOINTS / f"step-{state.step}" / "model"
    with _atomic_dir(final_dir) as tmp:
        if last.is_dir():
            shutil.copytree(last, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
        else:
            save_fn(model, tmp)
    best_dir = out_dir / "best" if eval_fn is not None and (out_dir / "best").exists() else None
    if best_dir is not None and state.best_step is not None:
        _share_identical_files(out_dir / CHECKPOINTS / f"step-{state.best_step}" / "model", best_dir)
    model_dir = out_dir / "model"
    with _atomic_dir(model_dir) as tmp:
        shutil.copytree(best_dir or final_dir, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
    write_meta(out_dir, stage=stage, config=all_config, inputs=inputs,
               extra={"resolved": resolved, **run_meta, "status": "done", "steps": state.step,
                      "best_metric": state.best_metric, "best_step": state.best_step,
                      "select_metric": config.select_metric if eval_fn is not None else None})
    return TrainResult(out_dir=out_dir, model_dir=model_dir, final_dir=final_dir, best_dir=best_dir,
                       best_metric=state.best_metric, best_step=state.best_step, steps=state.step,
                       last_loss=last_loss)


# ----------------------------------------------------------------------------------------------------
# setup


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use device=auto or cpu")
    return device


def enable_gradient_checkpointing(model: torch.nn.Module, layers: int | None = None) -> int:
    """Switch on activation recomputation in every Hugging Face backbone inside ``model``.

    Non-reentrant checkpointing with the RNG state preserved, so dropout masks (and therefore the
    losses) are those of a run without it. ``layers``: recompute only the first ``layers``
    checkpointable layers of each backbone (None: all). Returns how many backbones were switched.
    """
    from dualist.models.backbone import hf_backbones, transformer_layers

    backbones = hf_backbones(model, lambda m: getattr(m, "supports_gradient_checkpointing", False))
    if not backbones:
        raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} holds no Hugging Face "
                          "backbone that supports gradient checkpointing; set it to false")
    kwargs = {"use_reentrant": False}
    for backbone in backbones:
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if layers is not None:
            for layer in transformer_layers(backbone)[layers:]:
                layer.gradient_checkpointing = False
    return len(backbones)


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use amp=bf16 or amp=off on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of training only; the caller's setting is restored."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


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


# ----------------------------------------------------------------------------------------------------
# checkpoints


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoints/step-N`` folder under ``out_dir``, or None."""
    complete = _checkpoints(Path(out_dir))
    return complete[-1] if complete else None


def _checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / CHECKPOINTS
    if not root.exists():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()
             and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name[5:]))


@contextlib.contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """Fill a temporary sibling folder, then rename it to ``path``: readers never see half a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a model folder should not be
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link where the file system allows one (no second copy of the weights), else a copy.

    Safe because nothing in a run folder is ever rewritten in place: every folder is written anew
    and renamed into place (:func:`_atomic_dir`), so a linked file never changes under another name.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _share_identical_files(src: Path, dst: Path) -> None:
    """Replace each file of ``dst`` that is byte-identical to the same file of ``src`` by a hard link to it."""
    import filecmp

    if not src.is_dir():
        return
    for f in dst.rglob("*"):
        twin = src / f.relative_to(dst)
        if not f.is_file() or not twin.is_file() or os.path.samefile(f, twin):
            continue
        if f.stat().st_size == twin.stat().st_size and filecmp.cmp(f, twin, shallow=False):
            tmp = f.with_name(f".{f.name}.link.tmp")
            try:
                os.link(twin, tmp)
            except OSError:
                return  # no hard links here: keep the copies
            os.replace(tmp, f)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_temporaries(out_dir: Path) -> None:
    """Left-overs of a run killed while writing a folder (see :func:`_atomic_dir`)."""
    for root in (out_dir, out_dir / CHECKPOINTS):
        if root.exists():
            for p in root.glob(".*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
            for p in root.glob(".*.old"):
                shutil.rmtree(p, ignore_errors=True)


def _check_same_run(out_dir: Path, checkpoint: Path, stage: str, config: dict[str, Any],
                    inputs: dict[str, Any] | None) -> None:
    """Refuse to continue a run of another model, loss or data: resuming is the default, so it must not
    silently train the earlier run's weights further under new settings."""
    from dualist._io import _jsonable, read_meta

    before = read_meta(out_dir) or {}
    now = {"stage": stage, "config": {k: v for k, v in _jsonable(config).items() if k != "train"},
           "inputs": _jsonable(inputs or {})}
    was = {"stage": before.get("stage", stage),
           "config": {k: v for k, v in (before.get("config") or {}).items() if k != "train"},
           "inputs": before.get("inputs") or {}}
    changed = _differences(was, now)
    if changed:
        raise StaleArtifactError(f"cannot resume from {checkpoint}: that run was made with other settings or "
                                 f"inputs ({', '.join(changed)}). {_RESUME_CHOICES}")


def _differences(was: Any, now: Any, where: str = "") -> list[str]:
    """Where two JSON trees disagree; a key only one side has (a setting added since) is no difference."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [d for k in sorted(set(was) & set(now)) for d in _differences(was[k], now[k], f"{where}.{k}")]
    return [] if was == now else [where.lstrip(".")]


_RESUME_CHOICES = ("Rerun with that run's settings to continue it, write to another --out, or start over "
                   "with --no-resume (resume=False), which deletes that run's checkpoints and models.")


def _clear_outputs(out_dir: Path) -> None:
    existing = [name for name in _RUN_OUTPUTS if (out_dir / name).exists()]
    if existing:
        logger.warning("%s holds outputs of an earlier run (%s); starting over replaces them", out_dir,
                       ", ".join(existing))
    for name in existing:
        p = out_dir / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _save_checkpoint(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, state: _State, config: TrainConfig,
                     save_fn: Callable[[torch.nn.Module, Path], None], *, total_steps: int,
                     warmup_steps: int) -> Path:
    path = out_dir / CHECKPOINTS / f"step-{state.step}"
    with _atomic_dir(path) as tmp:
        save_fn(model, tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scaler.is_enabled():
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        # the schedule is a pure function of the step; this records its parameters for readers
        write_json(tmp / "scheduler.json", {"schedule": "linear_warmup_linear_decay", "base_lr": config.lr,
                                            "warmup_steps": warmup_steps, "total_steps": total_steps,
                                            "step": state.step})
        torch.save(_rng_state(), tmp / "rng.pt")
        write_json(tmp / STATE_FILE, {**dataclasses.asdict(state), "config": dataclasses.asdict(config)})
    if config.keep_checkpoints:
        for old in _checkpoints(out_dir)[:-config.keep_checkpoints]:
            shutil.rmtree(old)
    return path


def _load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, config: TrainConfig,
                     load_fn: Callable[[torch.nn.Module, Path], None], device: torch.device) -> _State:
    saved = read_json(path / STATE_FILE)
    before = saved.pop("config")
    now = dataclasses.asdict(config)
    changed = [k for k in _TRAJECTORY_FIELDS if k in before and before[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
        raise StaleArtifactError(f"cannot resume from {path}: it was trained with other settings ({diff}). "
                                 f"{_RESUME_CHOICES}")
    for k in ("epochs", "max_steps"):
        if before.get(k) != now[k]:
            logger.warning("resuming with %s=%r (was %r): the lr schedule changes from here on", k, now[k],
                           before.get(k))
    load_fn(model, path / "model")
    model.to(device)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    if scaler.is_enabled() and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return _State(**saved)


def _rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------
# JSONL logs


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop rows after ``step``: a resumed run redoes those steps and writes them again."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        rows = [line for line in fh if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if len(keep) != len(rows):
        with atomic_write(path) as fh:
            fh.writelines(keep)

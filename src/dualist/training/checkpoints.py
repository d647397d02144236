"""Checkpoints and run logs of the training loop (:func:`dualist.training.train_loop`).

A checkpoint is a folder ``checkpoints/step-N/`` holding ``model/``, ``optimizer.pt``, ``scheduler.json``,
``rng.pt``, ``[scaler.pt]`` and, written last, ``trainer_state.json``: a folder without it is
incomplete and never resumed from. Every folder is filled under a temporary name and renamed into
place (:func:`atomic_dir`), so a run killed at any moment leaves complete folders and temporaries that
the next start removes. ``metrics.jsonl``, ``eval.jsonl`` and ``probes.jsonl`` are cut back to the
checkpoint's step on resume, since the steps after it are redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualist._io import atomic_write, read_json, write_json
from dualist.errors import StaleArtifactError
from dualist.training.config import TrainConfig

__all__ = ["State", "latest_checkpoint", "atomic_dir", "file_umask", "remove_temporaries", "clear_outputs",
           "save_checkpoint", "load_checkpoint", "append_jsonl", "truncate_jsonl", "CHECKPOINTS", "STATE_FILE"]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last: a checkpoint without it is incomplete
# Settings that change what a step computes; resuming with other values cannot match the first run.
_TRAJECTORY_FIELDS = ("batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio", "max_grad_norm",
                      "seed", "num_negatives", "negatives", "neg_rank_min", "neg_rank_max", "positives",
                      "in_batch_negatives", "amp")
_RUN_OUTPUTS = ("metrics.jsonl", "eval.jsonl", "probes.jsonl", CHECKPOINTS, "best", "final", "model", "tb")


@dataclass
class State:
    """What a checkpoint needs to continue: where in the data we are and the best result so far."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epoch to continue in
    batch_in_epoch: int = 0  # batches of that epoch already consumed
    best_metric: float | None = None
    best_step: int | None = None
    best_per_query: dict[str, float] | None = None  # the kept checkpoint's per-query values (select_alpha only)
    elapsed_s: float = 0.0


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
def atomic_dir(path: Path) -> Iterator[Path]:
    """Fill a temporary sibling folder, then rename it to ``path``: readers never see half a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~file_umask())  # mkdtemp makes it private; a model folder should not be
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


def file_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def link_or_copy(src: str, dst: str) -> str:
    """A hard link where the file system allows one (no second copy of the weights), else a copy.

    Safe because nothing in a run folder is ever rewritten in place: every folder is written anew
    and renamed into place (:func:`atomic_dir`), so a linked file never changes under another name.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def share_identical_files(src: Path, dst: Path) -> None:
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


def check_same_run(out_dir: Path, checkpoint: Path, stage: str, config: dict[str, Any],
                   inputs: dict[str, Any] | None) -> None:
    """Refuse to continue a run of another model, loss or data: resuming is the default, so it must not
    silently train the earlier run's weights further under new settings."""
    from dualist._io import jsonable, read_meta

    before = read_meta(out_dir) or {}
    now = {"stage": stage, "config": {k: v for k, v in jsonable(config).items() if k != "train"},
           "inputs": jsonable(inputs or {})}
    was = {"stage": before.get("stage", stage),
           "config": {k: v for k, v in (before.get("config") or {}).items() if k != "train"},
           "inputs": before.get("inputs") or {}}
    changed = _differences(was, now)
    if changed:
        raise StaleArtifactError(f"cannot resume from {checkpoint}: that run was made with other settings or "
                                 f"inputs ({', '.join(changed)}). {RESUME_CHOICES}")


def _differences(was: Any, now: Any, where: str = "") -> list[str]:
    """Where two JSON trees disagree; a key only one side has (a setting added since) is no difference."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [d for k in sorted(set(was) & set(now)) for d in _differences(was[k], now[k], f"{where}.{k}")]
    return [] if was == now else [where.lstrip(".")]


RESUME_CHOICES = ("Rerun with that run's settings to continue it, write to another --out, or start over "
                  "with --no-resume (resume=False), which deletes that run's checkpoints and models.")


def remove_temporaries(out_dir: Path) -> None:
    """Left-overs of a run killed while writing a folder (see :func:`atomic_dir`)."""
    for root in (out_dir, out_dir / CHECKPOINTS):
        if root.exists():
            for p in root.glob(".*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
            for p in root.glob(".*.old"):
                shutil.rmtree(p, ignore_errors=True)


def clear_outputs(out_dir: Path) -> None:
    existing = [name for name in _RUN_OUTPUTS if (out_dir / name).exists()]
    if existing:
        logger.warning("%s holds outputs of an earlier run (%s); starting over replaces them", out_dir,
                       ", ".join(existing))
    for name in existing:
        p = out_dir / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def save_checkpoint(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, state: State, config: TrainConfig,
                     save_fn: Callable[[torch.nn.Module, Path], None], *, total_steps: int,
                     warmup_steps: int) -> Path:
    path = out_dir / CHECKPOINTS / f"step-{state.step}"
    with atomic_dir(path) as tmp:
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


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, config: TrainConfig,
                     load_fn: Callable[[torch.nn.Module, Path], None], device: torch.device) -> State:
    saved = read_json(path / STATE_FILE)
    before = saved.pop("config")
    now = dataclasses.asdict(config)
    changed = [k for k in _TRAJECTORY_FIELDS if k in before and before[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
        raise StaleArtifactError(f"cannot resume from {path}: it was trained with other settings ({diff}). "
                                 f"{RESUME_CHOICES}")
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
    return State(**saved)


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


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop rows after ``step``: a resumed run redoes those steps and writes them again."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        rows = [line for line in fh if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if len(keep) != len(rows):
        with atomic_write(path) as fh:
            fh.writelines(keep)

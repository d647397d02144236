"""Where and how a training run computes: the device, mixed precision, determinism, seeding and
gradient checkpointing (:func:`dualist.training.train_loop` sets these up before the first step)."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator

import numpy as np
import torch

from dualist.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "resolve_amp", "autocast", "seed_everything", "deterministic",
           "enable_gradient_checkpointing", "process_seed"]


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


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None: float32 throughout).

    ``auto`` is bf16 on CUDA and float32 on every CPU: bf16 changes a run's numbers, and the same
    command should train the same model on an AVX2 laptop and an AVX-512 server. Where the CPU has
    native bf16 (AVX512-BF16 or AMX), ``amp=bf16`` trains about twice as fast (``bench/RESULTS.md``);
    elsewhere torch emulates it and it is several times slower than float32, which is logged as a
    warning rather than refused (the numbers are still right).
    """
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use amp=bf16 or amp=off on CPU")
    if amp == "bf16" and device.type == "cpu":
        from dualist.models.cpu import cpu_features

        features = cpu_features()
        if not features.bf16:
            logger.warning("train.amp=bf16 on a CPU without bf16 instructions (%s): torch emulates bf16 "
                           "there, several times slower than float32; use amp=off (or auto) on this CPU",
                           features.describe())
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_seed(seed: int, rank: int, step: int) -> int:
    """A seed of its own for process ``rank`` of a distributed run resumed at ``step`` (dropout masks)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
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

"""The learning-rate schedule: a pure function of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import math

__all__ = ["lr_at", "warmup_steps_for"]


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length in optimizer steps: ``ceil(total_steps * warmup_ratio)`` (as Hugging Face does).

    >>> warmup_steps_for(30, 0.1), warmup_steps_for(25, 0.1), warmup_steps_for(5, 0.0)
    (3, 3, 0)
    """
    # round first: 30 * 0.1 is 3.0000000000000004 in floating point, which must not become 4
    return math.ceil(round(total_steps * warmup_ratio, 9))


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then linear decay to 0.

    Warmup climbs ``base_lr * (step + 1) / warmup_steps`` so the first step already learns and the
    last warmup step reaches ``base_lr``; the decay ``base_lr * (total_steps - step) /
    (total_steps - warmup_steps)`` starts at ``base_lr`` and would hit 0 one step after the last.

    >>> [round(lr_at(s, 6, 1.0, 2), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    >>> lr_at(10, 6, 1.0, 2)
    0.0
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return base_lr * max(0.0, (total_steps - step) / decay_steps)

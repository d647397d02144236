"""Pooling and evaluation-mode helpers shared by the dual- and cross-encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["mean_pool", "eval_mode"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the unmasked token vectors: (B, L, d), (B, L) -> (B, d). One bmm, no (B, L, d) copy."""
    m = mask.to(hidden.dtype).unsqueeze(1)  # (B, 1, L)
    summed = torch.bmm(m, hidden).squeeze(1)
    return summed / m.sum(-1).clamp(min=1e-9)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the module back in the mode it was in (mid-training eval)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)

"""Ranking losses for training and distilling dual encoders (docs/architecture.md §2-3).

Every loss is a plain ``torch.nn.Module`` with the same call::

    loss = loss_fn(student_scores, teacher_scores=None, labels=None)  # scalar tensor

``student_scores`` is ``(B, C)``: for each of B queries, the scores of C candidates. Column 0 is
the positive unless a boolean ``(B, C)`` ``labels`` mask marks the positives. Distillation losses
(``requires_teacher = True``) also take ``teacher_scores`` of the same shape, treated as constant
targets. Every loss averages over queries and computes in float32, also under autocast.

Pick a loss by name with :func:`build_loss`; :data:`LOSSES` is the registry.

Example:
    >>> import torch
    >>> from dualist.losses import build_loss
    >>> loss_fn = build_loss("kl", temperature=2.0)
    >>> loss_fn.requires_teacher
    True
    >>> student, teacher = torch.zeros(2, 4), torch.zeros(2, 4)
    >>> loss_fn(student, teacher).item()
    0.0
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Literal, get_args

from torch import nn

from dualist.losses.kl import SoftmaxKLLoss
from dualist.losses.m3se import M3SELoss
from dualist.losses.margin_mse import MarginMSELoss
from dualist.losses.mse import ScoreMSELoss
from dualist.losses.onehot import OneHotCELoss
from dualist.losses.rankdistil import RankDistilLoss

__all__ = [
    "LOSSES",
    "SCORE_MATCHING",
    "LOSS_NAMES",
    "LOSS_LABELS",
    "LossName",
    "build_loss",
    "requires_teacher",
    "OneHotCELoss",
    "ScoreMSELoss",
    "MarginMSELoss",
    "SoftmaxKLLoss",
    "RankDistilLoss",
    "M3SELoss",
]

LossName = Literal["onehot", "mse", "margin_mse", "kl", "rankdistil", "m3se"]
"""The names in :data:`LOSSES`, for config fields that choose a loss."""

LOSSES: dict[str, type[nn.Module]] = {
    "onehot": OneHotCELoss,
    "mse": ScoreMSELoss,
    "margin_mse": MarginMSELoss,
    "kl": SoftmaxKLLoss,
    "rankdistil": RankDistilLoss,
    "m3se": M3SELoss,
}
"""Loss name -> loss class."""

SCORE_MATCHING: tuple[str, ...] = tuple(name for name, cls in LOSSES.items() if getattr(cls, "matches_scores", False))
"""Losses that compare the teacher's scores or margins as numbers (MSE, Margin-MSE, M3SE), so the
teacher's scale matters to them: the ones ``teacher_calibration`` is for."""

LOSS_NAMES: tuple[str, ...] = get_args(LossName)
"""Every loss name, in the order tables list them."""

LOSS_LABELS: dict[str, str] = {
    "onehot": "DE one-hot",
    "mse": "DE + MSE",
    "margin_mse": "DE + Margin-MSE",
    "kl": "DE + softmax CE (KL)",
    "rankdistil": "DE + RankDistil",
    "m3se": "DE + M3SE",
}
"""Loss name -> how reports and tables name a dual-encoder student trained with it."""

if tuple(LOSSES) != LOSS_NAMES or tuple(LOSS_LABELS) != LOSS_NAMES:  # pragma: no cover - caught on import
    raise AssertionError(f"LossName {LOSS_NAMES}, LOSSES {tuple(LOSSES)} and LOSS_LABELS {tuple(LOSS_LABELS)} "
                         "disagree")


def requires_teacher(name: str) -> bool:
    """Whether the loss registered as ``name`` distils teacher scores (``requires_teacher`` on its class).

    >>> requires_teacher("m3se"), requires_teacher("onehot")
    (True, False)
    """
    if name not in LOSSES:
        build_loss(name)  # raises the error that lists the valid names
    return bool(getattr(LOSSES[name], "requires_teacher", False))


def _keyword_arguments(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with its keyword arguments.

    Raises:
        ValueError: ``name`` is not in :data:`LOSSES` (the message lists the valid names).
        TypeError: a keyword argument the loss does not take (the message lists the ones it does).

    Example:
        >>> from dualist.losses import build_loss
        >>> build_loss("rankdistil", k=3, seed=0)
        RankDistilLoss(k=3, num_samples=1, temperature=1.0, seed=0)
    """
    if name not in LOSSES:
        close = difflib.get_close_matches(str(name), LOSSES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint} valid names: {', '.join(LOSSES)}")
    cls = LOSSES[name]
    accepted = _keyword_arguments(cls)
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        takes = (f"accepted keyword arguments: {', '.join(accepted)}" if accepted
                 else "it takes no keyword arguments")
        raise TypeError(f"loss {name!r} ({cls.__name__}) got unexpected keyword argument(s) "
                        f"{', '.join(unknown)}; {takes}")
    return cls(**kwargs)

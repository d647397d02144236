"""Shared input checks for the ranking losses (the scores contract of docs/architecture.md §2).

Every loss takes ``student_scores`` of shape ``(B, C)`` (B queries, C candidates each), optionally
``teacher_scores`` of the same shape and a boolean ``labels`` mask marking positives; without
``labels`` column 0 is the positive. :func:`check_scores` turns these into a :class:`Scores` with
float32 tensors and an explicit positive mask, or raises an error that says what was expected and
what was got.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Scores", "check_scores"]


@dataclass(frozen=True)
class Scores:
    """Validated loss inputs.

    ``student`` and ``teacher`` are float32 (see :func:`check_scores`); ``teacher`` is detached,
    since teacher scores are targets, never trained through the loss. ``positives`` is a
    ``(B, C)`` boolean mask.
    """

    student: Tensor
    teacher: Tensor | None
    positives: Tensor


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _rows(mask: Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def check_scores(
    loss: str,
    student_scores: Tensor,
    teacher_scores: Tensor | None = None,
    labels: Tensor | None = None,
    *,
    requires_teacher: bool,
    requires_negative: bool,
) -> Scores:
    """Validate the inputs of the loss named ``loss`` and return them as float32 :class:`Scores`.

    Scores are upcast to float32 because squares and log-sum-exps in bfloat16/float16 lose most of
    their precision; none of the ops the losses use is on autocast's low-precision list, so the
    upcast is enough to keep the whole computation in float32 under ``torch.autocast``.

    ``requires_negative`` asks that every row also have at least one negative (a candidate that is
    not a positive), for losses whose formula compares positives with negatives.
    """
    if not isinstance(student_scores, Tensor):
        raise TypeError(f"{loss}: student_scores must be a torch.Tensor of shape (B, C), "
                        f"got {type(student_scores).__name__}")
    if student_scores.dim() != 2:
        hint = " (for a single query, use scores.unsqueeze(0))" if student_scores.dim() == 1 else ""
        raise ValueError(f"{loss}: student_scores must be 2-D (B, C), one row of C candidate scores "
                         f"per query; got {student_scores.dim()}-D shape {_shape(student_scores)}{hint}")
    if not student_scores.is_floating_point():
        raise ValueError(f"{loss}: student_scores must be a floating-point tensor, "
                         f"got dtype {student_scores.dtype}")
    batch, num_candidates = _shape(student_scores)
    if batch == 0 or num_candidates == 0:
        raise ValueError(f"{loss}: student_scores must have at least one query and one candidate, "
                         f"got shape {_shape(student_scores)}")
    expected = f"(B, C) = ({batch}, {num_candidates})"

    teacher = None
    if teacher_scores is None:
        if requires_teacher:
            raise ValueError(f"{loss} is a distillation loss and needs teacher_scores of shape "
                             f"{expected}, got None")
    else:
        if not isinstance(teacher_scores, Tensor):
            raise TypeError(f"{loss}: teacher_scores must be a torch.Tensor, "
                            f"got {type(teacher_scores).__name__}")
        if _shape(teacher_scores) != _shape(student_scores):
            raise ValueError(f"{loss}: teacher_scores must have the same shape as student_scores "
                             f"{expected}, got {_shape(teacher_scores)}")
        if not teacher_scores.is_floating_point():
            raise ValueError(f"{loss}: teacher_scores must be a floating-point tensor, "
                             f"got dtype {teacher_scores.dtype}")
        if teacher_scores.device != student_scores.device:
            raise ValueError(f"{loss}: teacher_scores must be on the same device as student_scores "
                             f"({student_scores.device}), got {teacher_scores.device}")
        teacher = teacher_scores.detach().float()

    if labels is None:
        positives = torch.zeros(batch, num_candidates, dtype=torch.bool, device=student_scores.device)
        positives[:, 0] = True
    else:
        if not isinstance(labels, Tensor) or labels.dtype != torch.bool:
            got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"{loss}: labels must be a boolean mask of shape {expected} marking the "
                             f"positives, got {got} (convert 0/1 labels with labels.bool())")
        if _shape(labels) != _shape(student_scores):
            raise ValueError(f"{loss}: labels must be a boolean mask of shape {expected}, "
                             f"got shape {_shape(labels)}")
        if labels.device != student_scores.device:
            raise ValueError(f"{loss}: labels must be on the same device as student_scores "
                             f"({student_scores.device}), got {labels.device}")
        no_positive = _rows(~labels.any(dim=1))
        if no_positive:
            raise ValueError(f"{loss}: row {no_positive[0]} of labels has no positive "
                             f"({len(no_positive)} of {batch} rows have none); every query needs at "
                             f"least one positive candidate")
        positives = labels

    if requires_negative:
        # Without labels only C matters, which keeps the default path free of a device sync.
        if labels is None and num_candidates < 2:
            raise ValueError(f"{loss}: student_scores has C=1 column, the positive, and no negative; "
                             f"this loss compares positives with negatives, so every query needs at "
                             f"least one negative candidate")
        no_negative = _rows(positives.all(dim=1)) if labels is not None else []
        if no_negative:
            raise ValueError(f"{loss}: row {no_negative[0]} of labels has no negative "
                             f"({len(no_negative)} of {batch} rows have none); this loss compares "
                             f"positives with negatives, so every query needs at least one negative "
                             f"candidate")

    return Scores(student=student_scores.float(), teacher=teacher, positives=positives)


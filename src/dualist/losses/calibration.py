"""Teacher scores on the student's scale.

Score-matching losses (MSE, Margin-MSE, M3SE) compare absolute scores or margins, yet a teacher and
a student score on unrelated scales: dualist's cosine-head teacher scores ``cos / 0.05`` plus an
unbounded linear head, the student a normalized dot product over 0.05. Nothing in the losses
reconciles the two, so the student is pulled toward margins it cannot, or need not, reach.
:func:`fit_scale` fits an affine map ``t' = a · t + b`` once, before training, that gives the teacher's
scores the starting student's spread and level on the same training pairs:

.. code-block:: text

    a = sqrt( Σ_q Σ_i (s⁰_qi - mean_i s⁰_qi)² / Σ_q Σ_i (t_qi - mean_i t_qi)² )
    b = mean_qi s⁰_qi - a · mean_qi t_qi

where ``s⁰`` is the student before any step and the sums run over the training queries ``q`` and
their candidates ``i``. ``a`` matches the *within-query* spread (the part every ranking loss sees;
differences between queries' levels would otherwise inflate it) and ``b`` the overall level. The
teacher's order and relative margins are unchanged (``a > 0``). :class:`Calibrated` applies it in
front of any loss.

Distillation combined with in-batch negatives is :class:`dualist.losses.in_batch.WithInBatchOneHot`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from torch import Tensor, nn


__all__ = ["Affine", "fit_scale", "Calibrated"]


@dataclasses.dataclass(frozen=True)
class Affine:
    """``t -> scale * t + bias``."""

    scale: float
    bias: float

    def __call__(self, scores: Tensor) -> Tensor:
        return scores * self.scale + self.bias


def fit_scale(student: Tensor, teacher: Tensor) -> Affine:
    """The affine map that gives ``teacher`` scores ``student``'s within-row spread and overall mean.

    Args:
        student, teacher: ``(B, C)`` scores of the same (query, candidate) cells, ``C >= 2``.

    >>> import torch
    >>> s = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    >>> t = torch.tensor([[10.0, 6.0], [2.0, -2.0]])   # spread 4 within rows where the student's is 1
    >>> fit_scale(s, t)
    Affine(scale=0.25, bias=0.5)
    """
    if student.shape != teacher.shape or student.dim() != 2 or student.shape[1] < 2:
        raise ValueError(f"expected student and teacher scores of one shape (B, C >= 2), got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    s, t = student.double(), teacher.double()
    s_dev = float(((s - s.mean(1, keepdim=True)) ** 2).sum())
    t_dev = float(((t - t.mean(1, keepdim=True)) ** 2).sum())
    if t_dev == 0.0 or s_dev == 0.0:
        raise ValueError("cannot calibrate: the teacher's or the student's scores do not vary within any query")
    scale = math.sqrt(s_dev / t_dev)
    return Affine(scale=scale, bias=float(s.mean()) - scale * float(t.mean()))


class Calibrated(nn.Module):
    """``loss(student, affine(teacher), labels)``: a distillation loss fed calibrated teacher scores."""

    requires_teacher: ClassVar[bool] = True

    def __init__(self, loss: nn.Module, affine: Affine):
        super().__init__()
        self.loss = loss
        self.affine = affine

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        teacher = None if teacher_scores is None else self.affine(teacher_scores)
        return self.loss(student_scores, teacher, labels)

    def extra_repr(self) -> str:
        return f"scale={self.affine.scale:.6g}, bias={self.affine.bias:.6g}"

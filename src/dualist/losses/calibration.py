"""Teacher scores on the student's scale, and distillation combined with in-batch negatives.

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

:class:`WithInBatchOneHot` adds ``weight ×`` the one-hot loss over the own *and* in-batch columns to a
distillation loss over the own columns: the teacher never scored the other queries' documents, so
those columns carry labels (negative) but no teacher target. Without them nothing pushes down
documents that never appear among a query's candidates, and dense retrieval over the whole corpus
fills many queries' top 10 with the same few documents (hubness).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from torch import Tensor, nn

from dualist.losses.onehot import OneHotCELoss

__all__ = ["Affine", "fit_scale", "Calibrated", "WithInBatchOneHot"]


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


class WithInBatchOneHot(nn.Module):
    r"""``distill(s[:, :C], t) + weight · onehot(s)`` for scores with in-batch columns appended.

    ``student_scores`` is ``(B, C + E)``: each query's own ``C`` candidates (positive in column 0),
    which the teacher scored, then ``E`` in-batch columns (other queries' documents; a column relevant
    to the row's query is already masked to a very low score). ``teacher_scores`` is ``(B, C)``.

    >>> import torch
    >>> from dualist.losses import build_loss
    >>> loss = WithInBatchOneHot(build_loss("mse"), weight=0.5)
    >>> s = torch.tensor([[2.0, 0.0, 1.0]])            # own: 2, 0; in-batch: 1
    >>> t = torch.tensor([[2.0, 1.0]])
    >>> mse, ce = 1.0, -torch.log_softmax(s, 1)[0, 0].item()
    >>> round(loss(s, t).item(), 4) == round(mse + 0.5 * ce, 4)
    True
    """

    requires_teacher: ClassVar[bool] = True

    def __init__(self, distill: nn.Module, weight: float = 1.0):
        super().__init__()
        self.distill = distill
        self.weight = weight
        self.onehot = OneHotCELoss()

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        if teacher_scores is None:
            raise ValueError("WithInBatchOneHot needs the teacher's (B, C) scores of the own candidates")
        own = teacher_scores.shape[1]
        if student_scores.dim() != 2 or student_scores.shape[1] < own:
            raise ValueError(f"expected student scores (B, C + E) with C = {own}, got {tuple(student_scores.shape)}")
        own_labels = None if labels is None else labels[:, :own]
        loss = self.distill(student_scores[:, :own], teacher_scores, own_labels)
        if self.weight:
            loss = loss + self.weight * self.onehot(student_scores, None, labels)
        return loss

    def extra_repr(self) -> str:
        return f"weight={self.weight}"

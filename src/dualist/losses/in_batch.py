"""Distillation combined with in-batch negatives.

:class:`WithInBatchOneHot` adds ``weight ×`` the one-hot loss over the own *and* in-batch columns to a
distillation loss over the own columns: the teacher never scored the other queries' documents, so
those columns carry labels (negative) but no teacher target. Without them nothing pushes down
documents that never appear among a query's candidates, and dense retrieval over the whole corpus
fills many queries' top 10 with the same few documents (hubness).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dualist.losses.onehot import OneHotCELoss

__all__ = ["WithInBatchOneHot"]


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

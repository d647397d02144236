"""Teacher targets that agree with the labels: no judged negative above a judged positive.

A teacher trained on a CPU budget is wrong on some of its own training queries: on SciFact's
training candidates the 256-token full-profile teacher ranks a BM25 negative above every judged
positive for 23% of the queries, and puts less than 0.11 of its softmax mass on the positives for
a tenth of them. A distillation loss then pulls the student's positive *down* on exactly the
queries whose labels say otherwise, against the one-hot term that pulls it up. :class:`PositiveFloor`
raises each positive's teacher score to the best negative's plus a margin before the loss sees it,
and leaves everything else the teacher says (its order of the negatives, its margins between
positives and the negatives below them) as it was:

.. code-block:: text

    t'_i = max(t_i, max_{j ∈ N} t_j + m)   for each positive i
    t'_j = t_j                             for each negative j

with ``m`` in the teacher's own units. Rows without a negative are unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["PositiveFloor", "floor_positives"]


def floor_positives(teacher: Tensor, positives: Tensor, margin: float) -> Tensor:
    """``teacher (B, C)`` with each positive (``positives``, a boolean ``(B, C)`` mask) raised to at least
    its row's best negative plus ``margin``.

    >>> import torch
    >>> t = torch.tensor([[1.0, 3.0, 0.0], [5.0, 3.0, 0.0]])
    >>> pos = torch.tensor([[True, False, False], [True, False, False]])
    >>> floor_positives(t, pos, 0.5)
    tensor([[3.5000, 3.0000, 0.0000],
            [5.0000, 3.0000, 0.0000]])
    """
    # a row without a negative has best_negative = -inf, so its floor is -inf too and nothing moves
    floor = teacher.masked_fill(positives, float("-inf")).amax(dim=1, keepdim=True) + margin
    return torch.where(positives, torch.maximum(teacher, floor), teacher)


class PositiveFloor(nn.Module):
    """``loss(student, floor_positives(teacher), labels)``: a distillation loss whose targets never put a
    judged negative above a judged positive (column 0 is the positive unless ``labels`` says otherwise)."""

    requires_teacher: ClassVar[bool] = True

    def __init__(self, loss: nn.Module, margin: float = 0.0):
        super().__init__()
        self.loss = loss
        self.margin = float(margin)

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self.loss).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=False)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        return self.loss(student_scores, floor_positives(scores.teacher, scores.positives, self.margin), labels)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}"

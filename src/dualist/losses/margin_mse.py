"""Margin-MSE: match the teacher's positive-minus-negative score margins."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["MarginMSELoss"]


class MarginMSELoss(nn.Module):
    r"""Squared error between student and teacher margins, over all (positive, negative) pairs.

    Per query, with positives ``P`` and negatives ``N``::

        loss = mean_{i ∈ P, j ∈ N} ((s_i - s_j) - (t_i - t_j))^2

    With one positive (column 0 by default) this is ``mean_j ((s_+ - s_j) - (t_+ - t_j))^2`` over
    the C - 1 negatives; with C = 2 it is exactly Hofstätter et al.'s triplet loss. The loss is the
    mean over queries. Only differences are matched, so adding a constant to a query's student (or
    teacher) scores leaves the loss unchanged.

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ``(B, C)`` float teacher scores (required; treated as constant targets).
        labels: optional ``(B, C)`` boolean mask of positives; default: column 0. Every row needs at
            least one positive and one negative.

    Returns:
        A scalar float32 tensor.

    Reference:
        Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
        Knowledge Distillation", 2020 (arXiv 2010.02666).

    Related:
        :class:`~dualist.losses.ScoreMSELoss` matches raw scores; :class:`~dualist.losses.M3SELoss`
        matches only the margin to the teacher's hardest negative and hinges the rest.

    Example:
        >>> import torch
        >>> from dualist.losses import MarginMSELoss
        >>> student = torch.tensor([[2.0, 1.0, 0.0]])
        >>> teacher = torch.tensor([[3.0, 1.0, 0.5]])
        >>> round(MarginMSELoss()(student, teacher).item(), 4)  # ((1 - 2)^2 + (2 - 2.5)^2) / 2
        0.625
    """

    requires_teacher: ClassVar[bool] = True
    matches_scores: ClassVar[bool] = True  # compares absolute scores or margins: calibrate the teacher first

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=True)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        pos = scores.positives
        gap = scores.student - scores.teacher
        # (s_i - s_j) - (t_i - t_j) = gap_i - gap_j, for every (i, j): (B, C, C), fine for the C of
        # a training batch (hundreds of columns even with in-batch negatives).
        pair_error = (gap.unsqueeze(2) - gap.unsqueeze(1)).square()
        pairs = pos.unsqueeze(2) & ~pos.unsqueeze(1)
        per_query = (pair_error * pairs).sum(dim=(1, 2)) / pairs.sum(dim=(1, 2))
        return per_query.mean()

"""Score MSE: match the teacher's scores one by one (logit matching)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["ScoreMSELoss"]


class ScoreMSELoss(nn.Module):
    r"""Squared error between student and teacher scores, summed over candidates.

    Per query::

        loss = Σ_{i=1..C} (s_i - t_i)^2

    summed over the C candidates and averaged over the B queries (so the value grows with C;
    divide by C for a per-candidate MSE). Labels play no part: every score is matched, including
    its absolute level, which is what makes this loss sensitive to the teacher's and student's
    score scales.

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ``(B, C)`` float teacher scores (required; treated as constant targets).
        labels: optional ``(B, C)`` boolean mask of positives; validated, otherwise unused.

    Returns:
        A scalar float32 tensor.

    Reference:
        Logit matching, as in Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014
        (arXiv 1312.6184); the "DE + MSE" row of Menon et al., ICML 2022.

    Related:
        :class:`~dualist.losses.MarginMSELoss` matches score differences instead, and
        :class:`~dualist.losses.M3SELoss` matches only the margins to the hardest negative.

    Example:
        >>> import torch
        >>> from dualist.losses import ScoreMSELoss
        >>> student = torch.tensor([[2.0, 1.0, 0.0]])
        >>> teacher = torch.tensor([[3.0, 1.0, 0.5]])
        >>> round(ScoreMSELoss()(student, teacher).item(), 4)  # 1 + 0 + 0.25
        1.25
    """

    requires_teacher: ClassVar[bool] = True
    matches_scores: ClassVar[bool] = True  # compares absolute scores or margins: calibrate the teacher first

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=False)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        return (scores.student - scores.teacher).square().sum(dim=1).mean()

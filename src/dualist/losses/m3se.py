"""M3SE, the paper's multi-margin MSE: match each positive's margin to the hardest negative."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["M3SELoss"]


class M3SELoss(nn.Module):
    r"""Multi-margin MSE (paper Eq. 4): margins to the teacher's hardest negative, plus a hinge.

    Per query, with positives ``P``, negatives ``N`` and ``j* = argmax_{j ∈ N} t_j`` (the teacher's
    highest-scored negative; hard argmax, no temperature)::

        loss = Σ_{i ∈ P} ((t_i - t_{j*}) - (s_i - s_{j*}))^2  +  Σ_{j ∈ N} max(0, s_j - s_{j*})^2

    averaged over queries; both sums are sums, as in Eq. 4, not means. The first term makes each
    positive's margin over ``j*`` match the teacher's; a positive's score itself is never matched,
    so the loss is unchanged when a constant is added to a query's teacher or student scores. The
    second term only asks the other negatives to stay below ``j*`` in the student, without
    matching their values; it includes ``j*`` itself with value 0.

    Choices not fixed by Eq. 4:

    - ``j*`` is chosen on the teacher's scores, never the student's; ties go to the lowest column.
      The choice is not differentiable, but the loss is differentiated through ``s_{j*}`` in both
      terms: the margin term moves ``s_{j*}`` against the positives, and the hinge term pushes
      ``s_{j*}`` up as well as pushing the offending ``s_j`` down.

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ``(B, C)`` float teacher scores (required; treated as constant targets).
        labels: optional ``(B, C)`` boolean mask of positives; default: column 0. Every row needs at
            least one positive and one negative.

    Returns:
        A scalar float32 tensor.

    Reference:
        Menon et al., "In Defense of Dual-Encoders for Neural Ranking", ICML 2022 (PMLR 162), Eq. 4.

    Related:
        :class:`~dualist.losses.MarginMSELoss` matches the margins to every negative;
        :class:`~dualist.losses.ScoreMSELoss` matches raw scores.

    Example:
        >>> import torch
        >>> from dualist.losses import M3SELoss
        >>> student = torch.tensor([[2.0, 0.5, 1.0]])
        >>> teacher = torch.tensor([[3.0, 1.0, 0.0]])  # j* = column 1
        >>> round(M3SELoss()(student, teacher).item(), 4)  # (2 - 1.5)^2 + max(0, 1 - 0.5)^2
        0.5
    """

    requires_teacher: ClassVar[bool] = True
    matches_scores: ClassVar[bool] = True  # compares absolute scores or margins: calibrate the teacher first

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=True)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        s, t, pos = scores.student, scores.teacher, scores.positives
        hardest = t.masked_fill(pos, float("-inf")).argmax(dim=1, keepdim=True)  # j*, (B, 1)
        s_hardest = s.gather(1, hardest)
        t_hardest = t.gather(1, hardest)
        margin_error = ((t - t_hardest) - (s - s_hardest)).square()
        hinge = torch.relu(s - s_hardest).square()
        per_query = torch.where(pos, margin_error, hinge).sum(dim=1)
        return per_query.mean()

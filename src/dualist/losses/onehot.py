"""One-hot softmax cross-entropy: train on the labels alone (paper Eq. 1)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["OneHotCELoss"]


class OneHotCELoss(nn.Module):
    r"""Softmax cross-entropy against the one-hot labels; no teacher.

    Per query, with positives ``P`` and negatives ``N``::

        loss = mean_{i ∈ P} -log( exp(s_i) / (exp(s_i) + Σ_{j ∈ N} exp(s_j)) )

    With one positive (column 0 by default) this is the usual ``-log softmax(s)[pos]`` over all C
    candidates, i.e. ``F.cross_entropy(s, zeros)``. With several positives (a ``labels`` mask) each
    positive competes only with the negatives: the other positives are left out of its
    denominator, so two positives never push each other down, and the per-positive losses are
    averaged. The loss is the mean over queries.

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ignored (accepted so every loss has the same signature).
        labels: optional ``(B, C)`` boolean mask of positives; default: column 0. Every row needs at
            least one positive and one negative.

    Returns:
        A scalar float32 tensor.

    Reference:
        Menon et al., "In Defense of Dual-Encoders for Neural Ranking", ICML 2022 (PMLR 162), Eq. 1.
        Also known as the InfoNCE / multiple-negatives ranking loss when the negatives are in-batch.

    Related:
        :class:`~dualist.losses.SoftmaxKLLoss` replaces the one-hot target by the teacher's softmax.

    Example:
        >>> import torch
        >>> from dualist.losses import OneHotCELoss
        >>> student = torch.tensor([[2.0, 1.0, 0.0]])  # column 0 is the positive
        >>> round(OneHotCELoss()(student).item(), 4)
        0.4076
    """

    requires_teacher: ClassVar[bool] = False
    matches_scores: ClassVar[bool] = False

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=False, requires_negative=True)
        s, pos = scores.student, scores.positives
        negatives_lse = torch.logsumexp(s.masked_fill(pos, float("-inf")), dim=1, keepdim=True)
        # -log softmax over {i} ∪ N, for every column i; only positive columns are kept.
        per_candidate = torch.logaddexp(s, negatives_lse) - s
        per_query = torch.where(pos, per_candidate, 0.0).sum(dim=1) / pos.sum(dim=1)
        return per_query.mean()

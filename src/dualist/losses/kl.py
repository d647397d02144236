"""Softmax CE / KL probability matching: match the teacher's softmax over the candidates."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["SoftmaxKLLoss"]


class SoftmaxKLLoss(nn.Module):
    r"""KL divergence from the teacher's to the student's softmax, with temperature ``T``.

    Per query, with ``p = softmax(t / T)`` and ``q = softmax(s / T)`` over the C candidates::

        loss = T^2 · KL(p || q) = T^2 · Σ_i p_i (log p_i - log q_i)

    averaged over queries. KL differs from the softmax cross-entropy ``-Σ p_i log q_i`` only by
    the teacher's entropy, a constant, so both have the same gradients; KL is reported because it
    is 0 when the student matches the teacher. The ``T^2`` factor keeps gradient magnitudes
    comparable across temperatures (Hinton et al.). Labels play no part; the softmax is
    shift-invariant, so only score differences within a query matter.

    Args:
        temperature: ``T > 0``, applied to both teacher and student scores (default 1.0).

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ``(B, C)`` float teacher scores (required; treated as constant targets).
        labels: optional ``(B, C)`` boolean mask of positives; validated, otherwise unused.

    Returns:
        A scalar float32 tensor.

    Reference:
        Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015
        (arXiv 1503.02531); the "DE + softmax CE" row of Menon et al., ICML 2022.

    Related:
        :class:`~dualist.losses.OneHotCELoss` is the same loss with a one-hot target;
        :class:`~dualist.losses.RankDistilLoss` with ``k=1`` is a sampled estimate of it.

    Example:
        >>> import torch
        >>> from dualist.losses import SoftmaxKLLoss
        >>> student = torch.tensor([[2.0, 1.0, 0.0]])
        >>> teacher = torch.tensor([[3.0, 1.0, 0.5]])
        >>> round(SoftmaxKLLoss()(student, teacher).item(), 4)
        0.066
        >>> round(SoftmaxKLLoss()(teacher, teacher).item(), 4)
        0.0
    """

    requires_teacher: ClassVar[bool] = True
    matches_scores: ClassVar[bool] = False

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=False)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        temperature = self.temperature
        log_q = F.log_softmax(scores.student / temperature, dim=1)
        log_p = F.log_softmax(scores.teacher / temperature, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
        return temperature**2 * kl.mean()

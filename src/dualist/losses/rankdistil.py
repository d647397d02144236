"""RankDistil: Plackett–Luce likelihood of teacher-sampled top-k orderings under the student."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from dualist.losses._validate import check_scores

__all__ = ["RankDistilLoss"]


class RankDistilLoss(nn.Module):
    r"""Negative top-k Plackett–Luce log-likelihood of orderings sampled from the teacher.

    Per query, ``num_samples`` permutations ``π`` of the C candidates are drawn from the
    Plackett–Luce distribution with scores ``t / T`` by the Gumbel trick (add i.i.d. Gumbel(0, 1)
    noise to ``t / T`` and sort in decreasing order). Each is scored by the student's top-k
    Plackett–Luce log-likelihood::

        log PL_k(π | s) = Σ_{r=1..k} [ s_{π_r} - logsumexp(s_{π_r}, s_{π_{r+1}}, ..., s_{π_C}) ]

    and the loss is ``-mean log PL_k(π | s)`` over the samples and then over the queries: a
    Monte-Carlo estimate of the cross-entropy between the teacher's and the student's top-k
    Plackett–Luce distributions. Only the order of the teacher's scores (and their gaps, through
    ``T``) matters; labels play no part. The student's scores are used unscaled.

    Args:
        k: length of the ordered prefix that is scored, ``1 <= k <= C`` (default: ``C``, the full
            ordering; ``k = C - 1`` gives the same value since the last factor is 1).
        num_samples: permutations drawn per query and forward call (default 1).
        temperature: ``T > 0`` dividing the teacher scores before sampling (default 1.0); small
            ``T`` approaches the teacher's own sorted order, large ``T`` a uniform shuffle.
        seed: seed of a private CPU generator, for reproducible sampling. The noise is drawn on the
            CPU and moved to the scores' device, so a seed gives the same orderings on any device.
            Each call advances the generator, so successive calls draw fresh orderings.
        generator: a ``torch.Generator`` to draw from instead (mutually exclusive with ``seed``);
            the noise is drawn on its device. With neither, torch's global RNG on the scores'
            device is used.

    Args (of ``forward``):
        student_scores: ``(B, C)`` float scores of the model being trained.
        teacher_scores: ``(B, C)`` float teacher scores (required; only used to sample orderings).
        labels: optional ``(B, C)`` boolean mask of positives; validated, otherwise unused.

    Returns:
        A scalar float32 tensor.

    Reference:
        Reddi et al., "RankDistil: Knowledge Distillation for Ranking", AISTATS 2021 (PMLR 130);
        Gumbel-top-k sampling: Kool et al., "Stochastic Beams and Where to Find Them", ICML 2019
        (arXiv 1903.06059); the Plackett–Luce likelihood is ListMLE's (Xia et al., ICML 2008).

    Related:
        With ``k = 1`` this is a one-sample estimate of the softmax cross-entropy between
        ``softmax(t / T)`` and ``softmax(s)``, i.e. of :class:`~dualist.losses.SoftmaxKLLoss` up to
        a constant (for ``T = 1``).

    Example:
        >>> import torch
        >>> from dualist.losses import RankDistilLoss
        >>> student = torch.tensor([[1.0, 0.0, -1.0]])
        >>> teacher = torch.tensor([[20.0, 10.0, 0.0]])  # samples the order (0, 1, 2)
        >>> loss = RankDistilLoss(k=2, seed=0)(student, teacher)
        >>> round(loss.item(), 4)  # -(1 - log(e + 1 + 1/e)) - (0 - log(1 + 1/e))
        0.7209
    """

    requires_teacher: ClassVar[bool] = True
    matches_scores: ClassVar[bool] = False

    def __init__(self, *, k: int | None = None, num_samples: int = 1, temperature: float = 1.0,
                 seed: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1 (or None for all candidates), got {k}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        self.k = k
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.seed = seed
        self.generator = generator
        if seed is not None:
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(seed)

    def extra_repr(self) -> str:
        return (f"k={self.k}, num_samples={self.num_samples}, temperature={self.temperature}, "
                f"seed={self.seed}")

    def sample_orderings(self, teacher_scores: Tensor) -> Tensor:
        """Draw ``num_samples`` orderings per query from PL(``teacher_scores / T``): ``(B, S, C)``.

        Row ``[b, n]`` lists candidate indices from first to last.
        """
        batch, num_candidates = teacher_scores.shape
        shape = (batch, self.num_samples, num_candidates)
        device = self.generator.device if self.generator is not None else teacher_scores.device
        with torch.no_grad():
            uniform = torch.rand(shape, generator=self.generator, device=device, dtype=torch.float32)
            # uniform == 0 gives -inf noise: that candidate is sampled last, never NaN.
            gumbel = -torch.log(-torch.log(uniform)).to(teacher_scores.device)
            keys = teacher_scores.detach().float().unsqueeze(1) / self.temperature + gumbel
            return torch.argsort(keys, dim=2, descending=True, stable=True)

    def forward(self, student_scores: Tensor, teacher_scores: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        scores = check_scores(type(self).__name__, student_scores, teacher_scores, labels,
                              requires_teacher=True, requires_negative=False)
        assert scores.teacher is not None  # guaranteed by requires_teacher
        s = scores.student
        batch, num_candidates = s.shape
        k = num_candidates if self.k is None else self.k
        if k > num_candidates:
            raise ValueError(f"{type(self).__name__}: k={k} exceeds the number of candidates "
                             f"C={num_candidates} in student_scores of shape {tuple(s.shape)}")
        orderings = self.sample_orderings(scores.teacher)
        s_ordered = s.unsqueeze(1).expand(-1, self.num_samples, -1).gather(2, orderings)
        # logsumexp over each suffix π_r..π_C: a reversed cumulative logsumexp.
        suffix_lse = torch.logcumsumexp(s_ordered.flip(2), dim=2).flip(2)
        log_likelihood = (s_ordered - suffix_lse)[..., :k].sum(dim=2)  # (B, S)
        return -log_likelihood.mean()

"""A teacher ensemble of the cross-encoder and BM25: lexical evidence in the distillation targets.

A cross-encoder trained for a few hundred steps on a few hundred queries (what fits on a CPU) is
not the strong teacher the paper assumes: on SciFact's dev queries BM25 alone re-ranks better than
such a teacher, and the two together better than either. Their combination is the stronger teacher
available, and it carries what a dense student learns least from one-hot labels: exact term matches
(distilling BM25 into a dense model is the idea of SPAR, Chen et al. 2021; Margin-MSE's teachers
were an ensemble too, Hofstätter et al. 2020).

:func:`add_bm25` adds ``weight`` times the query's BM25 scores to the teacher's, in the teacher's
own units, over each query's scored documents ``D_q``::

    t'_i = t_i + w * sd_q(t) * (b_i - mean_q(b)) / sd_q(b)        (i in D_q)

so ``t'`` ranks as ``z(t) + w * z(b)`` (the per-query z-scores' sum) while keeping the teacher's scale
and mean, which the score-matching losses and their calibration read. A query whose BM25 scores
are all equal keeps its teacher scores. :func:`choose_bm25_weight` picks ``w`` on dev: the weight
whose ensemble re-ranks dev best, ``0`` (the teacher alone) included, so it never chooses an
ensemble that dev finds worse than the teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dualist.training.scoring import TeacherScores

__all__ = ["add_bm25", "with_bm25", "choose_bm25_weight", "BM25_WEIGHTS"]

Run = Mapping[str, Mapping[str, float]]

# the grid choose_bm25_weight searches (per-query z-score units of BM25 per unit of teacher)
BM25_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def add_bm25(teacher: Run, bm25: Run, weight: float) -> dict[str, dict[str, float]]:
    """``teacher`` plus ``weight`` x ``bm25`` in the teacher's units (module docstring), as a run.

    Every scored pair needs its BM25 score (:meth:`dualist.BM25Retriever.score_pairs` gives them for
    any pair); ``weight=0`` returns the teacher's scores unchanged.

    >>> add_bm25({"q": {"a": 2.0, "b": 0.0}}, {"q": {"a": 1.0, "b": 3.0}}, 0.5)
    {'q': {'a': 1.5, 'b': 0.5}}

    Raises:
        KeyError: a pair of ``teacher`` has no BM25 score.
        ValueError: ``weight`` is negative or not finite.
    """
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"the BM25 weight must be a finite number >= 0, got {weight}")
    out: dict[str, dict[str, float]] = {}
    for qid, docs in teacher.items():
        dids = list(docs)
        t = np.array([docs[d] for d in dids], dtype=np.float64)
        lexical = bm25.get(qid, {})
        missing = [d for d in dids if d not in lexical]
        if missing:
            raise KeyError(f"no BM25 score for query {qid!r} and documents {missing[:3]}; score every pair "
                           "the teacher scored (BM25Retriever.score_pairs)")
        b = np.array([lexical[d] for d in dids], dtype=np.float64)
        sd_b = b.std()
        if weight == 0 or sd_b == 0:
            out[qid] = {d: float(v) for d, v in zip(dids, t.tolist())}
            continue
        sd_t = t.std() if t.std() > 0 else 1.0
        fused = t + weight * sd_t * (b - b.mean()) / sd_b
        out[qid] = {d: float(v) for d, v in zip(dids, fused.tolist())}
    return out


def with_bm25(scores: TeacherScores, bm25: Run, weight: float) -> TeacherScores:
    """:func:`add_bm25` on a score cache; the result's metadata (and so its fingerprint) records the
    weight under ``bm25_weight``."""
    meta = dict(scores.meta)
    meta["bm25_weight"] = float(weight)
    return TeacherScores(add_bm25(scores.as_dict(), bm25, weight), meta=meta, path=scores.path)


def choose_bm25_weight(teacher: Run, bm25: Run, metric: Callable[[Run], float],
                       weights: Sequence[float] = BM25_WEIGHTS) -> tuple[float, dict[float, float]]:
    """The weight of ``weights`` whose ensemble scores best by ``metric`` (a dev re-rank nDCG@10, say),
    and every weight's figure. Ties go to the smaller weight, so ``0`` wins unless BM25 helps."""
    figures = {float(w): float(metric(add_bm25(teacher, bm25, w))) for w in weights}
    best = max(figures, key=lambda w: (figures[w], -w))
    return best, figures

"""How far a teacher's scores of training candidates agree with the training labels.

A distilled student learns the teacher's ranking of each query's candidates. Where the teacher puts
an unjudged candidate above every judged positive, the target contradicts the label the one-hot
student learns from, and a confident contradiction pulls the student away from the label. These
figures say how often that happens and how confident the teacher is, so a user can see whether the
teacher's targets need the label floor (``TrainConfig.teacher_positive_margin``,
:mod:`dualist.losses.label_floor`) before training a student on them.

Per query with at least one positive and one negative among its scored candidates (positives:
judged grade >= ``min_grade``; negatives: unjudged candidates or judged grade 0; judged documents
with a grade between, which training never uses, are left out):

- *contradicted*: some negative scores strictly above every positive;
- *positive mass*: the softmax probability the teacher's scores (as logits, temperature 1, as the KL
  loss sees them by default) give the positives together;
- *margin*: the best positive's score minus the best negative's (teacher units; negative where
  contradicted). The label floor with margin ``M`` raises every positive to at least the best
  negative's score + ``M``, so it changes the targets of the queries whose margin is below ``M``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dualist.diagnostics.stats import describe

__all__ = ["LabelAgreement", "label_agreement"]


@dataclass(frozen=True)
class LabelAgreement:
    """Agreement of teacher scores with the labels over the queries that have a positive and a negative."""

    queries: int
    """queries with at least one positive and one negative among their scored candidates"""
    contradicted: float
    """share of those queries where a negative scores above every positive"""
    positive_mass: dict[str, float]
    """:func:`~dualist.diagnostics.describe` of the teacher softmax's mass on the positives"""
    margin: dict[str, float]
    """:func:`~dualist.diagnostics.describe` of best positive minus best negative (teacher units)"""
    margin_q25_where_right: float
    """first quartile of the margin over the queries the teacher ranks right (NaN when none): a floor
    margin below it changes no more than a quarter of those queries' targets"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and reports."""
        if not self.queries:
            return "teacher vs labels: no query has both a positive and a negative among its scored candidates"
        return (f"teacher vs labels on {self.queries} training queries: a negative above every positive in "
                f"{self.contradicted:.1%}; softmax mass on the positives median {self.positive_mass['median']:.2f} "
                f"(p10 {self.positive_mass['p10']:.2f}); best positive - best negative median "
                f"{self.margin['median']:.2f}, first quartile where right {self.margin_q25_where_right:.2f}")


def label_agreement(scores: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], *,
                    min_grade: int = 1) -> LabelAgreement:
    """Agreement of ``scores`` (``{qid: {doc_id: teacher score}}``) with ``qrels`` (``{qid: {doc_id: grade}}``).

    >>> s = {"q1": {"p": 3.0, "n1": 1.0, "n2": 0.0}, "q2": {"p": 0.0, "n1": 2.0}, "q3": {"p": 1.0}}
    >>> a = label_agreement(s, {"q1": {"p": 1}, "q2": {"p": 1}, "q3": {"p": 1}})
    >>> a.queries, a.contradicted, a.margin["median"]
    (2, 0.5, 0.0)
    """
    if min_grade < 1:
        raise ValueError(f"min_grade must be >= 1, got {min_grade}")
    mass, margin = [], []
    for qid, cands in scores.items():
        judged = qrels.get(qid, {})
        pos = [s for d, s in cands.items() if judged.get(d, 0) >= min_grade]
        neg = [s for d, s in cands.items() if judged.get(d, 0) <= 0]
        if not pos or not neg:
            continue
        logits = np.asarray(pos + neg, dtype=float)
        p = np.exp(logits - logits.max())
        mass.append(float(p[:len(pos)].sum() / p.sum()))
        margin.append(max(pos) - max(neg))
    margins = np.asarray(margin, dtype=float)
    right = margins[margins >= 0]
    return LabelAgreement(
        queries=len(margin),
        contradicted=float((margins < 0).mean()) if margin else float("nan"),
        positive_mass=describe(mass),
        margin=describe(margins),
        margin_q25_where_right=float(np.quantile(right, 0.25)) if right.size else float("nan"),
    )

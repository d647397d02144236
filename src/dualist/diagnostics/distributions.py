"""Scores of positives vs negatives, pooled over queries (docs/architecture.md §5).

Raw CA logits and DE dot products live on different scales; per-query standardization puts them on
one axis so their overlap can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ScoreDistributions", "score_distributions", "Standardize"]

Standardize = Literal["none", "query_z", "query_minmax"]
_STANDARDIZE = ("none", "query_z", "query_minmax")


@dataclass(frozen=True, eq=False)
class ScoreDistributions:
    """Pooled scores of relevant (``positives``) and non-relevant (``negatives``) candidates.

    ``standardize`` records how scores were rescaled per query, so a plot can label its axis.
    """

    positives: np.ndarray
    negatives: np.ndarray
    standardize: str = "none"

    def __repr__(self) -> str:
        return (f"ScoreDistributions(positives=<{self.positives.size} scores>, "
                f"negatives=<{self.negatives.size} scores>, standardize={self.standardize!r})")


def _rescale(vals: np.ndarray, how: str) -> np.ndarray:
    if how == "query_z":
        sd = vals.std()
        return (vals - vals.mean()) / sd if sd > 0 else np.zeros_like(vals)
    if how == "query_minmax":
        span = vals.max() - vals.min()
        return (vals - vals.min()) / span if span > 0 else np.zeros_like(vals)
    return vals


def score_distributions(scores: Mapping[str, Mapping[str, float]],
                        qrels: Mapping[str, Mapping[str, int]], *,
                        standardize: Standardize = "none") -> ScoreDistributions:
    """Split every scored candidate into positives (qrel > 0) and negatives, over all queries.

    Only queries with at least one relevant document in ``qrels`` contribute (an unjudged query's
    candidates are not known negatives); their candidates that are unjudged count as negatives.
    ``standardize``: ``"none"`` keeps raw scores; ``"query_z"`` subtracts each query's candidate mean
    and divides by its standard deviation; ``"query_minmax"`` maps each query's candidates to [0, 1].
    A query whose candidates all score the same maps to zeros.

    >>> d = score_distributions({"q1": {"a": 4.0, "b": 2.0, "c": 0.0}}, {"q1": {"a": 1, "b": 0}},
    ...                         standardize="query_minmax")
    >>> d.positives.tolist(), d.negatives.tolist()
    ([1.0], [0.5, 0.0])
    """
    if standardize not in _STANDARDIZE:
        raise ValueError(f"standardize={standardize!r} is not one of {_STANDARDIZE}")
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    for qid, cands in scores.items():
        rel = qrels.get(qid, {})
        if not cands or not any(v > 0 for v in rel.values()):
            continue
        vals = _rescale(np.fromiter(cands.values(), dtype=float, count=len(cands)), standardize)
        lab = np.fromiter((rel.get(d, 0) > 0 for d in cands), dtype=bool, count=len(cands))
        pos.append(vals[lab])
        neg.append(vals[~lab])
    cat = (lambda parts: np.concatenate(parts) if parts else np.empty(0))
    return ScoreDistributions(cat(pos), cat(neg), standardize)

"""Per-query normalized margin between the positive and the hardest negative (docs/architecture.md §5).

The paper argues that a dual-encoder falls short of its cross-attention teacher because it
separates positives from hard negatives by a smaller *relative* margin. We measure, per query over
its scored candidates C (positives P, negatives N)::

    margin = (s_+ - max_{j in N} s_j) / (max_C s - min_C s)

It is invariant to ``s -> a*s + b`` with ``a > 0``, so a CA's logits and a DE's dot products can be
compared on one axis. It lies in [-1, 1]; higher is better; > 0 means the chosen positive beats
every negative. This is our reconstruction of the paper's measure, not a formula it prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from dualist.diagnostics.stats import describe

__all__ = ["Margins", "normalized_margins", "normalized_margins_array", "PositiveRule"]

logger = logging.getLogger(__name__)

PositiveRule = Literal["max", "mean", "min"]
_POSITIVE_RULES = ("max", "mean", "min")


class Margins(dict):
    """``dict[qid, margin]`` that also records the queries it had to skip, and why.

    ``skipped`` maps a query id to ``"no positive"``, ``"no negative"`` or ``"no candidates"``
    (no positive / no negative among that query's *scored* candidates).
    """

    def __init__(self, values: Mapping[str, float] | Iterable[tuple[str, float]] = (),
                 skipped: Mapping[str, str] | None = None):
        super().__init__(values)
        self.skipped: dict[str, str] = dict(skipped or {})

    def summary(self) -> dict[str, Any]:
        """:func:`describe` of the margins plus skip counts, ready to log or write as JSON."""
        out: dict[str, Any] = dict(describe(self))
        out["skipped"] = len(self.skipped)
        for reason in ("no positive", "no negative", "no candidates"):
            out["skipped_" + reason.replace(" ", "_")] = sum(r == reason for r in self.skipped.values())
        return out

    def __repr__(self) -> str:
        return f"Margins({dict.__repr__(self)}, skipped={self.skipped!r})"


def _check_rule(positive: str) -> None:
    if positive not in _POSITIVE_RULES:
        raise ValueError(f"positive={positive!r} is not one of {_POSITIVE_RULES}")


def normalized_margins_array(scores: np.ndarray, labels: np.ndarray, *,
                             positive: PositiveRule = "max") -> np.ndarray:
    """Normalized margins of a ``(B, C)`` score matrix with a ``(B, C)`` boolean positive mask.

    The array form of :func:`normalized_margins`, usable on a training batch (docs/architecture.md §2).
    NaN scores mark padding (absent candidates). A row with no positive or no negative gives NaN;
    a row whose scores are all equal gives 0.0.

    >>> normalized_margins_array([[3.0, 1.0, 2.0, 0.0]], [[True, False, False, False]])
    array([0.33333333])
    >>> normalized_margins_array([[1.0, 1.0], [2.0, np.nan]], [[True, False], [True, False]])
    array([ 0., nan])
    """
    _check_rule(positive)
    s = np.asarray(scores, dtype=float)
    lab = np.asarray(labels, dtype=bool)
    if s.ndim == 1:  # one query
        s = s[None, :]
        lab = lab[None, :] if lab.ndim == 1 else lab
    if s.ndim != 2 or lab.shape != s.shape:
        raise ValueError(f"expected scores and labels of the same shape (B, C); got {s.shape} and {lab.shape}")
    if np.isinf(s).any():
        raise ValueError("scores contain inf; margins need finite scores (NaN marks padding)")
    valid = ~np.isnan(s)
    pos = lab & valid
    neg = ~lab & valid
    n_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if positive == "max":
            s_pos = np.where(pos, s, -np.inf).max(axis=1, initial=-np.inf)
        elif positive == "min":
            s_pos = np.where(pos, s, np.inf).min(axis=1, initial=np.inf)
        else:
            s_pos = np.where(pos, s, 0.0).sum(axis=1) / n_pos
        hardest_neg = np.where(neg, s, -np.inf).max(axis=1, initial=-np.inf)
        hi = np.where(valid, s, -np.inf).max(axis=1, initial=-np.inf)
        lo = np.where(valid, s, np.inf).min(axis=1, initial=np.inf)
        span = hi - lo
        margin = np.where(span > 0, (s_pos - hardest_neg) / np.where(span > 0, span, 1.0), 0.0)
    return np.where((n_pos > 0) & neg.any(axis=1), margin, np.nan)


def normalized_margins(scores: Mapping[str, Mapping[str, float]],
                       qrels: Mapping[str, Mapping[str, int]], *,
                       positive: PositiveRule = "max") -> Margins:
    """Per-query normalized margin of a score table (a run) against qrels.

    ``scores`` is ``{qid: {doc_id: score}}`` over each query's candidates (e.g. BM25 top-100
    re-scored by a model); relevance is ``qrels[qid][doc_id] > 0`` and every other scored candidate,
    judged or not, is a negative. ``s_+`` is, by default, the best-scored positive (``positive="max"``:
    with several positives, the query counts as well separated when *one* relevant document clears
    the hardest negative, the view that matters for MRR); ``"mean"`` and ``"min"`` use the mean or the
    worst-scored positive instead. Queries with no positive or no negative among the scored
    candidates are skipped and listed in ``result.skipped``; the count is logged.

    >>> m = normalized_margins({"q1": {"p": 3, "n1": 1, "n2": 2, "n3": 0}, "q2": {"x": 1}},
    ...                        {"q1": {"p": 1}})
    >>> round(m["q1"], 4), m.skipped
    (0.3333, {'q2': 'no positive'})
    """
    _check_rule(positive)
    qids: list[str] = []
    rows: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    for qid, cands in scores.items():
        rel = qrels.get(qid, {})
        if not cands:
            skipped[qid] = "no candidates"
            continue
        lab = np.fromiter((rel.get(d, 0) > 0 for d in cands), dtype=bool, count=len(cands))
        if not lab.any():
            skipped[qid] = "no positive"
            continue
        if lab.all():
            skipped[qid] = "no negative"
            continue
        vals = np.fromiter(cands.values(), dtype=float, count=len(cands))
        if not np.isfinite(vals).all():
            raise ValueError(f"query {qid!r} has non-finite scores; margins need finite scores")
        qids.append(qid)
        rows.append(vals)
        masks.append(lab)
    out = Margins(skipped=skipped)
    if qids:
        width = max(len(r) for r in rows)
        mat = np.full((len(rows), width), np.nan)
        lab_mat = np.zeros((len(rows), width), dtype=bool)
        for i, (r, m) in enumerate(zip(rows, masks)):
            mat[i, : len(r)] = r
            lab_mat[i, : len(m)] = m
        out.update(zip(qids, normalized_margins_array(mat, lab_mat, positive=positive).tolist()))
    if skipped:
        s = out.summary()
        logger.info("normalized margins: %d queries measured, %d skipped (%d no positive, %d no negative, "
                    "%d no candidates)", len(out), s["skipped"], s["skipped_no_positive"],
                    s["skipped_no_negative"], s["skipped_no_candidates"])
    if not out and scores:
        logger.warning("normalized margins: every query was skipped; do the score table and qrels share ids?")
    return out

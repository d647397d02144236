"""Ranking metrics with trec_eval semantics, checked against pytrec_eval.

Metric names are parsed once (``"ndcg@10"``, ``"mrr@10"``, ``"recall@100"``, ``"precision@10"``,
``"map@10"``, ``"map"``, ``"ndcg"``, ``"r-precision"``; case-insensitive) and every per-query value is
kept, so runs can be compared query by query (:mod:`dualist.evaluation.significance`).

The rules, each one what ``trec_eval`` 9 (and therefore pytrec_eval and BEIR) does:

* **Ranking.** Documents are sorted by score, descending; **ties are broken by document id,
  descending** (plain string comparison, so ``"9" > "100" > "10"``). The scores' order in the run
  and the documents' insertion order play no part.
* **Which queries count.** A query is evaluated when it is in the run (even with an empty ranking)
  and has at least one judgment in the qrels. Queries of the run without judgments are ignored.
  Queries of the qrels that the run lacks are ignored too (``missing="ignore"``, what pytrec_eval
  and BEIR do) or scored 0 on every metric (``missing="zero"``, like ``trec_eval -c``). A judged
  query with no *relevant* document is evaluated and scores 0.
* **Relevance.** For the binary metrics (MRR, recall, precision, MAP, R-precision) a document is
  relevant when its qrel score is ``>= relevance_level``; unjudged documents are not relevant.
* **nDCG** uses linear gains (gain = qrel score, negative scores count as 0, ``relevance_level``
  is not used) and the ``1 / log2(rank + 1)`` discount; the ideal ranking sorts every judged
  document by gain and is cut at the same depth. A query whose ideal DCG is 0 scores 0.
* **Cutoffs.** ``precision@k`` divides by ``k`` even when fewer than ``k`` documents were retrieved;
  ``recall@k`` and ``map@k`` divide by the query's number of relevant documents. Without a cutoff,
  ``precision`` is relevant-retrieved / retrieved and the others use the whole ranking.
  ``mrr@k`` is the reciprocal rank of the first relevant document within the top ``k`` (trec_eval's
  ``recip_rank`` has no cutoff; ``mrr`` without ``@k`` is that).

>>> qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
>>> run = {"q1": {"d1": 0.2, "d2": 0.9}, "q2": {"d3": 1.0, "d4": 0.5}}
>>> res = evaluate(qrels, run, ["MRR@10", "recall@1"])
>>> res.mean
{'mrr@10': 0.75, 'recall@1': 0.5}
>>> res.per_query["mrr@10"]
{'q1': 0.5, 'q2': 1.0}
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from dualist.errors import ConfigError, DataError

__all__ = [
    "evaluate",
    "EvalResult",
    "QueryMetrics",
    "Metric",
    "parse_metric",
    "rank_documents",
    "DEFAULT_METRICS",
    "SUPPORTED_METRICS",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100")

# canonical kind -> accepted spellings (lower-case)
_KINDS: dict[str, tuple[str, ...]] = {
    "ndcg": ("ndcg",),
    "mrr": ("mrr", "rr"),
    "recall": ("recall", "r"),
    "precision": ("precision", "p"),
    "map": ("map", "ap"),
    "r-precision": ("r-precision", "rprec", "r_precision"),
}
_SPELLINGS = {alias: kind for kind, aliases in _KINDS.items() for alias in aliases}
_TAKES_NO_CUTOFF = {"r-precision"}
SUPPORTED_METRICS = ("ndcg@k", "ndcg", "mrr@k", "mrr", "recall@k", "recall", "precision@k",
                     "precision", "map@k", "map", "r-precision")

_NAME_RE = re.compile(r"^\s*([a-z_\-]+)\s*(?:@\s*(\S+))?\s*$")
_BATCH = 1024  # queries per vectorized block: bounds memory at ~ _BATCH x depth x 8 bytes


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: its kind and optional cutoff ``k`` (``None`` = the whole ranking).

    >>> parse_metric("NDCG@10")
    Metric(kind='ndcg', k=10)
    >>> parse_metric("P@5").name
    'precision@5'
    """

    kind: str
    k: int | None = None

    @property
    def name(self) -> str:
        """The canonical name, used as the key of :class:`EvalResult`."""
        return self.kind if self.k is None else f"{self.kind}@{self.k}"


def parse_metric(name: str | Metric) -> Metric:
    """Parse ``"kind@k"`` or ``"kind"``; raise :class:`ConfigError` (a ``ValueError``) if unknown."""
    if isinstance(name, Metric):
        return name
    m = _NAME_RE.match(str(name).lower())
    kind = _SPELLINGS.get(m.group(1)) if m else None
    if kind is None:
        raise ConfigError(f"unknown metric {name!r}; supported: {', '.join(SUPPORTED_METRICS)} "
                          "(k a positive integer, names case-insensitive)")
    cutoff = m.group(2)
    if cutoff is None:
        return Metric(kind)
    if kind in _TAKES_NO_CUTOFF:
        raise ConfigError(f"metric {name!r}: {kind} takes no cutoff (its depth is the number of "
                          "relevant documents)")
    if not cutoff.isdigit() or int(cutoff) < 1:
        raise ConfigError(f"metric {name!r}: the cutoff must be a positive integer, got {cutoff!r}")
    return Metric(kind, int(cutoff))


class QueryMetrics(dict):
    """``{metric: mean}``, a plain dict to every reader, that also holds each query's values in
    ``per_query[metric][qid]``.

    :func:`dualist.stages.dev_eval_fn` returns one, so that the training loop can test a checkpoint's
    dev gain query by query before it replaces the kept one (``TrainConfig.select_alpha``).

    >>> m = QueryMetrics({"ndcg@10": 0.5}, {"ndcg@10": {"q1": 0.25, "q2": 0.75}})
    >>> m == {"ndcg@10": 0.5}, m.per_query["ndcg@10"]["q2"]
    (True, 0.75)
    """

    def __init__(self, mean: Mapping[str, float], per_query: Mapping[str, Mapping[str, float]]):
        super().__init__(mean)
        self.per_query = {m: dict(v) for m, v in per_query.items()}

    @classmethod
    def of(cls, result: EvalResult) -> QueryMetrics:
        return cls(result.mean, result.per_query)


@dataclass
class EvalResult:
    """Mean and per-query values of each metric, keyed by canonical metric name.

    ``per_query[metric][qid]`` holds one query's value; ``mean[metric]`` their average over the
    ``num_queries`` evaluated queries (``nan`` when no query could be evaluated).
    """

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    num_queries: int

    @property
    def metrics(self) -> list[str]:
        return list(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reads it back."""
        return {"num_queries": self.num_queries, "mean": dict(self.mean),
                "per_query": {m: dict(v) for m, v in self.per_query.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        return cls(mean={k: float(v) for k, v in data["mean"].items()},
                   per_query={m: {q: float(x) for q, x in v.items()} for m, v in data["per_query"].items()},
                   num_queries=int(data["num_queries"]))

    def to_table(self, digits: int = 4) -> str:
        """A small aligned two-column table of the means.

        >>> print(EvalResult({"ndcg@10": 0.5, "recall@100": 1.0}, {}, 2).to_table())
        metric      value
        ndcg@10    0.5000
        recall@100 1.0000
        (2 queries)
        """
        width = max([len("metric"), *map(len, self.mean)])
        cells = [f"{v:.{digits}f}" for v in self.mean.values()]
        vwidth = max([len("value"), *map(len, cells)])
        lines = [f"{'metric':<{width}} {'value':>{vwidth}}"]
        lines += [f"{m:<{width}} {c:>{vwidth}}" for m, c in zip(self.mean, cells)]
        lines.append(f"({self.num_queries} quer{'y' if self.num_queries == 1 else 'ies'})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def rank_documents(docs: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, ties by document id descending.

    >>> rank_documents({"a": 1.0, "b": 2.0, "c": 1.0, "10": 1.0, "9": 1.0})
    ['b', 'c', 'a', '9', '10']
    """
    if not docs:
        return []
    ids, _, order = _order(docs)
    return [ids[i] for i in order]


def _order(docs: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = list(docs)
    scores = np.fromiter(docs.values(), dtype=np.float64, count=len(ids))
    if np.isnan(scores).any():
        bad = ids[int(np.flatnonzero(np.isnan(scores))[0])]
        raise DataError(f"run score of document {bad!r} is NaN", hint="a NaN has no rank; drop or fix it")
    # Ascending by (score, id) then reversed = descending score, ties by descending id (trec_eval).
    order = np.lexsort((np.asarray(ids), scores))[::-1]
    return ids, scores, order


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Iterable[str | Metric] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = False,
    relevance_level: int = 1,
    missing: Literal["ignore", "zero"] = "ignore",
) -> EvalResult:
    """Evaluate ``run`` against ``qrels`` with trec_eval semantics (see the module docstring).

    Args:
        qrels: ``{qid: {doc_id: graded relevance}}``.
        run: ``{qid: {doc_id: score}}``; higher scores rank first.
        metrics: names such as ``"ndcg@10"``; see :data:`SUPPORTED_METRICS`.
        ignore_identical_ids: drop run entries whose doc id equals the query id before ranking
            (BEIR's convention for ArguAna/Quora, where a query is also a document).
        relevance_level: minimum qrel score counted as relevant by the binary metrics.
        missing: what a judged query absent from the run gets: ``"ignore"`` (skip it, as
            pytrec_eval/BEIR do) or ``"zero"`` (count it with 0 on every metric).

    >>> evaluate({"q": {"a": 2, "b": 1}}, {"q": {"a": 0.1, "b": 0.9, "c": 0.5}}, ["ndcg@2"]).mean
    {'ndcg@2': 0.38009376671593426}
    """
    parsed: list[Metric] = []
    for name in [metrics] if isinstance(metrics, (str, Metric)) else metrics:
        m = parse_metric(name)
        if m not in parsed:
            parsed.append(m)
    if not parsed:
        raise ConfigError("no metric given")
    if missing not in ("ignore", "zero"):
        raise ConfigError(f"missing must be 'ignore' or 'zero', got {missing!r}")

    judged = [q for q, j in qrels.items() if j]
    qids = judged if missing == "zero" else [q for q in judged if q in run]
    n_absent = sum(1 for q in judged if q not in run)
    if n_absent:
        logger.info("%d of %d judged queries are not in the run (%s)", n_absent, len(judged),
                    "scored 0" if missing == "zero" else "ignored")
    if not qids:
        logger.warning("no query is both judged and in the run: every mean is nan")

    # Depth of ranking each metric needs; None = all of it.
    depth: int | None = 0
    for m in parsed:
        if m.k is None or depth is None:
            depth = None
        else:
            depth = max(depth, m.k)

    per_query: dict[str, dict[str, float]] = {m.name: {} for m in parsed}
    for start in range(0, len(qids), _BATCH):
        batch = qids[start:start + _BATCH]
        values = _evaluate_batch(qrels, run, batch, parsed, depth, ignore_identical_ids, relevance_level)
        for m in parsed:
            per_query[m.name].update(zip(batch, values[m.name].tolist()))

    mean = {name: (math.fsum(v.values()) / len(v) if v else math.nan) for name, v in per_query.items()}
    return EvalResult(mean=mean, per_query=per_query, num_queries=len(qids))


def _evaluate_batch(qrels, run, qids, metrics, depth, ignore_identical_ids, level) -> dict[str, np.ndarray]:
    """Vectorized metrics over a block of queries: rankings padded into (B, L) matrices."""
    rows_levels: list[np.ndarray] = []
    num_ret = np.zeros(len(qids))
    num_rel = np.zeros(len(qids))
    ideal: list[np.ndarray] = []
    for i, q in enumerate(qids):
        judgments = qrels[q]
        docs = run.get(q, {})
        if ignore_identical_ids and q in docs:
            docs = {d: s for d, s in docs.items() if d != q}
        num_ret[i] = len(docs)
        if docs:
            ids, _, order = _order(docs)
            if depth is not None:
                order = order[:depth]
            # qrel level of each ranked document; unjudged = -inf, which is never relevant.
            lv = np.fromiter((judgments.get(ids[j], -np.inf) for j in order), dtype=np.float64,
                             count=len(order))
        else:
            lv = np.empty(0)
        rows_levels.append(lv)
        jl = np.fromiter(judgments.values(), dtype=np.float64, count=len(judgments))
        num_rel[i] = np.count_nonzero(jl >= level)
        ideal.append(-np.sort(-jl[jl > 0]))

    B = len(qids)
    L = max((len(r) for r in rows_levels), default=0)
    levels = np.full((B, L), -np.inf)
    for i, r in enumerate(rows_levels):
        levels[i, : len(r)] = r
    gains = np.maximum(levels, 0.0)
    rel = levels >= level
    Li = max((len(r) for r in ideal), default=0)
    ideal_gains = np.zeros((B, Li))
    for i, r in enumerate(ideal):
        ideal_gains[i, : len(r)] = r

    ranks = np.arange(1, max(L, Li) + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    hits_cum = np.cumsum(rel, axis=1)  # relevant documents in the top r, for r = 1..L
    safe_rel = np.maximum(num_rel, 1)

    out: dict[str, np.ndarray] = {}
    for m in metrics:
        kk = L if m.k is None else min(m.k, L)
        hits = hits_cum[:, kk - 1] if kk > 0 else np.zeros(B)
        if m.kind == "ndcg":
            dcg = gains[:, :kk] @ discount[:kk]
            ki = Li if m.k is None else min(m.k, Li)
            idcg = ideal_gains[:, :ki] @ discount[:ki]
            val = np.divide(dcg, idcg, out=np.zeros(B), where=idcg > 0)
        elif m.kind == "mrr":
            r = rel[:, :kk]
            first = np.argmax(r, axis=1) if kk > 0 else np.zeros(B, dtype=int)
            val = np.where(r.any(axis=1) if kk > 0 else False, 1.0 / (first + 1.0), 0.0)
        elif m.kind == "recall":
            val = np.where(num_rel > 0, hits / safe_rel, 0.0)
        elif m.kind == "precision":
            if m.k is not None:
                val = hits / m.k
            else:
                val = np.divide(hits, num_ret, out=np.zeros(B), where=num_ret > 0)
        elif m.kind == "map":
            prec_at_hits = np.where(rel[:, :kk], hits_cum[:, :kk] / ranks[:kk], 0.0)
            val = np.where(num_rel > 0, prec_at_hits.sum(axis=1) / safe_rel, 0.0)
        elif m.kind == "r-precision":
            depth_r = np.minimum(num_rel, L).astype(int)
            val = np.zeros(B)
            ok = depth_r > 0
            val[ok] = hits_cum[np.flatnonzero(ok), depth_r[ok] - 1] / num_rel[ok]
        else:  # pragma: no cover - parse_metric admits only the kinds above
            raise AssertionError(m.kind)
        out[m.name] = np.asarray(val, dtype=np.float64)
    return out

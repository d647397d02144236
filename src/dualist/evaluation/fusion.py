"""Rank fusion of runs (hybrid search): reciprocal rank fusion and a normalized-score sum.

Both take runs ``{qid: {doc_id: score}}`` (e.g. BM25 and a dual-encoder's) and return one run:

* :func:`rrf` — reciprocal rank fusion (Cormack et al., SIGIR 2009):
  ``score(d) = Σ_r w_r / (k + rank_r(d))``, ``rank`` starting at 1, a run that misses ``d`` adding 0.
  Only ranks count, so the runs' score scales do not matter.
* :func:`score_sum` — each run's scores min-max normalized per query to ``[0, 1]``, then
  ``score(d) = Σ_r w_r · norm_r(d)`` (CombSUM; a run that misses ``d`` adds 0).

Ranks follow trec_eval's order (score descending, ties by document id descending), the same order
every dualist run is evaluated in. The formulas are ranx's ``fuse(method="rrf")`` and
``fuse(norm="min-max", method="wsum")`` and the results equal ranx's on the same runs (tested when
ranx is installed). ranx itself is not a dependency: it brings numba, llvmlite, ir_datasets,
seaborn and fastparquet, and compiles its kernels on first use, for two formulas of a few lines.

>>> bm25 = {"q1": {"a": 12.0, "b": 7.0}}
>>> dense = {"q1": {"b": 0.9, "c": 0.8}}
>>> rrf([bm25, dense], k=60)["q1"]  # b is 2nd and 1st: 1/62 + 1/61
{'b': 0.03252247488101534, 'a': 0.01639344262295082, 'c': 0.016129032258064516}
>>> score_sum([bm25, dense])["q1"]
{'b': 1.0, 'a': 1.0, 'c': 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from dualist.errors import ConfigError

__all__ = ["rrf", "score_sum", "fuse", "FUSION_METHODS", "FusionMethod"]

Run = Mapping[str, Mapping[str, float]]
FusionMethod = Literal["rrf", "sum"]

_MIN_RANGE = 1e-9  # ranx's floor on (max - min): a query whose scores all tie normalizes to 0


def _weights(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float]:
    if not runs:
        raise ConfigError("fusion needs at least one run")
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ConfigError(f"{len(weights)} weights for {len(runs)} runs")
    return [float(w) for w in weights]


def _query_ids(runs: Sequence[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(run))
    return list(seen)


def _sorted(scores: dict[str, float]) -> dict[str, float]:
    from dualist.evaluation.metrics import rank_documents

    return {d: scores[d] for d in rank_documents(scores)}


def rrf(runs: Sequence[Run], k: float = 60, weights: Sequence[float] | None = None) -> dict[str, dict[str, float]]:
    """Reciprocal rank fusion: ``Σ_r w_r / (k + rank_r(d))``; each query's documents best first."""
    from dualist.evaluation.metrics import rank_documents

    if k < 0:
        raise ConfigError(f"rrf k must be >= 0, got {k}")
    w = _weights(runs, weights)
    out: dict[str, dict[str, float]] = {}
    for qid in _query_ids(runs):
        acc: dict[str, float] = {}
        for run, wr in zip(runs, w):
            for rank, d in enumerate(rank_documents(run.get(qid, {})), start=1):
                acc[d] = acc.get(d, 0.0) + wr / (k + rank)
        out[qid] = _sorted(acc)
    return out


def score_sum(runs: Sequence[Run], weights: Sequence[float] | None = None) -> dict[str, dict[str, float]]:
    """Weighted sum of per-query min-max normalized scores; each query's documents best first."""
    w = _weights(runs, weights)
    out: dict[str, dict[str, float]] = {}
    for qid in _query_ids(runs):
        acc: dict[str, float] = {}
        for run, wr in zip(runs, w):
            docs = run.get(qid, {})
            if not docs:
                continue
            lo, hi = min(docs.values()), max(docs.values())
            span = max(hi - lo, _MIN_RANGE)
            for d, s in docs.items():
                acc[d] = acc.get(d, 0.0) + wr * (s - lo) / span
        out[qid] = _sorted(acc)
    return out


def fuse(runs: Sequence[Run], method: FusionMethod = "rrf", *, weights: Sequence[float] | None = None,
         rrf_k: float = 60, k: int | None = None) -> dict[str, dict[str, float]]:
    """Fuse ``runs`` with ``method`` (``"rrf"`` or ``"sum"``); keep each query's best ``k`` when given."""
    if method == "rrf":
        fused = rrf(runs, k=rrf_k, weights=weights)
    elif method == "sum":
        fused = score_sum(runs, weights=weights)
    else:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {sorted(FUSION_METHODS)}")
    if k is not None:
        fused = {q: dict(list(docs.items())[:k]) for q, docs in fused.items()}
    return fused


FUSION_METHODS = {"rrf": rrf, "sum": score_sum}

"""Evaluation: trec_eval-compatible ranking metrics and paired significance tests (docs/architecture.md §4).

>>> from dualist.evaluation import evaluate
>>> print(evaluate({"q1": {"d1": 1}}, {"q1": {"d1": 0.3, "d2": 0.9}}, ["mrr@10", "ndcg@10"]))
metric   value
mrr@10  0.5000
ndcg@10 0.6309
(1 query)
"""

from __future__ import annotations

from .metrics import (DEFAULT_METRICS, SUPPORTED_METRICS, EvalResult, Metric, QueryMetrics, evaluate, parse_metric,
                      rank_documents)
from .hubness import Hubness, hubness
from .significance import Comparison, ComparisonRow, PairedTestResult, compare, paired_test

__all__ = [
    "evaluate",
    "EvalResult",
    "QueryMetrics",
    "Metric",
    "parse_metric",
    "rank_documents",
    "DEFAULT_METRICS",
    "SUPPORTED_METRICS",
    "paired_test",
    "PairedTestResult",
    "compare",
    "Comparison",
    "ComparisonRow",
    "hubness",
    "Hubness",
]

from .modes import encode_corpus, hybrid, index_corpus, rerank, retrieve, top_k  # noqa: E402  (needs the metrics above)
from .fusion import fuse, rrf, score_sum  # noqa: E402

__all__ += ["rerank", "retrieve", "hybrid", "top_k", "encode_corpus", "index_corpus", "fuse", "rrf", "score_sum"]

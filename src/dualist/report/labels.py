"""Ids and display labels of the models and figures that reports and the reproduction matrix name.

Identity is structured: a model has an id (``bm25``, ``zeroshot``, ``teacher`` or a loss name from
:data:`dualist.losses.LOSSES`) and a figure has an id (``rerank.ndcg@10``...). Their display labels
(``DE + M3SE``, ``re-rank nDCG@10``) are derived here, and only here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualist.losses import LOSS_LABELS

__all__ = ["MODEL_LABELS", "METRICS", "COUNT_FIGURES", "TABLE_METRICS", "Metric", "model_label", "metric_label",
           "metric_by_id", "figure_label", "is_count"]

MODEL_LABELS: dict[str, str] = {"bm25": "BM25", "zeroshot": "DE zero-shot", "teacher": "CA teacher", **LOSS_LABELS}
"""Model id -> its label in tables: the baselines, then one dual-encoder student per loss."""


@dataclass(frozen=True)
class Metric:
    """A figure of the results table: ``metric`` of evaluation ``section`` (see the evaluation stage)."""

    id: str
    section: str
    metric: str
    label: str


METRICS: tuple[Metric, ...] = (
    Metric("rerank.mrr@10", "rerank_test", "mrr@10", "re-rank MRR@10"),
    Metric("rerank.ndcg@10", "rerank_test", "ndcg@10", "re-rank nDCG@10"),
    Metric("retrieval.ndcg@10", "retrieval_test", "ndcg@10", "retrieval nDCG@10"),
    Metric("retrieval.recall@100", "retrieval_test", "recall@100", "retrieval R@100"),
    Metric("hybrid.ndcg@10", "hybrid_test", "ndcg@10", "hybrid nDCG@10"),
    Metric("hybrid.recall@100", "hybrid_test", "recall@100", "hybrid R@100"),
    Metric("dev.ndcg@10", "rerank_dev", "ndcg@10", "dev nDCG@10"),
)
"""The results table's figures, in column order (test figures, then the dev figure that picks models).
``hybrid`` is a dual-encoder's retrieval run fused with BM25's by reciprocal rank fusion
(:data:`dualist.stages.evaluation.HYBRID`)."""

COUNT_FIGURES: dict[str, str] = {"retrieval.distinct@10": "top-10 distinct docs"}
"""Figures that are counts, not scores: id -> label. ``retrieval.distinct@10`` is how many distinct documents
the test queries' top-10 retrieval lists hold together (hubness, :mod:`dualist.evaluation.hubness`)."""

TABLE_METRICS: tuple[str, ...] = ("rerank.mrr@10", "rerank.ndcg@10", "retrieval.ndcg@10", "retrieval.recall@100",
                                  "hybrid.ndcg@10", "retrieval.distinct@10")
"""The figures the README's results table and the reproduction matrix keep (test split only): the scores,
the hybrid (BM25 + DE) nDCG@10, and the distinct top-10 documents that the hubness target compares."""

_BY_ID = {m.id: m for m in METRICS}


def model_label(model_id: str) -> str:
    return MODEL_LABELS[model_id]


def metric_label(metric_id: str) -> str:
    return metric_by_id(metric_id).label


def figure_label(figure_id: str) -> str:
    """The label of any figure the matrix keeps: a metric of :data:`METRICS` or a count of :data:`COUNT_FIGURES`."""
    return COUNT_FIGURES[figure_id] if figure_id in COUNT_FIGURES else metric_label(figure_id)


def is_count(figure_id: str) -> bool:
    return figure_id in COUNT_FIGURES


def metric_by_id(metric_id: str) -> Metric:
    try:
        return _BY_ID[metric_id]
    except KeyError:
        raise ValueError(f"unknown figure {metric_id!r}; known: {sorted(_BY_ID)}") from None

"""The comparison a reproduction reports: one row per model, the paired test, the best model on dev.

Models and metrics are named by id (:mod:`dualist.report.labels`); display labels appear only in the
rows handed to tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dualist.losses import LOSS_LABELS, requires_teacher
from dualist.report.claims import Claim, paper_claims
from dualist.report.targets import recipe_targets
from dualist.report.labels import COUNT_FIGURES, METRICS, Metric, metric_by_id, model_label

__all__ = ["ModelResults", "Summary", "summarize", "table_columns", "HUBNESS_COLUMNS"]

HUBNESS_COLUMNS: dict[str, str] = {COUNT_FIGURES["retrieval.distinct@10"]: "distinct",
                                   "top-10 max occurrence": "max_occurrence"}
"""Column label -> figure of an evaluation's ``hubness_test`` (retrieval hubness, :mod:`dualist.evaluation.hubness`).
The distinct-documents label is the matrix's (:data:`dualist.report.labels.COUNT_FIGURES`), so a row's column is
the figure ``dualist repro --record`` keeps."""

@dataclass(frozen=True)
class ModelResults:
    """One model's evaluations (one per training seed) and where its training probes are."""

    id: str
    kind: Literal["bm25", "cross_encoder", "dual_encoder"]
    evaluations: tuple[Mapping[str, Any], ...]
    probes: Path | None = None  # the first seed's probes.jsonl, for the score-evolution plot

    @property
    def label(self) -> str:
        return model_label(self.id)

    @property
    def distilled(self) -> bool:
        return self.id in LOSS_LABELS and requires_teacher(self.id)

    def figures(self, metric_id: str) -> list[float] | None:
        """The figure of each seed, or None when the model has no such evaluation (a teacher's retrieval)."""
        m = metric_by_id(metric_id)
        if not all(m.section in e for e in self.evaluations):
            return None
        return [float(e[m.section]["mean"][m.metric]) for e in self.evaluations]

    def mean(self, metric_id: str) -> float | None:
        values = self.figures(metric_id)
        return None if values is None else float(np.mean(values))

    def hubness(self, figure: str) -> int | float | None:
        """A hubness figure of the test retrieval runs, averaged over the seeds (None: no retrieval run).

        The counts (``distinct``, ``max_occurrence``) are documents and lists, so their mean over the
        seeds is rounded to a whole count; other figures (``skewness``) stay floats."""
        hub = [e["hubness_test"] for e in self.evaluations if "hubness_test" in e]
        if not hub:
            return None
        mean = float(np.mean([h[figure] for h in hub]))
        return round(mean) if all(isinstance(h[figure], int) for h in hub) else mean

    def per_query(self, section: str, metric: str) -> dict[str, float]:
        """Each query's value, averaged over the seeds (the queries every seed evaluated)."""
        per = [e[section]["per_query"][metric] for e in self.evaluations]
        qids = sorted(set.intersection(*(set(p) for p in per)))
        return {q: float(np.mean([p[q] for p in per])) for q in qids}


@dataclass(frozen=True)
class Summary:
    """What the report and ``results.json`` say: the table, the paired test, the best model, the claims."""

    models: tuple[ModelResults, ...]
    seeds: int
    comparison: Any  # dualist.evaluation.Comparison vs the one-hot DE, or None without one
    best_on_dev: str | None  # id of the distilled student with the best dev figure
    claims: tuple[Claim, ...]
    targets: tuple[Claim, ...] = ()  # the recipe's targets (dualist.report.targets)
    versus_start: tuple[dict[str, Any], ...] = ()  # each trained model against the zero-shot DE

    def model(self, model_id: str) -> ModelResults:
        return next(m for m in self.models if m.id == model_id)

    def table(self) -> dict[str, dict[str, float | None]]:
        """Model id -> metric id -> mean over seeds."""
        return {m.id: {metric.id: m.mean(metric.id) for metric in METRICS} for m in self.models}

    def rows(self) -> list[dict[str, Any]]:
        """Rows keyed by display labels (``model``, ``re-rank nDCG@10``, ``... std`` with several seeds)."""
        rows = []
        for m in self.models:
            row: dict[str, Any] = {"id": m.id, "model": m.label}
            for metric in METRICS:
                values = m.figures(metric.id)
                row[metric.label] = None if values is None else float(np.mean(values))
                if values is not None and len(values) > 1:
                    row[metric.label + " std"] = float(np.std(values, ddof=1))
            for label, figure in HUBNESS_COLUMNS.items():
                row[label] = m.hubness(figure)
            rows.append(row)
        return rows

    def columns(self) -> list[str]:
        return table_columns(self.seeds)

    def significance(self) -> dict[str, dict[str, float]]:
        """Label -> mean difference and p-value against the one-hot DE (``results.json``'s form)."""
        if self.comparison is None:
            return {}
        return {model_label(r.name): {"mean_diff": r.delta, "statistic": r.delta, "p_value": r.p_value}
                for r in self.comparison.rows if r.p_value is not None}


def table_columns(seeds: int) -> list[str]:
    """The results table's columns: the model, then each figure (and its std over seeds when there are several),
    then the retrieval hubness figures."""
    labels = [m.label for m in METRICS]
    if seeds > 1:  # mean ± std over seeds: the std sits in the column right after its mean
        labels = [c for label in labels for c in (label, label + " std")]
    return ["model", *labels, *HUBNESS_COLUMNS]


def summarize(models: Sequence[ModelResults], *, seeds: int, baseline: str = "onehot",
              metric: Metric = METRICS[1]) -> Summary:
    """The summary of evaluated ``models``: each distilled student compared with ``baseline`` on
    ``metric``'s per-query values (paired permutation test, the seeds averaged per query), the best
    distilled student chosen on dev (never on test), and the paper's claims checked on the figures."""
    models = tuple(models)
    comparison = _compare(models, baseline, metric)
    distilled = [m for m in models if m.distilled]
    best = max(distilled, key=lambda m: m.mean("dev.ndcg@10")).id if distilled else None
    partial = Summary(models, seeds, comparison, best, ())
    table = partial.table()
    start = _versus_start(models)
    distinct = {m.id: m.hubness("distinct") for m in models}
    return Summary(models, seeds, comparison, best, tuple(paper_claims(table, comparison, best, seeds)),
                   tuple(recipe_targets(table, comparison, start, distinct)), tuple(start))


def _versus_start(models: tuple[ModelResults, ...]) -> list[dict[str, Any]]:
    """Each trained model (teacher and students) against the zero-shot DE, on re-rank and retrieval
    nDCG@10 (the teacher on re-rank only): mean difference and paired permutation p-value."""
    from dualist.evaluation import EvalResult, compare

    ids = {m.id: m for m in models}
    if "zeroshot" not in ids:
        return []
    out = []
    for metric_id in ("rerank.ndcg@10", "retrieval.ndcg@10"):
        m = metric_by_id(metric_id)
        trained = [x for x in models if x.id not in ("zeroshot", "bm25") and x.figures(metric_id) is not None]
        if not trained or ids["zeroshot"].figures(metric_id) is None:
            continue
        per = {x.id: x.per_query(m.section, m.metric) for x in (ids["zeroshot"], *trained)}
        common = sorted(set.intersection(*(set(p) for p in per.values())))
        results = {k: EvalResult({m.metric: float(np.mean([v[q] for q in common]))},
                                 {m.metric: {q: v[q] for q in common}}, len(common)) for k, v in per.items()}
        comparison = compare(results, "zeroshot", m.metric, method="permutation", n_resamples=10_000, seed=0)
        out += [{"model": r.name, "metric": metric_id, "delta": r.delta, "p_value": r.p_value}
                for r in comparison.rows if r.p_value is not None]
    return out


def _compare(models: tuple[ModelResults, ...], baseline: str, metric: Metric) -> Any:
    from dualist.evaluation import EvalResult, compare

    ids = [m.id for m in models]
    if baseline not in ids:
        return None
    compared = [m for m in models if m.id == baseline or m.distilled]
    per = {m.id: m.per_query(metric.section, metric.metric) for m in compared}
    common = sorted(set.intersection(*(set(p) for p in per.values())))
    results = {}
    for model_id, values in per.items():
        kept = {q: values[q] for q in common}
        results[model_id] = EvalResult({metric.metric: float(np.mean(list(kept.values())))},
                                       {metric.metric: kept}, len(kept))
    return compare(results, baseline, metric.metric, method="permutation", n_resamples=10_000, seed=0)

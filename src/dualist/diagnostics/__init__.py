"""Diagnostics: *why* a dual-encoder ranks worse than its cross-attention teacher (docs/architecture.md §5).

Pure functions over score tables (``{qid: {doc_id: score}}``), qrels and arrays:

- :func:`normalized_margins`: per-query, scale-free margin between the positive and the hardest
  negative (and :func:`normalized_margins_array` for a ``(B, C)`` batch);
- :func:`score_distributions`: positives vs negatives, optionally standardized per query;
- :func:`train_test_gap` / :func:`gap_table`: the overfitting evidence;
- :func:`score_evolution`, :func:`select_probe_docs`, :func:`pick_probe_query`, :func:`read_probes`:
  a fixed query's scores across training;
- :func:`label_agreement`: how far a teacher's scores of training candidates agree with the labels;
- :func:`describe`: mean, median, p10, p90, n.

Plots and the HTML/Markdown report live in :mod:`dualist.report`.
"""

from __future__ import annotations

from dualist.diagnostics.agreement import LabelAgreement, label_agreement
from dualist.diagnostics.distributions import ScoreDistributions, Standardize, score_distributions
from dualist.diagnostics.evolution import (
    EvolutionTable,
    ProbeDocs,
    pick_probe_query,
    read_probes,
    score_evolution,
    select_probe_docs,
)
from dualist.diagnostics.gap import gap_table, train_test_gap
from dualist.diagnostics.margins import Margins, PositiveRule, normalized_margins, normalized_margins_array
from dualist.diagnostics.stats import describe

__all__ = [
    "normalized_margins",
    "normalized_margins_array",
    "Margins",
    "PositiveRule",
    "score_distributions",
    "ScoreDistributions",
    "Standardize",
    "train_test_gap",
    "gap_table",
    "score_evolution",
    "EvolutionTable",
    "read_probes",
    "select_probe_docs",
    "pick_probe_query",
    "ProbeDocs",
    "label_agreement",
    "LabelAgreement",
    "describe",
]

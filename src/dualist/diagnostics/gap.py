"""Train-vs-test metric gaps: the paper's evidence that DEs overfit more than CAs (docs/architecture.md §5)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["train_test_gap", "gap_table"]

logger = logging.getLogger(__name__)


def train_test_gap(train_result: Mapping[str, float], test_result: Mapping[str, float]) -> dict[str, float]:
    """``train - test`` for every metric present in both results (train's order).

    A metric present in only one result is left out and logged; no shared metric is an error.

    >>> gap = train_test_gap({"ndcg@10": 0.9, "mrr@10": 0.8}, {"ndcg@10": 0.6, "mrr@10": 0.5})
    >>> {k: round(v, 3) for k, v in gap.items()}
    {'ndcg@10': 0.3, 'mrr@10': 0.3}
    """
    common = [m for m in train_result if m in test_result]
    if not common:
        raise ValueError(f"train and test results share no metric: {sorted(train_result)} vs {sorted(test_result)}")
    unmatched = sorted(set(train_result).symmetric_difference(test_result))
    if unmatched:
        logger.warning("train/test gap: metrics in only one result are left out: %s", unmatched)
    return {m: float(train_result[m]) - float(test_result[m]) for m in common}


def gap_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, *,
              train_split: str = "train", test_split: str = "test") -> dict[str, dict[str, float]]:
    """One metric's train value, test value and gap for several models.

    ``results`` is ``{model: {split: {metric: value}}}``; the answer is
    ``{model: {train_split: x, test_split: y, "gap": x - y}}``, which :func:`dualist.report.plot_gap`
    draws and :func:`dualist.report.markdown_table` prints (``[{"model": m, **v} for m, v in ...]``).

    >>> t = gap_table({"CA": {"train": {"mrr@10": 0.5}, "test": {"mrr@10": 0.4}}}, "mrr@10")
    >>> {k: round(v, 3) for k, v in t["CA"].items()}
    {'train': 0.5, 'test': 0.4, 'gap': 0.1}
    """
    table: dict[str, dict[str, float]] = {}
    for model, by_split in results.items():
        row: dict[str, float] = {}
        for split in (train_split, test_split):
            if split not in by_split:
                raise ValueError(f"model {model!r} has no {split!r} result (has {sorted(by_split)})")
            if metric not in by_split[split]:
                raise ValueError(f"model {model!r}, split {split!r} has no metric {metric!r} "
                                 f"(has {sorted(by_split[split])})")
            row[split] = float(by_split[split][metric])
        row["gap"] = row[train_split] - row[test_split]
        table[model] = row
    return table

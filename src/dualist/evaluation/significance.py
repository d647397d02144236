"""Paired significance tests over per-query metric values, and a comparison report.

Two systems evaluated on the same queries give paired values; the question is whether their mean
difference could be chance. Two tests:

* ``"permutation"`` (default): the paired randomization test (Fisher; Smucker et al., CIKM 2007,
  recommend it for IR). Under the null hypothesis each query's difference is as likely to have
  either sign, so the p-value is the share of random sign flips whose mean difference is at least as
  large in absolute value as the observed one (two-sided). Exact enumeration when
  ``2**n <= n_resamples``, otherwise ``n_resamples`` seeded random flips with the ``(c + 1)/(R + 1)``
  correction, so a p-value is never 0.
* ``"t"``: Student's paired t-test (``scipy.stats.ttest_rel``).

>>> a = {"q1": 1.0, "q2": 0.75, "q3": 0.5}
>>> b = {"q1": 0.25, "q2": 0.5, "q3": 0.25}
>>> paired_test(a, b)  # all 8 sign flips enumerated; only the observed and its mirror are as extreme
PairedTestResult(statistic=0.4166666666666667, p_value=0.25)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from dualist.errors import ConfigError, MissingDependencyError

from .metrics import EvalResult, parse_metric

__all__ = ["paired_test", "PairedTestResult", "compare", "Comparison", "ComparisonRow"]

_FLIP_BLOCK = 1 << 22  # sign-matrix entries generated at a time


class PairedTestResult(NamedTuple):
    """``statistic``: mean difference a - b (permutation) or the t statistic; ``p_value``: two-sided."""

    statistic: float
    p_value: float


def paired_test(a: Mapping[str, float], b: Mapping[str, float], method: Literal["permutation", "t"] = "permutation",
                n_resamples: int = 10_000, seed: int = 0) -> PairedTestResult:
    """Two-sided paired test of ``mean(a - b) == 0`` over the queries of ``a`` and ``b``.

    Both must hold the same query ids (compare runs evaluated with ``missing="zero"`` if their
    query sets differ). The result depends only on the values and ``seed``, not on dict order.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"paired test needs the same queries on both sides: {len(only_a)} only in a "
                         f"(e.g. {only_a[:3]}), {len(only_b)} only in b (e.g. {only_b[:3]})")
    if not a:
        raise ValueError("paired test needs at least one query")
    qids = sorted(a)
    x = np.array([a[q] for q in qids], dtype=np.float64)
    y = np.array([b[q] for q in qids], dtype=np.float64)
    d = x - y
    if method == "t":
        return _t_test(x, y, d)
    if method != "permutation":
        raise ConfigError(f"method must be 'permutation' or 't', got {method!r}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    return _permutation_test(d, n_resamples, seed)


def _permutation_test(d: np.ndarray, n_resamples: int, seed: int) -> PairedTestResult:
    n = len(d)
    observed = float(d.mean())
    # Flipped means that differ from |observed| by rounding alone must count as "as extreme".
    threshold = abs(observed) - 1e-12 * max(1.0, float(np.abs(d).sum()) / n)
    if n < 63 and 2**n <= n_resamples:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = (1 - 2 * bits) @ d / n
        return PairedTestResult(observed, float(np.mean(np.abs(means) >= threshold)))
    rng = np.random.default_rng(seed)
    block = max(1, _FLIP_BLOCK // n)
    count, done = 0, 0
    while done < n_resamples:
        m = min(block, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        count += int(np.count_nonzero(np.abs(signs @ d / n) >= threshold))
        done += m
    return PairedTestResult(observed, (count + 1) / (n_resamples + 1))


def _t_test(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> PairedTestResult:
    if len(d) < 2:
        raise ValueError("the paired t-test needs at least two queries")
    if not d.any():
        return PairedTestResult(0.0, 1.0)
    try:
        from scipy import stats
    except ImportError as e:  # pragma: no cover - scipy is a core dependency
        raise MissingDependencyError("scipy", "paired_test(method='t')") from e
    with warnings.catch_warnings():  # constant non-zero differences: t = ±inf, p = 0, which is right
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(x, y)
    return PairedTestResult(float(res.statistic), float(res.pvalue))


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    mean: float
    delta: float  # mean - baseline mean
    p_value: float | None  # None for the baseline itself
    significant: bool


@dataclass(frozen=True)
class Comparison:
    """Each system's mean of ``metric``, its difference to ``baseline`` and the paired p-value."""

    metric: str
    baseline: str
    method: str
    alpha: float
    rows: list[ComparisonRow]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "baseline": self.baseline, "method": self.method,
                "alpha": self.alpha, "rows": [r.__dict__ for r in self.rows]}

    def to_table(self, digits: int = 4) -> str:
        """Aligned table; ``*`` marks p < alpha (no correction for multiple comparisons)."""
        head = ["system", self.metric, "delta", "p-value"]
        body = []
        for r in self.rows:
            p = "-" if r.p_value is None else f"{r.p_value:.{digits}f}" + (" *" if r.significant else "")
            delta = "-" if r.p_value is None else f"{r.delta:+.{digits}f}"
            body.append([r.name, f"{r.mean:.{digits}f}", delta, p])
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(4)]

        def fmt(row: list[str]) -> str:
            return "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])

        title = f"{self.metric}: paired {self.method} test vs {self.baseline} (* p < {self.alpha})"
        return "\n".join([title, fmt(head), *map(fmt, body)])

    def __str__(self) -> str:
        return self.to_table()


def compare(results: Mapping[str, EvalResult], baseline: str, metric: str, *,
            method: Literal["permutation", "t"] = "permutation", n_resamples: int = 10_000, seed: int = 0,
            alpha: float = 0.05) -> Comparison:
    """Compare systems on one metric with a paired test against ``baseline``.

    >>> base = EvalResult({"mrr@10": 0.5}, {"mrr@10": {"q1": 0.5, "q2": 0.5}}, 2)
    >>> new = EvalResult({"mrr@10": 0.75}, {"mrr@10": {"q1": 1.0, "q2": 0.5}}, 2)
    >>> report = compare({"bm25": base, "de": new}, baseline="bm25", metric="MRR@10")
    >>> [(r.name, r.delta, r.p_value) for r in report.rows]
    [('bm25', 0.0, None), ('de', 0.25, 1.0)]
    """
    if baseline not in results:
        raise ConfigError(f"baseline {baseline!r} is not among the results: {sorted(results)}")
    key = parse_metric(metric).name
    for name, res in results.items():
        if key not in res.per_query:
            raise ConfigError(f"{name!r} has no per-query values for {key!r} (has {sorted(res.per_query)})")
    base = results[baseline].per_query[key]
    base_mean = results[baseline].mean[key]
    rows = []
    for name, res in results.items():
        mean = res.mean[key]
        if name == baseline:
            rows.append(ComparisonRow(name, mean, 0.0, None, False))
            continue
        _, p = paired_test(res.per_query[key], base, method=method, n_resamples=n_resamples, seed=seed)
        rows.append(ComparisonRow(name, mean, mean - base_mean, p, p < alpha))
    return Comparison(metric=key, baseline=baseline, method=method, alpha=alpha, rows=rows)

"""dualist.evaluation.significance: paired tests and the comparison report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualist.errors import ConfigError
from dualist.evaluation import EvalResult, compare, evaluate, paired_test


def as_dict(values) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_exact_permutation_by_hand():
    # d = (0.5, 0.25, 0.25), observed mean 1/3. Of the 8 sign patterns only (+,+,+) and (-,-,-)
    # reach |sum| = 1.0; (+,+,-) etc. give 0.5 or 0. So p = 2/8.
    a, b = as_dict([1.0, 0.5, 0.75]), as_dict([0.5, 0.25, 0.5])
    stat, p = paired_test(a, b)
    assert stat == pytest.approx(1 / 3)
    assert p == 0.25
    # d = (0.5, 0.5, -0.5): patterns with |sum| >= 0.5 are all 8 (sums are ±0.5 or ±1.5).
    stat, p = paired_test(as_dict([1, 1, 0]), as_dict([0.5, 0.5, 0.5]))
    assert stat == pytest.approx(0.5 / 3) and p == 1.0


def test_identical_systems_are_not_different():
    a = as_dict(np.linspace(0, 1, 40))
    assert paired_test(a, dict(a)) == (0.0, 1.0)
    assert paired_test(a, dict(a), method="t") == (0.0, 1.0)


def test_random_permutation_agrees_with_t_test_on_many_queries():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 300)
    a, b = as_dict(base + rng.normal(0.02, 0.15, 300)), as_dict(base)
    _, p_perm = paired_test(a, b, n_resamples=20_000)
    t, p_t = paired_test(a, b, method="t")
    d = np.array(list(a.values())) - base
    assert t == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(len(d))))  # the paired t statistic
    assert 0.001 < p_t < 0.5
    assert p_perm == pytest.approx(p_t, abs=0.02)


def test_permutation_is_seeded_and_order_free():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=50), rng.uniform(size=50)
    a, b = as_dict(x), as_dict(y)
    p1 = paired_test(a, b, seed=3).p_value
    assert paired_test(dict(reversed(a.items())), b, seed=3).p_value == p1
    assert any(paired_test(a, b, seed=s).p_value != p1 for s in range(4, 8))
    # A large, consistent gain is never given p = 0: the smallest value is 1/(R+1).
    p = paired_test(as_dict(x + 1), b, n_resamples=999).p_value
    assert p == pytest.approx(1 / 1000)


def test_paired_test_errors():
    with pytest.raises(ValueError, match="same queries"):
        paired_test({"q1": 1.0, "q2": 0.0}, {"q1": 1.0, "q3": 0.0})
    with pytest.raises(ValueError, match="at least one"):
        paired_test({}, {})
    with pytest.raises(ValueError, match="two queries"):
        paired_test({"q1": 1.0}, {"q1": 0.0}, method="t")
    with pytest.raises(ConfigError, match="method"):
        paired_test({"q1": 1.0}, {"q1": 0.0}, method="wilcoxon")


def test_compare_report():
    qrels = {f"q{i}": {"good": 1} for i in range(30)}
    good = {q: {"good": 1.0, "bad": 0.0} for q in qrels}
    mixed = {q: ({"good": 1.0, "bad": 0.0} if i % 3 else {"good": 0.0, "bad": 1.0})
             for i, q in enumerate(qrels)}
    results = {"base": evaluate(qrels, mixed), "better": evaluate(qrels, good), "same": evaluate(qrels, mixed)}
    report = compare(results, baseline="base", metric="MRR@10")
    assert report.metric == "mrr@10"
    rows = {r.name: r for r in report.rows}
    assert rows["base"].p_value is None and rows["base"].delta == 0.0
    assert rows["better"].delta == pytest.approx(1.0 - (20 + 10 * 0.5) / 30)
    assert rows["better"].significant and rows["better"].p_value < 0.01
    assert rows["same"].p_value == 1.0 and not rows["same"].significant
    text = str(report)
    assert "better" in text and "*" in text.splitlines()[3]
    assert report.to_dict()["rows"][1]["name"] == "better"
    with pytest.raises(ConfigError, match="baseline"):
        compare(results, baseline="nope", metric="mrr@10")
    with pytest.raises(ConfigError, match="per-query"):
        compare(results, baseline="base", metric="map")
    with pytest.raises(ConfigError):
        compare({"a": EvalResult({}, {}, 0)}, baseline="a", metric="bleu")

"""dualist.evaluation.metrics: hand-computed values, then equivalence with pytrec_eval (trec_eval)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dualist._io import read_json, write_json
from dualist.errors import ConfigError, DataError
from dualist.evaluation import EvalResult, evaluate, parse_metric, rank_documents

pytrec_eval = pytest.importorskip("pytrec_eval")

L2 = math.log2

# One query, four retrieved documents. Ranking by score: b (0.9), d (0.7), a (0.5), c (0.3).
#   b: judged 0 (not relevant), d: unjudged, a: grade 2, c: grade 1; e (grade 1) is never retrieved.
# So the binary relevance down the ranking is [0, 0, 1, 1] and the query has 3 relevant documents.
QRELS = {"q": {"a": 2, "b": 0, "c": 1, "e": 1}}
RUN = {"q": {"a": 0.5, "b": 0.9, "c": 0.3, "d": 0.7}}


def one(metric: str, qrels=QRELS, run=RUN, **kw) -> float:
    res = evaluate(qrels, run, [metric], **kw)
    return res.mean[parse_metric(metric).name]


@pytest.mark.parametrize(("metric", "expected"), [
    ("mrr@10", 1 / 3),             # first relevant (a) at rank 3
    ("mrr@2", 0.0),                # nothing relevant in the top 2
    ("mrr", 1 / 3),
    ("precision@2", 0 / 2),
    ("precision@4", 2 / 4),
    ("precision@10", 2 / 10),      # divides by k even though only 4 were retrieved
    ("precision", 2 / 4),          # no cutoff: relevant retrieved / retrieved
    ("recall@3", 1 / 3),           # a of {a, c, e}
    ("recall@100", 2 / 3),         # a, c of {a, c, e}
    ("map@3", (1 / 3) / 3),        # P@3 at the hit on rank 3, divided by 3 relevant
    ("map", (1 / 3 + 2 / 4) / 3),  # hits at ranks 3 and 4; e never retrieved adds 0
    ("r-precision", 1 / 3),        # R = 3; the top 3 (b, d, a) hold one relevant
    # DCG@3 = 2/log2(4) = 1; ideal gains (2, 1, 1): 2/log2(2) + 1/log2(3) + 1/log2(4)
    ("ndcg@3", (2 / L2(4)) / (2 / L2(2) + 1 / L2(3) + 1 / L2(4))),
    # whole ranking: a (gain 2) at rank 3, c (gain 1) at rank 4
    ("ndcg", (2 / L2(4) + 1 / L2(5)) / (2 / L2(2) + 1 / L2(3) + 1 / L2(4))),
    # ideal@1 = 2/log2(2) = 2, DCG@1 = 0 (b is judged 0)
    ("ndcg@1", 0.0),
])
def test_hand_computed(metric, expected):
    assert one(metric) == pytest.approx(expected, abs=1e-12)


def test_relevance_level_changes_binary_metrics_only():
    # With relevance_level=2 only a (grade 2, rank 3) is relevant: R = 1.
    assert one("recall@3", relevance_level=2) == pytest.approx(1.0)
    assert one("map", relevance_level=2) == pytest.approx(1 / 3)
    assert one("r-precision", relevance_level=2) == pytest.approx(0.0)  # top 1 is b
    assert one("ndcg@3", relevance_level=2) == pytest.approx(one("ndcg@3"))


def test_graded_gain_is_linear_not_exponential():
    # c (grade 1) at rank 1, a (grade 3) at rank 2. Linear: DCG = 1 + 3/log2(3); ideal = 3 + 1/log2(3).
    qrels, run = {"q": {"a": 3, "c": 1}}, {"q": {"c": 2.0, "a": 1.0}}
    assert one("ndcg@2", qrels, run) == pytest.approx((1 + 3 / L2(3)) / (3 + 1 / L2(3)))


def test_negative_grades_give_no_gain():
    # trec_eval gives a judged-negative document gain 0, not a penalty.
    qrels, run = {"q": {"x": -1, "y": 1}}, {"q": {"x": 2.0, "y": 1.0}}
    assert one("ndcg@10", qrels, run) == pytest.approx(1 / L2(3))


def test_ties_break_by_doc_id_descending():
    assert rank_documents({"10": 1.0, "9": 1.0, "100": 1.0, "z": 0.5}) == ["9", "100", "10", "z"]
    run = {"q": {"10": 1.0, "9": 1.0, "100": 1.0}}
    # "9" > "100" > "10" as strings, so the ranking is 9, 100, 10.
    assert one("mrr@10", {"q": {"9": 1}}, run) == 1.0
    assert one("mrr@10", {"q": {"100": 1}}, run) == 0.5
    assert one("mrr@10", {"q": {"10": 1}}, run) == pytest.approx(1 / 3)
    for rel in run["q"]:  # and pytrec_eval agrees
        ref = pytrec_eval.RelevanceEvaluator({"q": {rel: 1}}, {"recip_rank"}).evaluate(run)
        assert one("mrr", {"q": {rel: 1}}, run) == ref["q"]["recip_rank"]


def test_insertion_order_does_not_matter():
    docs = [(f"d{i}", float(i % 3)) for i in range(30)]
    fwd = {"q": dict(docs)}
    rev = {"q": dict(reversed(docs))}
    qrels = {"q": {"d4": 1, "d7": 2, "d12": 1}}
    a = evaluate(qrels, fwd, ["ndcg@5", "map", "mrr@10"]).mean
    b = evaluate(qrels, rev, ["ndcg@5", "map", "mrr@10"]).mean
    assert a == b
    assert rank_documents(fwd["q"]) == rank_documents(rev["q"])


# --- queries taken into account --------------------------------------------------------------

def test_which_queries_count():
    qrels = {"q1": {"a": 1}, "q2": {"x": 0}, "q3": {"z": 1}, "q4": {}}
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0}, "q4": {"a": 1.0}, "q5": {"a": 1.0}}
    res = evaluate(qrels, run, ["mrr@10"])
    # q1: judged, in run; q2: judged (only non-relevant), in run -> 0; q3 absent from the run -> ignored;
    # q4: no judgment -> ignored; q5: not in qrels -> ignored.
    assert res.per_query["mrr@10"] == {"q1": 1.0, "q2": 0.0}
    assert res.num_queries == 2 and res.mean["mrr@10"] == 0.5
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    assert set(ref) == set(res.per_query["mrr@10"])

    zero = evaluate(qrels, run, ["mrr@10"], missing="zero")
    assert zero.per_query["mrr@10"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert zero.mean["mrr@10"] == pytest.approx(1 / 3)


def test_empty_run():
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    res = evaluate(qrels, {}, ["ndcg@10", "recall@100"])
    assert res.num_queries == 0
    assert all(math.isnan(v) for v in res.mean.values())
    assert res.per_query == {"ndcg@10": {}, "recall@100": {}}
    zero = evaluate(qrels, {}, ["ndcg@10", "recall@100"], missing="zero")
    assert zero.num_queries == 2 and zero.mean == {"ndcg@10": 0.0, "recall@100": 0.0}


def test_empty_ranking_of_a_run_query_counts_as_zero():
    res = evaluate({"q1": {"a": 1}, "q2": {"a": 1}}, {"q1": {}, "q2": {"a": 1.0}}, ["ndcg@10", "map"])
    assert res.per_query["ndcg@10"] == {"q1": 0.0, "q2": 1.0}
    assert res.mean["map"] == 0.5


def test_ignore_identical_ids():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 0.9, "x": 0.8, "d1": 0.7}}
    assert one("mrr@10", qrels, run) == pytest.approx(1 / 3)
    assert one("mrr@10", qrels, run, ignore_identical_ids=True) == pytest.approx(1 / 2)
    # The query's own id counts as a hit when judged, unless ignored.
    qrels_self = {"q1": {"q1": 1, "d1": 1}}
    assert one("recall@1", qrels_self, run) == 0.5
    assert one("recall@1", qrels_self, run, ignore_identical_ids=True) == 0.0
    assert run["q1"] == {"q1": 0.9, "x": 0.8, "d1": 0.7}  # the caller's run is left alone


# --- names and errors -------------------------------------------------------------------------

def test_metric_names():
    assert parse_metric("NDCG@10").name == "ndcg@10"
    assert parse_metric("P@5").name == "precision@5"
    assert parse_metric("MAP").name == "map"
    assert parse_metric("Rprec").name == "r-precision"
    res = evaluate(QRELS, RUN, ["NDCG@3", "ndcg@3", "Recall@3"])
    assert list(res.mean) == ["ndcg@3", "recall@3"]  # canonical keys, duplicates dropped


@pytest.mark.parametrize("bad", ["bleu@10", "ndcg@0", "ndcg@x", "ndcg@-1", "r-precision@5", ""])
def test_bad_metric_names(bad):
    with pytest.raises(ValueError) as e:
        evaluate(QRELS, RUN, [bad])
    assert isinstance(e.value, ConfigError)
    if bad in ("bleu@10", ""):
        assert "ndcg@k" in str(e.value) and "mrr@k" in str(e.value)  # lists the supported names


def test_bad_arguments():
    with pytest.raises(ConfigError, match="missing"):
        evaluate(QRELS, RUN, missing="drop")
    with pytest.raises(ConfigError, match="no metric"):
        evaluate(QRELS, RUN, [])
    with pytest.raises(DataError, match="NaN"):
        evaluate(QRELS, {"q": {"a": float("nan")}})


def test_result_round_trip_and_table(tmp_path):
    res = evaluate(QRELS | {"q2": {"a": 1}}, RUN | {"q2": {"a": 1.0}}, ["ndcg@10", "recall@100"])
    write_json(tmp_path / "r.json", res.to_dict())
    back = EvalResult.from_dict(read_json(tmp_path / "r.json"))
    assert back == res
    lines = str(res).splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert lines[1].split() == ["ndcg@10", f"{res.mean['ndcg@10']:.4f}"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    assert lines[-1] == "(2 queries)"


# --- equivalence with pytrec_eval ---------------------------------------------------------------

PYTREC = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "precision@10": "P_10",
          "map@10": "map_cut_10", "map": "map", "ndcg": "ndcg", "r-precision": "Rprec",
          "mrr": "recip_rank", "precision": "set_P", "recall": "set_recall", "ndcg@3": "ndcg_cut_3",
          "recall@5": "recall_5"}
PYTREC_MEASURES = {"ndcg_cut.3,10", "recall.5,100", "P.10", "map_cut.10", "map", "ndcg", "Rprec",
                   "recip_rank", "set_P", "set_recall"}


def random_case(seed: int, n_queries: int = 40, n_docs: int = 150):
    """Graded qrels (-1..3) and runs full of ties, with every awkward query the semantics cover."""
    rng = random.Random(seed)
    # ids of varied length so that string order differs from numeric order ("9" > "10")
    doc_ids = [str(i) for i in range(n_docs)] + [f"d{i}" for i in range(n_docs // 3)]
    qrels, run = {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        kind = rng.random()
        if kind < 0.85:
            judged = rng.sample(doc_ids, rng.randint(1, 30))
            qrels[q] = {d: rng.choice([-1, 0, 0, 1, 1, 2, 3]) for d in judged}
        elif kind < 0.9:
            qrels[q] = {d: 0 for d in rng.sample(doc_ids, 3)}  # judged, nothing relevant
        if rng.random() < 0.9:
            n_ret = rng.choice([0, 1, 5, rng.randint(1, 140)])
            levels = rng.choice([2, 5, 50])  # few distinct scores = many ties
            run[q] = {d: rng.randrange(levels) / 4 - 1 for d in rng.sample(doc_ids, n_ret)}
    return qrels, run


@pytest.mark.parametrize("relevance_level", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_equals_pytrec_eval(seed, relevance_level):
    qrels, run = random_case(seed)
    ref = pytrec_eval.RelevanceEvaluator(qrels, PYTREC_MEASURES, relevance_level=relevance_level).evaluate(run)
    res = evaluate(qrels, run, list(PYTREC), relevance_level=relevance_level)
    assert res.num_queries == len(ref) > 20
    for ours, theirs in PYTREC.items():
        assert set(res.per_query[ours]) == set(ref)
        for q, values in ref.items():
            assert res.per_query[ours][q] == pytest.approx(values[theirs], abs=1e-12), (ours, q)
        mean = sum(v[theirs] for v in ref.values()) / len(ref)
        assert res.mean[ours] == pytest.approx(mean, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_mrr_at_10_equals_recip_rank_of_top10(seed):
    # trec_eval's recip_rank has no cutoff; cut the run to its top 10 (trec_eval order) first.
    qrels, run = random_case(seed)
    top10 = {q: {d: docs[d] for d in rank_documents(docs)[:10]} for q, docs in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    res = evaluate(qrels, run, ["mrr@10"])
    assert res.per_query["mrr@10"] == pytest.approx({q: v["recip_rank"] for q, v in ref.items()}, abs=1e-12)
    assert any(0 < v < 1 for v in res.per_query["mrr@10"].values())


def test_ignore_identical_ids_equals_pytrec_on_filtered_run():
    qrels, run = random_case(7)
    for q in run:  # put each query's own id at the top, judged relevant for some
        run[q][q] = 10.0
        if q in qrels and int(q[1:]) % 2:
            qrels[q][q] = 1
    filtered = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(filtered)
    res = evaluate(qrels, run, ["ndcg@10", "mrr"], ignore_identical_ids=True)
    assert res.per_query["ndcg@10"] == pytest.approx({q: v["ndcg_cut_10"] for q, v in ref.items()}, abs=1e-12)
    assert res.per_query["mrr"] == pytest.approx({q: v["recip_rank"] for q, v in ref.items()}, abs=1e-12)
    assert evaluate(qrels, run, ["mrr"]).mean != res.mean  # the self-matches did matter


def test_hubness_figures_of_a_hand_made_run():
    from dualist.evaluation import hubness

    # five queries; "hub" is in every top-2, "x" ties with "y" in q5 (trec_eval order: higher id first)
    run = {"q1": {"hub": 9, "a": 5, "z": 1}, "q2": {"hub": 9, "b": 5}, "q3": {"hub": 9, "c": 5},
           "q4": {"a": 9, "hub": 8}, "q5": {"x": 1, "y": 1, "hub": 0}}
    h = hubness(run, k=2, corpus_size=10)
    assert (h.queries, h.distinct, h.max_occurrence, h.top_doc) == (5, 6, 4, "hub")
    n = np.array([4, 2, 1, 1, 1, 1] + [0] * 4, dtype=float)  # hub, a, b, c, x, y, and 4 unseen documents
    assert h.skewness == pytest.approx(((n - n.mean()) ** 3).mean() / n.std() ** 3)
    assert hubness(run, k=1).distinct == 3  # hub, a and y (y > x)
    flat = hubness({f"q{i}": {f"d{i}": 1.0} for i in range(4)}, k=10)
    assert flat.max_occurrence == 1 and flat.skewness == 0.0
    with pytest.raises(ValueError, match="corpus_size"):
        hubness(run, k=2, corpus_size=3)

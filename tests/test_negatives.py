"""sample_negatives: which documents become training negatives."""

from __future__ import annotations

import pytest

from dualist.candidates import BM25Retriever, sample_negatives
from dualist.data import load_beir
from dualist.errors import ConfigError

# d01..d20 scored 20..1; d05 and d06 tie at 16 (d06 ranks first: trec_eval order)
RUN = {"q1": {f"d{i:02d}": float(21 - i) for i in range(1, 21)}}
RUN["q1"]["d05"] = RUN["q1"]["d06"] = 16.0
RANKED = ["d01", "d02", "d03", "d04", "d06", "d05"] + [f"d{i:02d}" for i in range(7, 21)]
QRELS = {"q1": {"d02": 1, "d06": 2, "d03": 0}}


def test_top_takes_best_non_positives_in_rank_order():
    assert sample_negatives(RUN, QRELS, 4) == {"q1": ["d01", "d03", "d04", "d05"]}
    # d03 is judged non-relevant (grade 0): a legitimate negative, kept


def test_top_ignores_insertion_order_of_the_run():
    shuffled = {"q1": dict(reversed(list(RUN["q1"].items())))}
    assert sample_negatives(shuffled, QRELS, 4) == sample_negatives(RUN, QRELS, 4)


def test_range_samples_within_ranks_without_positives():
    for seed in range(20):
        neg = sample_negatives(RUN, QRELS, 5, strategy="range", rank_range=(2, 10), seed=seed)["q1"]
        assert len(neg) == 5 and len(set(neg)) == 5
        assert set(neg) <= set(RANKED[1:10]) - {"d02", "d06"}
        assert neg == sorted(neg, key=RANKED.index)  # returned in rank order


def test_range_is_inclusive_and_uses_full_ranks():
    # ranks 5..6 are d06 (a positive) and d05: only d05 is left
    assert sample_negatives(RUN, QRELS, 3, strategy="range", rank_range=(5, 6)) == {"q1": ["d05"]}
    assert sample_negatives(RUN, QRELS, 3, strategy="range", rank_range=(20, 20)) == {"q1": ["d20"]}


def test_range_is_uniform_enough():
    counts: dict[str, int] = {}
    for seed in range(400):
        for d in sample_negatives(RUN, {}, 1, strategy="range", rank_range=(1, 4), seed=seed)["q1"]:
            counts[d] = counts.get(d, 0) + 1
    assert set(counts) == {"d01", "d02", "d03", "d04"}
    assert min(counts.values()) > 60  # expected 100 each


def test_seeded_deterministic_and_independent_of_other_queries():
    run = {f"q{j}": {f"d{i}": float(i) for i in range(50)} for j in range(6)}
    a = sample_negatives(run, {}, 5, strategy="range", rank_range=(1, 50), seed=7)
    b = sample_negatives(run, {}, 5, strategy="range", rank_range=(1, 50), seed=7)
    assert a == b
    reordered = dict(reversed(list(run.items())))
    assert sample_negatives(reordered, {}, 5, strategy="range", rank_range=(1, 50), seed=7) == a
    alone = sample_negatives({"q3": run["q3"]}, {}, 5, strategy="range", rank_range=(1, 50), seed=7)
    assert alone["q3"] == a["q3"]
    c = sample_negatives(run, {}, 5, strategy="range", rank_range=(1, 50), seed=8)
    assert c != a
    assert len({tuple(v) for v in a.values()}) > 1  # queries do not share one draw


def test_pinned_draw():
    # Guards the seed derivation (digest of seed and qid) and the sampler against silent changes.
    run = {"q1": {f"d{i}": float(i) for i in range(10)}}
    assert sample_negatives(run, {}, 3, strategy="range", rank_range=(1, 10), seed=0) == {"q1": ["d7", "d5", "d2"]}


def test_fewer_candidates_than_n_returns_what_there_is():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"p": 1.0}, "q3": {}}
    qrels = {"q1": {"a": 1}, "q2": {"p": 1}}
    assert sample_negatives(run, qrels, 5) == {"q1": ["b", "c"], "q2": [], "q3": []}
    assert sample_negatives(run, qrels, 5, strategy="range") == {"q1": ["b", "c"], "q2": [], "q3": []}
    assert sample_negatives(run, qrels, 0) == {"q1": [], "q2": [], "q3": []}


def test_exclude_global_and_per_query():
    assert sample_negatives(RUN, QRELS, 3, exclude={"d01", "d04"})["q1"] == ["d03", "d05", "d07"]
    per_query = {"q1": ["d03"], "q9": ["d01"]}
    assert sample_negatives(RUN, QRELS, 3, exclude=per_query)["q1"] == ["d01", "d04", "d05"]


@pytest.mark.parametrize("kwargs, error", [
    ({"strategy": "random"}, ConfigError),
    ({"strategy": "range", "rank_range": (0, 10)}, ValueError),
    ({"strategy": "range", "rank_range": (10, 5)}, ValueError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        sample_negatives(RUN, QRELS, 3, **kwargs)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_negatives(RUN, QRELS, -1)


def test_bm25_negatives_on_tiny(tiny_beir):
    ds = load_beir(tiny_beir)
    qrels = ds.qrels_for("train")
    run = BM25Retriever().index(ds).search(ds.queries_for("train"), k=20)
    neg = sample_negatives(run, qrels, 4)
    assert set(neg) == set(qrels)
    for qid, docs in neg.items():
        assert len(docs) == 4
        assert not set(docs) & {d for d, r in qrels[qid].items() if r > 0}
        assert set(docs) <= set(run[qid])

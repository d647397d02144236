"""Rank fusion (RRF, normalized score sum): hand-computed cases, ranx equivalence, hybrid retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from dualist.errors import ConfigError
from dualist.evaluation import evaluate, fuse, hybrid, retrieve, rrf, score_sum


def test_rrf_by_hand():
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"z": 0.9, "x": 0.1}}
    out = rrf([a, b], k=1)["q"]
    # x: 1/(1+1) + 1/(1+2); z: 1/(1+3) + 1/(1+1); y: 1/(1+2)
    assert out == pytest.approx({"x": 0.5 + 1 / 3, "z": 0.25 + 0.5, "y": 1 / 3})
    assert list(out) == ["x", "z", "y"]
    weighted = rrf([a, b], k=1, weights=[0.0, 1.0])["q"]
    assert list(weighted)[:2] == ["z", "x"] and weighted["y"] == 0.0


def test_rrf_ranks_ties_in_trec_eval_order():
    # all tie in run a: trec_eval order is doc id descending, so "b" is rank 1
    out = rrf([{"q": {"a": 1.0, "b": 1.0}}], k=0)["q"]
    assert out == {"b": 1.0, "a": 0.5}


def test_score_sum_by_hand():
    a = {"q": {"x": 10.0, "y": 5.0, "z": 0.0}}
    b = {"q": {"y": 2.0, "w": 1.0}}
    out = score_sum([a, b])["q"]
    assert out == pytest.approx({"x": 1.0, "y": 0.5 + 1.0, "z": 0.0, "w": 0.0})
    assert list(out)[0] == "y"
    assert score_sum([{"q": {"a": 3.0, "b": 3.0}}])["q"] == {"b": 0.0, "a": 0.0}  # no range: all 0, as ranx


def test_fuse_cuts_and_validates():
    runs = [{"q1": {"a": 2.0, "b": 1.0}}, {"q2": {"c": 1.0}}]
    out = fuse(runs, "sum", k=1)
    assert out == {"q1": {"a": 1.0}, "q2": {"c": 0.0}}  # queries of either run are kept
    with pytest.raises(ConfigError, match="unknown fusion method"):
        fuse(runs, "max")
    with pytest.raises(ConfigError, match="2 weights for 1 runs"):
        rrf(runs[:1], weights=[1, 2])


def _random_runs(n_queries=20, n_docs=60, depth=30, seed=0):
    rng = np.random.default_rng(seed)
    runs = []
    for scale in (10.0, 1.0):
        run = {}
        for q in range(n_queries):
            docs = rng.choice(n_docs, size=depth, replace=False)
            scores = rng.permutation(depth).astype(float) * scale + rng.random()  # distinct scores
            run[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(docs, scores)}
        runs.append(run)
    return runs


@pytest.mark.slow  # ranx compiles its numba kernels on first use: minutes on 2 busy cores
@pytest.mark.parametrize("method", ["rrf", "sum"])
def test_equals_ranx(method):
    ranx = pytest.importorskip("ranx")
    runs = _random_runs()
    ours = fuse(runs, method)
    if method == "rrf":
        theirs = ranx.fuse([ranx.Run(r) for r in runs], method="rrf", params={"k": 60}, norm=None)
    else:
        theirs = ranx.fuse([ranx.Run(r) for r in runs], method="wsum", params={"weights": [1.0, 1.0]},
                           norm="min-max")
    theirs = theirs.to_dict()
    assert set(ours) == set(theirs)
    for q in ours:
        assert set(ours[q]) == set(theirs[q])
        for d, s in ours[q].items():
            assert s == pytest.approx(theirs[q][d], abs=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_hybrid_retrieval_on_the_tiny_dataset(tiny_beir, tiny_bert):
    from dualist.candidates import BM25Retriever
    from dualist.data import load_beir
    from dualist.models import DualEncoder

    ds = load_beir(tiny_beir)
    de = DualEncoder(model=str(tiny_bert))
    queries = ds.queries_for("test")
    bm25 = BM25Retriever().index(ds.corpus).search(queries, k=20)
    dense = retrieve(de, ds, queries, k=20)
    for method in ("rrf", "sum"):
        run = hybrid(de, ds, queries, k=10, method=method, depth=20, bm25_run=bm25, dense_run=dense)
        assert run == fuse([bm25, dense], method, k=10)
        for q, docs in run.items():
            assert len(docs) == 10 and set(docs) <= set(bm25[q]) | set(dense[q])
    # computed from scratch (fresh BM25 + exact dense search) it is the same run
    assert hybrid(de, ds, queries, k=10, depth=20) == fuse([bm25, dense], "rrf", k=10)
    # a random tiny BERT is near chance; lexical evidence fused in must lift it
    qrels = ds.qrels_for("test")
    fused = evaluate(qrels, hybrid(de, ds, queries, k=10, depth=20, bm25_run=bm25, dense_run=dense), ["ndcg@10"])
    alone = evaluate(qrels, dense, ["ndcg@10"])
    assert fused.mean["ndcg@10"] > alone.mean["ndcg@10"]


@pytest.mark.usefixtures("one_thread")
def test_cli_search_modes(tiny_beir, tiny_bert, tmp_path):
    from dualist.candidates import BM25Retriever
    from dualist.cli import main
    from dualist.data import load_beir, read_trec_run
    from dualist.models import DualEncoder

    DualEncoder(model=str(tiny_bert)).save_pretrained(tmp_path / "student")
    common = ["--data", str(tiny_beir), "--split", "test", "--k", "10", "-q"]
    assert main(["search", *common, "--mode", "bm25", "--out", str(tmp_path / "bm25.trec")]) == 0
    assert main(["search", *common, "--model", str(tmp_path / "student"), "--out", str(tmp_path / "dense.trec"),
                 "--k", "20"]) == 0
    assert main(["search", *common, "--model", str(tmp_path / "student"), "--mode", "hybrid", "--fusion", "sum",
                 "--fusion-depth", "20", "--out", str(tmp_path / "hybrid.trec")]) == 0
    ds = load_beir(tiny_beir)
    bm25 = BM25Retriever().index(ds.corpus).search(ds.queries_for("test"), k=20)
    expected = fuse([bm25, read_trec_run(tmp_path / "dense.trec")], "sum", k=10)
    got = read_trec_run(tmp_path / "hybrid.trec")
    assert {q: set(d) for q, d in got.items()} == {q: set(d) for q, d in expected.items()}
    assert {q: set(d) for q, d in read_trec_run(tmp_path / "bm25.trec").items()} == \
        {q: set(list(d)[:10]) for q, d in bm25.items()}

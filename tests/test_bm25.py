"""BM25Retriever: Lucene-style analysis, exact BM25 scores, deterministic top-k, persistence."""

from __future__ import annotations

import math

import pytest

from dualist.candidates import BM25Retriever, bm25_run
from dualist.data import Dataset, load_beir, read_trec_run
from dualist.errors import ConfigError, DataError
from dualist.testing import TOPICS


@pytest.fixture(scope="module")
def tiny(tiny_beir) -> Dataset:
    return load_beir(tiny_beir)


@pytest.fixture(scope="module")
def retriever(tiny) -> BM25Retriever:
    return BM25Retriever().index(tiny)


def test_topic_query_ranks_a_document_of_that_topic_first(retriever):
    queries = {topic: " ".join(words[:3]) for topic, words in TOPICS.items()}
    run = retriever.search(queries, k=10)
    for t, topic in enumerate(TOPICS):
        top = next(iter(run[topic]))
        assert top.startswith(f"d{t}"), (topic, list(run[topic])[:3])


def test_tiny_test_split_is_easy(tiny, retriever):
    run = retriever.search(tiny.queries_for("test"), k=5)
    hits = sum(bool(set(run[q]) & set(rel)) for q, rel in tiny.qrels_for("test").items())
    assert hits >= 7  # 8 test queries, each with 2 relevant docs among 6 of its topic


def test_run_is_sorted_and_deterministic(tiny, retriever):
    run = retriever.search(tiny.queries, k=20)
    for docs in run.values():
        scores = list(docs.values())
        assert scores == sorted(scores, reverse=True)
        assert all(s > 0 for s in scores)  # only documents that match a query term
    assert run == BM25Retriever().index(tiny).search(tiny.queries, k=20)


def test_k_larger_than_corpus_is_clipped(tiny, retriever):
    run = retriever.search({"q": "study results data protein"}, k=10_000)
    assert 0 < len(run["q"]) <= len(tiny.corpus)
    # a filler word found in most documents: everything that matches comes back
    matching = [d for d in tiny.corpus if "study" in tiny.doc_text(d) or "protein" in tiny.doc_text(d)
                or "results" in tiny.doc_text(d) or "data" in tiny.doc_text(d)]
    assert set(run["q"]) == set(matching)
    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.search({"q": "x"}, k=0)


def test_queries_without_known_terms_get_empty_rankings(retriever):
    run = retriever.search({"stop": "the of and", "oov": "zzzz qqqq", "empty": ""}, k=5)
    assert run == {"stop": {}, "oov": {}, "empty": {}}


def test_scores_equal_the_lucene_formula():
    corpus = {"a": {"title": "", "text": "apple apple banana"},
              "b": {"title": "", "text": "banana cherry"},
              "c": {"title": "Cherry", "text": "cherry cherry apple date"}}
    k1, b = 0.9, 0.4
    r = BM25Retriever(k1=k1, b=b, stemmer=None).index(corpus)
    lens = {"a": 3, "b": 2, "c": 5}
    avg = sum(lens.values()) / 3

    def lucene(term, doc):
        tf = r.analyze(corpus[doc]["title"] + " " + corpus[doc]["text"]).count(term)
        df = sum(term in r.analyze(corpus[d]["title"] + " " + corpus[d]["text"]) for d in corpus)
        idf = math.log(1 + (3 - df + 0.5) / (df + 0.5))
        return idf * tf / (tf + k1 * (1 - b + b * lens[doc] / avg)) if tf else 0.0

    run = r.search({"q": "apple cherry", "dup": "cherry cherry"}, k=3)
    for doc in corpus:
        expected = lucene("apple", doc) + lucene("cherry", doc)
        assert run["q"][doc] == pytest.approx(expected, rel=1e-5)
    # a repeated query term counts twice, as in a Lucene bag-of-words query
    assert run["dup"]["c"] == pytest.approx(2 * lucene("cherry", "c"), rel=1e-5)


def test_title_is_indexed(tiny):
    r = BM25Retriever().index({"t": {"title": "zebra", "text": "plain"}, "u": {"title": "", "text": "plain"}})
    assert list(r.search({"q": "zebra"}, k=2)["q"]) == ["t"]


def test_ties_broken_by_doc_id_descending():
    corpus = {d: {"title": "", "text": "same words here"} for d in ["d1", "d3", "d2", "d10"]}
    r = BM25Retriever().index(corpus)
    assert list(r.search({"q": "words"}, k=4)["q"]) == ["d3", "d2", "d10", "d1"]
    assert list(r.search({"q": "words"}, k=2)["q"]) == ["d3", "d2"]  # cut inside a tie: same order


def test_analyzer_follows_lucene():
    r = BM25Retriever()
    # StandardTokenizer splits; possessive "'s" goes ("it's" -> "it", a stop word); Porter stems
    assert r.analyze("The cells' Proteins were BINDING to DNA; it's 2.5-fold (p<0.05), 1,000 mice") == [
        "cell", "protein", "were", "bind", "dna", "2.5", "fold", "p", "0.05", "1,000", "mice"]
    assert r.analyze("a b") == ["b"]  # single letters are tokens; "a" is a stop word
    assert BM25Retriever(stopwords=None).analyze("the cat") == ["the", "cat"]
    assert BM25Retriever(stemmer=None).analyze("binding") == ["binding"]
    assert BM25Retriever(stemmer="english").analyze("generously") == ["generous"]


def test_index_dict_or_dataset_is_the_same(tiny, retriever):
    r2 = BM25Retriever().index(tiny.corpus)
    assert r2.doc_ids == tiny.doc_ids == retriever.doc_ids
    q = tiny.queries_for("dev")
    assert r2.search(q) == retriever.search(q)


def test_save_load_round_trip(tiny, retriever, tmp_path):
    retriever.save(tmp_path / "bm25")
    files = sorted(p.name for p in (tmp_path / "bm25").iterdir())
    assert "dualist_bm25.json" in files and "params.index.json" in files
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)
    loaded = BM25Retriever.load(tmp_path / "bm25")
    assert loaded.params() == retriever.params()
    assert loaded.doc_ids == retriever.doc_ids
    assert loaded.search(tiny.queries, k=10) == retriever.search(tiny.queries, k=10)
    mapped = BM25Retriever.load(tmp_path / "bm25", mmap=True)
    assert mapped.search(tiny.queries, k=10) == retriever.search(tiny.queries, k=10)


def test_saved_index_is_reproducible(tiny, tmp_path):
    BM25Retriever().index(tiny).save(tmp_path / "a")
    BM25Retriever().index(tiny).save(tmp_path / "b")
    for p in sorted((tmp_path / "a").iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name


def test_non_default_params_survive_save_load(tiny, tmp_path):
    r = BM25Retriever(k1=1.2, b=0.75, method="bm25+", stemmer="english", stopwords=["study", "results"]).index(tiny)
    r.save(tmp_path / "x")
    loaded = BM25Retriever.load(tmp_path / "x")
    assert loaded.params() == r.params()
    assert loaded.search(tiny.queries, k=7) == r.search(tiny.queries, k=7)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="dualist_bm25.json is missing"):
        BM25Retriever.load(tmp_path)
    (tmp_path / "dualist_bm25.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        BM25Retriever.load(tmp_path)


def test_bad_settings_and_states():
    with pytest.raises(ConfigError, match="stemmer 'klingon'"):
        BM25Retriever(stemmer="klingon")
    with pytest.raises(ConfigError, match="stopwords"):
        BM25Retriever(stopwords="klingon")
    with pytest.raises(ConfigError, match="method"):
        BM25Retriever(method="tfidf")
    with pytest.raises(ConfigError, match="no index"):
        BM25Retriever().search({"q": "x"})
    with pytest.raises(DataError, match="empty corpus"):
        BM25Retriever().index({})
    with pytest.raises(DataError, match="indexable term"):
        BM25Retriever().index({"d": {"title": "", "text": "the of"}})


def test_bm25_run_writes_trec(tiny, tmp_path):
    out = tmp_path / "runs" / "test.bm25.trec"
    run = bm25_run(tiny, "test", k=5, out_path=out)
    assert set(run) == set(tiny.queries_for("test"))
    assert all(len(docs) == 5 for docs in run.values())
    assert read_trec_run(out) == run
    assert out.read_text().split("\n", 1)[0].endswith(" bm25")


def _ndcg10(qrels, run) -> float:
    import pytrec_eval

    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return sum(v["ndcg_cut_10"] for v in per_query.values()) / len(per_query)


@pytest.mark.slow
@pytest.mark.parametrize("name, published", [("scifact", 0.679), ("nfcorpus", 0.322)])
def test_matches_pyserini_flat_bm25(shared_data, name, published):
    """Pyserini's BEIR flat BM25 nDCG@10 on test (docs/architecture.md §9), within 0.02."""
    ds = load_beir(shared_data / name)
    run = bm25_run(ds, "test", k=100)
    ndcg = _ndcg10(ds.qrels_for("test"), run)
    print(f"{name}: BM25 nDCG@10 = {ndcg:.4f} (Pyserini {published})")
    assert abs(ndcg - published) <= 0.02, ndcg


def test_score_pairs_equal_search_scores_at_any_rank(tiny, retriever):
    queries = {q: tiny.queries[q] for q in list(tiny.queries)[:4]}
    full = retriever.search(queries, k=len(tiny.corpus))
    pairs = {q: list(tiny.corpus) for q in queries}  # every document, matching or not
    scored = retriever.score_pairs(queries, pairs)
    for q in queries:
        for d in tiny.corpus:
            assert scored[q][d] == pytest.approx(full[q].get(d, 0.0), rel=1e-6)
    # a repeated term counts twice there too, and a query without known terms scores 0
    dup = retriever.score_pairs({"q": "protein protein", "none": "zzzz"}, {"q": ["d000"], "none": ["d000"]})
    single = retriever.score_pairs({"q": "protein"}, {"q": ["d000"]})
    assert single["q"]["d000"] > 0
    assert dup["q"]["d000"] == pytest.approx(2 * single["q"]["d000"])
    assert dup["none"] == {"d000": 0.0}
    with pytest.raises(KeyError, match="not in the BM25 index"):
        retriever.score_pairs({"q": "protein"}, {"q": ["no-such-doc"]})

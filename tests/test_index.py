"""dualist.index: ExactIndex against faiss.IndexFlatIP and against itself (chunking, save/load)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualist.errors import ConfigError, DataError
from dualist.index import ExactIndex, SearchResults, load_index
from dualist.index import exact as exact_mod


def random_data(n=500, nq=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    return [f"doc{i}" for i in range(n)], docs, queries


def build(ids, docs, **kw) -> ExactIndex:
    index = ExactIndex(**kw)
    index.add(ids, docs)
    return index


def brute_force(docs, queries, k):
    """Reference top-k with the documented tie rule: score desc, then insertion index asc."""
    scores = queries.astype(np.float64) @ docs.T.astype(np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(docs.shape[0]), scores.shape), -scores), axis=1)
    return order[:, :k]


def test_matches_faiss_flat_ip():
    faiss = pytest.importorskip("faiss")
    ids, docs, queries = random_data(n=3000, nq=50, dim=32)
    res = build(ids, docs).search(queries, k=20)
    ref = faiss.IndexFlatIP(32)
    ref.add(docs)
    ref_scores, ref_rows = ref.search(queries, 20)
    assert res.ids == [[ids[j] for j in row] for row in ref_rows]
    np.testing.assert_allclose(res.scores, ref_scores, atol=1e-5)
    assert res.scores.dtype == np.float32 and res.scores.shape == (50, 20)


def test_scores_are_inner_products_best_first():
    ids, docs, queries = random_data()
    res = build(ids, docs).search(queries, k=10)
    pos = {d: i for i, d in enumerate(ids)}
    for qi, hits in enumerate(res.ids):
        rows = [pos[d] for d in hits]
        np.testing.assert_allclose(res.scores[qi], docs[rows] @ queries[qi], rtol=1e-5, atol=1e-5)
        assert list(rows) == list(brute_force(docs, queries[qi:qi + 1], 10)[0])
    assert np.all(np.diff(res.scores, axis=1) <= 0)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 499, 500])
def test_chunked_equals_unchunked(chunk_size):
    ids, docs, queries = random_data()
    whole = build(ids, docs).search(queries, k=25)
    chunked = build(ids, docs, chunk_size=chunk_size).search(queries, k=25)
    assert chunked.ids == whole.ids
    # BLAS may sum in another order for other matrix shapes (chunk_size=1 is a matrix-vector
    # product): equal up to float32 rounding, not bit for bit.
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-6, atol=1e-6)


def test_many_query_blocks(monkeypatch):
    # Force query blocks of 3 rows so the block loop, not just the chunk loop, is exercised.
    ids, docs, queries = random_data(nq=10)
    whole = build(ids, docs).search(queries, k=5)
    monkeypatch.setattr(exact_mod, "_MAX_BLOCK", 3 * 7)
    blocked = build(ids, docs, chunk_size=7).search(queries, k=5)
    assert blocked.ids == whole.ids


def test_ties_rank_by_insertion_order():
    # Integer-valued vectors: many exactly equal scores, with ties straddling the k-th place.
    rng = np.random.default_rng(3)
    docs = rng.integers(-1, 2, size=(300, 4)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(30, 4)).astype(np.float32)
    ids = [f"d{i}" for i in range(300)]
    expected = brute_force(docs, queries, 12)
    for chunk_size in (5, 13, 300):
        res = build(ids, docs, chunk_size=chunk_size).search(queries, k=12)
        assert res.ids == [[ids[j] for j in row] for row in expected], chunk_size
    # every score ties: the first-added k documents, in order
    flat = build(["b", "a", "c", "e", "d"], np.ones((5, 3)), chunk_size=2)
    assert flat.search(np.ones((2, 3)), k=3).ids == [["b", "a", "c"], ["b", "a", "c"]]


def test_tie_fix_up_also_holds_for_numpy_selection(monkeypatch):
    monkeypatch.setattr(exact_mod, "_torch", lambda: None)
    rng = np.random.default_rng(4)
    docs = rng.integers(0, 2, size=(200, 3)).astype(np.float32)
    queries = rng.integers(0, 2, size=(20, 3)).astype(np.float32)
    ids = [str(i) for i in range(200)]
    res = build(ids, docs, chunk_size=33).search(queries, k=9)
    assert res.ids == [[ids[j] for j in row] for row in brute_force(docs, queries, 9)]


def test_k_larger_than_index():
    ids, docs, queries = random_data(n=6, nq=3)
    res = build(ids, docs, chunk_size=4).search(queries, k=50)
    assert res.scores.shape == (3, 6)
    assert all(sorted(hits) == sorted(ids) for hits in res.ids)
    assert np.all(np.diff(res.scores, axis=1) <= 0)


def test_empty_index_and_empty_queries():
    res = ExactIndex().search(np.zeros((2, 8)), k=3)
    assert res.ids == [[], []] and res.scores.shape == (2, 0)
    ids, docs, _ = random_data(n=10)
    res = build(ids, docs).search(np.zeros((0, 16)), k=3)
    assert res.ids == [] and res.scores.shape == (0, 3)


def test_incremental_adds_equal_one_add():
    ids, docs, queries = random_data()
    index = ExactIndex(chunk_size=50)
    for s in range(0, 500, 120):
        index.add(ids[s:s + 120], docs[s:s + 120])
    one = build(ids, docs).search(queries, k=10)
    assert index.search(queries, k=10).ids == one.ids
    assert len(index) == 500 and index.dim == 16 and index.ids == ids


def test_add_copies_the_input():
    docs = np.eye(3, dtype=np.float32)
    index = build(["a", "b", "c"], docs)
    docs[:] = 0  # the caller reuses its buffer
    assert index.search(np.array([[0, 0, 1.0]]), k=1).ids == [["c"]]


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    ids, docs, queries = random_data()
    index = build(ids, docs, chunk_size=100)
    before = index.search(queries, k=10)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["embeddings.npy", "ids.json", "params.json"]
    params = json.loads((tmp_path / "idx" / "params.json").read_text())
    assert params["type"] == "exact" and params["count"] == 500 and params["dim"] == 16
    loaded = load_index(tmp_path / "idx", mmap=mmap)
    assert isinstance(loaded, ExactIndex) and loaded.chunk_size == 100
    assert isinstance(loaded.embeddings, np.memmap) == mmap
    after = loaded.search(queries, k=10)
    assert after.ids == before.ids
    np.testing.assert_array_equal(after.scores, before.scores)
    # a loaded (even memory-mapped) index still accepts new documents
    loaded.add(["new"], queries[:1] * 100)
    assert loaded.search(queries[:1], k=1).ids == [["new"]]


def test_float16_storage(tmp_path):
    ids, docs, queries = random_data()
    half = build(ids, docs, dtype=np.float16)
    assert half.embeddings.dtype == np.float16
    res = half.search(queries, k=10)
    rounded = docs.astype(np.float16).astype(np.float32)  # scores come from the stored (rounded) values
    for qi, hits in enumerate(res.ids):
        rows = [ids.index(d) for d in hits]
        np.testing.assert_allclose(res.scores[qi], rounded[rows] @ queries[qi], rtol=1e-5, atol=1e-5)
    again = ExactIndex.load(half.save(tmp_path / "h"))
    assert again.dtype == np.float16 and again.search(queries, k=10).ids == res.ids


def test_search_results_to_run():
    res = SearchResults(ids=[["a", "b"], ["c"]], scores=np.array([[2.0, 1.0], [3.0, -np.inf]], np.float32))
    assert res.to_run(["q1", "q2"]) == {"q1": {"a": 2.0, "b": 1.0}, "q2": {"c": 3.0}}
    with pytest.raises(ValueError, match="2 searched"):
        res.to_run(["q1"])
    with pytest.raises(ValueError, match="duplicate"):
        res.to_run(["q1", "q1"])


def test_bad_input():
    index = build(["a", "b"], np.ones((2, 4)))
    with pytest.raises(DataError, match="dimension 3 but the index has dimension 4"):
        index.search(np.ones((1, 3)), k=1)
    with pytest.raises(DataError, match="dimension 5 but the index has dimension 4"):
        index.add(["c"], np.ones((1, 5)))
    with pytest.raises(DataError, match="2 ids but 3 embeddings"):
        ExactIndex().add(["a", "b"], np.ones((3, 4)))
    with pytest.raises(DataError, match="2-D"):
        ExactIndex().add(["a"], np.ones(4))
    with pytest.raises(DataError, match="2-D"):
        index.search(np.ones(4), k=1)
    with pytest.raises(DataError, match="duplicate document id 'x'"):
        ExactIndex().add(["x", "y", "x"], np.ones((3, 4)))
    with pytest.raises(DataError, match="'a' is already in the index"):
        index.add(["a"], np.ones((1, 4)))
    with pytest.raises(DataError, match="NaN"):
        ExactIndex().add(["a"], np.array([[np.nan, 1.0]]))
    with pytest.raises(TypeError, match="strings"):
        ExactIndex().add([1, 2], np.ones((2, 4)))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((1, 4)), k=0)
    with pytest.raises(ConfigError):
        ExactIndex(chunk_size=0)
    with pytest.raises(ConfigError):
        ExactIndex(dtype=np.int8)
    assert len(index) == 2  # failed adds left the index unchanged


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="params.json"):
        load_index(tmp_path)
    build(["a"], np.ones((1, 2))).save(tmp_path / "i")
    (tmp_path / "i" / "ids.json").write_text('["a", "b"]')
    with pytest.raises(DataError, match="1 ids"):
        ExactIndex.load(tmp_path / "i")
    (tmp_path / "i" / "params.json").write_text('{"type": "annoy"}')
    with pytest.raises(DataError, match="unknown index type 'annoy'"):
        load_index(tmp_path / "i")

"""dualist.index.FaissIndex: Flat equals the exact oracle, ANN recall, persistence, errors."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from dualist.errors import ConfigError, DataError, MissingDependencyError
from dualist.index import ExactIndex, FaissIndex, load_index

faiss = pytest.importorskip("faiss")


def unit_vectors(n, dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    docs = unit_vectors(5000, 32, seed=0)
    queries = unit_vectors(200, 32, seed=1)
    ids = [f"d{i}" for i in range(len(docs))]
    exact = ExactIndex()
    exact.add(ids, docs)
    return ids, docs, queries, exact.search(queries, k=10)


def recall_at_10(res, ref) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, ref.ids)]))


def test_flat_equals_exact(data):
    ids, docs, queries, ref = data
    index = FaissIndex("Flat")
    index.add(ids[:2000], docs[:2000])
    index.add(ids[2000:], docs[2000:])  # ids keep FAISS's row numbers across adds
    res = index.search(queries, k=10)
    assert res.ids == ref.ids
    np.testing.assert_allclose(res.scores, ref.scores, atol=1e-5)


def test_hnsw_recall(data):
    ids, docs, queries, ref = data
    index = FaissIndex("HNSW32", ef_search=64)
    index.add(ids, docs)
    assert index.faiss_index.hnsw.efSearch == 64
    assert recall_at_10(index.search(queries, k=10), ref) >= 0.9


def test_ivf_pq_trains_on_first_add_and_nprobe_matters(data):
    ids, docs, queries, ref = data
    index = FaissIndex("IVF32,PQ8x4", nprobe=8)  # 4-bit codes: FAISS trains 8-bit PQ slowly
    assert not index.is_trained
    index.add(ids, docs)
    assert index.is_trained and len(index) == 5000
    one_list = FaissIndex("IVF64,Flat", nprobe=1)
    one_list.add(ids, docs)
    all_lists = FaissIndex("IVF64,Flat", nprobe=64)  # visiting every list makes IVF-Flat exact
    all_lists.add(ids, docs)
    assert all_lists.search(queries, k=10).ids == ref.ids
    assert recall_at_10(one_list.search(queries, k=10), ref) < 0.9
    # 8 x 4-bit codes for 32-d vectors are coarse, but far better than chance (10/5000)
    assert recall_at_10(index.search(queries, k=10), ref) > 0.1


def test_l2_scores_are_negated_distances():
    docs = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    index = FaissIndex("Flat", metric="l2")
    index.add(["origin", "far", "near"], docs)
    res = index.search(np.array([[0.0, 0.0]]), k=3)
    assert res.ids == [["origin", "near", "far"]]
    np.testing.assert_allclose(res.scores, [[0.0, -1.0, -25.0]])


def test_ties_and_k_larger_than_index():
    index = FaissIndex("Flat")
    index.add(["b", "a", "c"], np.ones((3, 2)))
    res = index.search(np.ones((1, 2)), k=10)
    assert res.ids == [["b", "a", "c"]] and res.scores.shape == (1, 3)  # insertion order among ties
    assert FaissIndex().search(np.ones((2, 2)), k=3).ids == [[], []]


@pytest.mark.parametrize(("factory", "kw", "mmap"), [
    ("Flat", {}, False), ("HNSW16", {"ef_search": 40}, True), ("IVF16,Flat", {"nprobe": 4}, True),
])
def test_save_load_round_trip(tmp_path, data, factory, kw, mmap):
    ids, docs, queries, _ = data
    index = FaissIndex(factory, **kw)
    index.add(ids[:1000], docs[:1000])
    before = index.search(queries, k=10)
    index.save(tmp_path / "f")
    params = json.loads((tmp_path / "f" / "params.json").read_text())
    assert params["type"] == "faiss" and params["factory"] == factory and params["count"] == 1000
    loaded = load_index(tmp_path / "f", mmap=mmap)
    assert isinstance(loaded, FaissIndex) and loaded.ids == ids[:1000]
    after = loaded.search(queries, k=10)
    assert after.ids == before.ids
    np.testing.assert_array_equal(after.scores, before.scores)
    if "ef_search" in kw:  # search parameters survive the round trip
        assert loaded.faiss_index.hnsw.efSearch == 40
    if mmap:
        with pytest.raises(ConfigError, match="mmap"):
            loaded.add(["x"], docs[:1])


def test_bad_input_and_config():
    index = FaissIndex("Flat")
    index.add(["a", "b"], np.ones((2, 4)))
    with pytest.raises(DataError, match="dimension 3 but the index has dimension 4"):
        index.search(np.ones((2, 3)), k=1)
    with pytest.raises(DataError, match="2 ids but 1 embeddings"):
        index.add(["c", "d"], np.ones((1, 4)))
    with pytest.raises(DataError, match="already in the index"):
        index.add(["a"], np.ones((1, 4)))
    with pytest.raises(DataError, match="2-D"):
        index.add(["c"], np.ones((1, 1, 4)))
    assert len(index) == 2 and index.faiss_index.ntotal == 2
    with pytest.raises(ConfigError, match="nprobe applies to IVF"):
        FaissIndex("HNSW32", nprobe=8)
    with pytest.raises(ConfigError, match="ef_search applies to HNSW"):
        FaissIndex("Flat", ef_search=8)
    with pytest.raises(ConfigError, match="metric"):
        FaissIndex("Flat", metric="cosine")
    with pytest.raises(ConfigError, match="could not parse"):
        FaissIndex("Bogus12").add(["a"], np.ones((1, 4)))
    with pytest.raises(DataError, match="training"):
        FaissIndex("IVF256,Flat").add([f"d{i}" for i in range(50)], np.ones((50, 4)))


def test_missing_faiss_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(MissingDependencyError, match=r"pip install 'dualist\[faiss\]'"):
        FaissIndex()

"""ExactIndexWriter: an exact index built on disk batch by batch, searched memory-mapped."""

from __future__ import annotations

import numpy as np
import pytest

from dualist.errors import DataError
from dualist.index import ExactIndex, ExactIndexWriter, load_index


def data(n=1000, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    return [f"d{i}" for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_streamed_index_equals_the_in_memory_one(tmp_path, dtype):
    ids, emb = data()
    ref = ExactIndex(dtype=dtype)
    ref.add(ids, emb)
    with ExactIndexWriter(tmp_path / "idx", dtype=dtype) as w:
        for s in range(0, len(ids), 300):  # uneven batches
            w.add(ids[s:s + 300], emb[s:s + 300])
    assert len(w) == 1000
    loaded = load_index(tmp_path / "idx", chunk_size=128)  # many chunks: the mapped corpus is scanned
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.ids == ids and loaded.dim == 24 and loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), ref.embeddings)
    q = np.random.default_rng(1).standard_normal((30, 24)).astype(np.float32)
    a, b = ref.search(q, 15), loaded.search(q, 15)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
    assert np.load(tmp_path / "idx" / "embeddings.npy").shape == (1000, 24)  # a plain .npy file


def test_unfinished_writer_leaves_no_loadable_index(tmp_path):
    ids, emb = data(n=10)
    with pytest.raises(RuntimeError), ExactIndexWriter(tmp_path / "idx") as w:
        w.add(ids, emb)
        raise RuntimeError("encoder crashed")
    with pytest.raises(DataError, match="no params.json"):
        load_index(tmp_path / "idx")


def test_writer_rejects_what_add_rejects(tmp_path):
    ids, emb = data(n=10)
    with ExactIndexWriter(tmp_path / "idx") as w:
        w.add(ids[:5], emb[:5])
        with pytest.raises(DataError, match="already in the index"):
            w.add(ids[:1], emb[:1])
        with pytest.raises(DataError, match="dimension"):
            w.add(["x"], np.ones((1, 3)))
    assert len(load_index(tmp_path / "idx")) == 5


def test_loaded_mapped_index_accepts_more_documents(tmp_path):
    ids, emb = data(n=20)
    with ExactIndexWriter(tmp_path / "idx") as w:
        w.add(ids[:10], emb[:10])
    index = load_index(tmp_path / "idx")
    index.add(ids[10:], emb[10:])  # the mapped rows are read-only; new rows live in memory
    assert index.search(emb[15:16], k=1).ids == [["d15"]]

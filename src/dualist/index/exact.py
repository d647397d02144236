"""Exact inner-product search: the oracle every approximate index is tested against.

The corpus is scanned in chunks of ``chunk_size`` rows. For each chunk the query block's scores are
one matrix product, the chunk's top ``k`` is taken with ``torch.topk`` (numpy ``argpartition`` when
torch is missing) and merged into a running top ``k``, so memory stays at about
``n_queries x chunk_size`` floats whatever the corpus size, and a memory-mapped corpus is read once
per search.

**Ties are deterministic:** documents with equal scores rank by insertion order (the one added first
comes first), including at the ``k``-th place, where the earliest-added of the tied documents are
kept, whatever the ``chunk_size``. (BLAS may sum in another order for other matrix shapes, so the
float32 scores themselves can differ in the last bit between chunk sizes.)

**Corpora larger than memory.** :meth:`ExactIndex.load` memory-maps ``embeddings.npy`` (the default),
so only the chunk being scored has to be in memory, and :class:`ExactIndexWriter` builds such an
index without ever holding all embeddings: each batch is appended to ``embeddings.npy`` as it is
encoded. Searching a mapped index reads the file once per :meth:`~ExactIndex.search` call, so
batch the queries (the server's micro-batching does).

Why not FAISS underneath: on 100k x 384 float32 documents and 300 queries (2 CPU cores),
``faiss.IndexFlatIP.search`` took 0.88 s for k=100 while this path (numpy matmul + ``torch.topk``)
took 0.21 s, and FAISS gives no tie guarantee.

>>> import numpy as np
>>> index = ExactIndex()
>>> index.add(["a", "b", "c"], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
>>> res = index.search(np.array([[1.0, 0.0]]), k=2)
>>> res.ids, res.scores
([['a', 'c']], array([[1., 1.]], dtype=float32))
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dualist._io import atomic_write, progress
from dualist.errors import ConfigError, DataError

from .base import BaseIndex, SearchResults, read_ids, read_params

__all__ = ["ExactIndex", "ExactIndexWriter"]

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
_MAX_BLOCK = 1 << 25  # score-matrix entries per (query block x corpus chunk): 128 MiB of float32
_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class ExactIndex(BaseIndex):
    """Brute-force inner-product top-k over all added embeddings.

    Args:
        chunk_size: corpus rows scored per matrix product; bounds memory, not the result.
        dtype: storage dtype, ``float32`` or ``float16`` (half the memory; scores are computed in
            float32 either way, from the rounded embeddings).

    Saved as ``embeddings.npy`` + ``ids.json`` + ``params.json``; :meth:`load` memory-maps the
    embeddings by default, so opening a large index is instant and shares the OS page cache.
    """

    type_name = "exact"

    def __init__(self, chunk_size: int = 65536, dtype: Any = np.float32):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float16, got {self.dtype}")
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._emb: np.ndarray | None = None  # consolidated rows (possibly a read-only memmap)
        self._pending: list[np.ndarray] = []  # rows added since the last consolidation
        self._dim: int | None = None

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def embeddings(self) -> np.ndarray:
        """All embeddings, ``(len(self), dim)`` in the storage dtype, in insertion order (read-only)."""
        if self._pending:
            parts = ([self._emb] if self._emb is not None else []) + self._pending
            self._emb = np.concatenate(parts) if len(parts) > 1 else parts[0]
            self._pending = []
        if self._emb is None:
            return np.zeros((0, self._dim or 0), dtype=self.dtype)
        view = self._emb.view()
        view.flags.writeable = False
        return view

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Append ``embeddings`` ``(len(ids), dim)`` under ``ids``; the array is copied."""
        ids, emb = self._check_add(ids, embeddings, self._id_set)
        if self._dim is None:
            self._dim = emb.shape[1]
        self._pending.append(emb.astype(self.dtype))  # astype copies: later edits by the caller don't leak in
        self._ids.extend(ids)
        self._id_set.update(ids)

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        """Exact top-``k`` by inner product; ``k`` larger than the index returns every document.

        >>> index = ExactIndex(chunk_size=2)
        >>> index.add(["x", "y", "z"], np.ones((3, 4)))  # all scores tie: insertion order decides
        >>> index.search(np.ones((1, 4)), k=5).ids
        [['x', 'y', 'z']]
        """
        q = self._check_search(queries, k)
        n, nq = len(self), q.shape[0]
        if n == 0:
            return self._empty_results(nq)
        k = min(int(k), n)
        corpus = self.embeddings
        chunk = min(self.chunk_size, n)
        q_block = max(1, min(nq, _MAX_BLOCK // chunk))
        best_s = np.zeros((nq, 0), dtype=np.float32)
        best_i = np.zeros((nq, 0), dtype=np.int64)
        starts = range(0, n, chunk)
        bar = progress(starts, desc="exact search", disable=None if len(starts) > 8 else True, leave=False)
        with _no_grad():
            for start in bar:
                block = np.asarray(corpus[start:start + chunk], dtype=np.float32)
                width = min(k, best_s.shape[1] + block.shape[0])
                new_s = np.empty((nq, width), dtype=np.float32)
                new_i = np.empty((nq, width), dtype=np.int64)
                for qs in range(0, nq, q_block):
                    rows = slice(qs, qs + q_block)
                    s, i = _top_k_sorted(q[rows] @ block.T, k)
                    new_s[rows], new_i[rows] = _merge(best_s[rows], best_i[rows], s, i + start, k)
                best_s, best_i = new_s, new_i
        ids = self._ids
        return SearchResults(ids=[[ids[j] for j in row] for row in best_i.tolist()], scores=best_s)

    def save(self, directory: str | Path) -> Path:
        """Write ``embeddings.npy``, ``ids.json`` and ``params.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / EMBEDDINGS_FILE, "wb") as fh:
            np.save(fh, np.asarray(self.embeddings), allow_pickle=False)
        self._write_common(directory, {"chunk_size": self.chunk_size, "dtype": self.dtype.name})
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True, chunk_size: int | None = None) -> ExactIndex:
        """Open a saved index; ``mmap=True`` maps ``embeddings.npy`` instead of reading it."""
        directory = Path(directory)
        params = read_params(directory, cls.type_name)
        count, dim = int(params["count"]), params["dim"]
        path = directory / EMBEDDINGS_FILE
        emb = np.load(path, mmap_mode="r" if mmap and count else None, allow_pickle=False)
        if emb.shape[0] != count or (count and emb.shape[1] != dim) or emb.dtype.name != params["dtype"]:
            raise DataError(f"embeddings are {emb.shape} {emb.dtype}, params.json says ({count}, {dim}) "
                            f"{params['dtype']}", path=path, hint="the index directory is damaged; rebuild it")
        index = cls(chunk_size=chunk_size or params["chunk_size"], dtype=params["dtype"])
        index._ids = read_ids(directory, count)
        index._id_set = set(index._ids)
        index._dim = dim
        index._emb = emb if count else None
        return index


class ExactIndexWriter:
    """Build a saved :class:`ExactIndex` batch by batch, straight to disk (bounded memory).

    Rows are appended to ``embeddings.npy`` as they come; :meth:`close` writes the final row count
    into the ``.npy`` header, then ``ids.json`` and ``params.json`` (whose presence marks a complete
    index). Only the ids are kept in memory. A writer that is not closed leaves no ``params.json``,
    so a half-written index is never loaded.

    >>> import numpy as np, tempfile
    >>> out = tempfile.mkdtemp()
    >>> with ExactIndexWriter(out, dtype="float16") as w:
    ...     w.add(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    ...     w.add(["c"], np.array([[1.0, 1.0]]))
    >>> index = ExactIndex.load(out)
    >>> index.search(np.array([[0.0, 1.0]]), k=2).ids, type(index.embeddings).__name__
    ([['b', 'c']], 'memmap')
    """

    _HEADER_BYTES = 128  # fixed, so the count can be rewritten in place; any shape fits

    def __init__(self, directory: str | Path, *, dtype: Any = np.float32, chunk_size: int = 65536):
        self.directory = Path(directory)
        self._index = ExactIndex(chunk_size=chunk_size, dtype=dtype)  # validates the settings, checks adds
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "params.json").unlink(missing_ok=True)  # not an index until closed
        self._path = self.directory / EMBEDDINGS_FILE
        self._fh = open(self._path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(b"\0" * self._HEADER_BYTES)
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Append a batch (same checks as :meth:`ExactIndex.add`)."""
        if self._fh is None:
            raise ConfigError("this writer is closed")
        index = self._index
        ids, emb = index._check_add(ids, embeddings, index._id_set)
        if index._dim is None:
            index._dim = emb.shape[1]
        self._fh.write(np.ascontiguousarray(emb, dtype=index.dtype).tobytes())
        index._ids.extend(ids)
        index._id_set.update(ids)
        self._rows += len(ids)

    def close(self) -> Path:
        """Finish the index; returns its directory."""
        if self._fh is None:
            return self.directory
        index = self._index
        self._fh.seek(0)
        self._fh.write(self._header((self._rows, index._dim or 0)))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        index._write_common(self.directory, {"chunk_size": index.chunk_size, "dtype": index.dtype.name})
        return self.directory

    def _header(self, shape: tuple[int, int]) -> bytes:
        descr = np.lib.format.dtype_to_descr(self._index.dtype)
        text = repr({"descr": descr, "fortran_order": False, "shape": shape})
        size = self._HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
        return b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + text.ljust(size - 1).encode("latin1") + b"\n"

    def __enter__(self) -> ExactIndexWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._fh is not None:  # failed: leave no index behind that could pass for complete
            self._fh.close()
            self._fh = None


def _top_k_sorted(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best (score desc, column asc on ties) of a (b, c) matrix; k capped at c."""
    b, c = scores.shape
    if k >= c:
        idx = np.broadcast_to(np.arange(c), (b, c))
    else:
        idx = _top_k_unordered(scores, k)
        kth = np.take_along_axis(scores, idx, axis=1).min(axis=1)
        # Where ties straddle the k-th place, topk kept an arbitrary subset of the tied columns:
        # redo those rows, keeping the lowest-indexed ties.
        n_ge = np.count_nonzero(scores >= kth[:, None], axis=1)
        for r in np.flatnonzero(n_ge > k):
            row = scores[r]
            above = np.flatnonzero(row > kth[r])
            tied = np.flatnonzero(row == kth[r])
            idx[r] = np.concatenate([above, tied[: k - len(above)]])
        idx = np.sort(idx, axis=1)
    vals = np.take_along_axis(scores, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep column order
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1).astype(np.int64)


def _merge(s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted top lists; every index of the first precedes the second, so a stable sort
    by score alone keeps ties in insertion order."""
    if s1.shape[1] == 0:
        return s2[:, :k], i2[:, :k]
    s = np.concatenate([s1, s2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _top_k_unordered(scores: np.ndarray, k: int) -> np.ndarray:
    torch = _torch()
    if torch is not None:  # ~10x faster than argpartition on CPU (multi-threaded selection)
        return torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False).indices.numpy()
    return _top_k_unordered_numpy(scores, k)


def _top_k_unordered_numpy(scores: np.ndarray, k: int) -> np.ndarray:
    c = scores.shape[1]
    return np.argpartition(scores, c - k, axis=1)[:, c - k:]


@functools.cache
def _torch():
    try:
        import torch
    except ImportError:
        logger.debug("torch not importable; exact search selects top-k with numpy")
        return None
    return torch


def _no_grad():
    """``torch.inference_mode()`` when torch is there, else nothing."""
    torch = _torch()
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()

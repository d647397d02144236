"""FAISS indexes (flat, HNSW, IVF, PQ, ...) behind the same contract as :class:`ExactIndex`.

The index is described by a FAISS factory string (``"Flat"``, ``"HNSW32"``, ``"IVF256,Flat"``,
``"IVF256,PQ32"``, ...) and built at the first :meth:`FaissIndex.add`, which also trains it when the
type needs training (IVF, PQ) on the vectors of that first call; call :meth:`FaissIndex.train` first
to train on another sample. Search-time knobs: ``nprobe`` (IVF lists visited) and ``ef_search``
(HNSW beam width; FAISS's default is 16, which can cost recall: raise it to 64+ when recall matters).

Scores are "higher is better" like every dualist index: inner products for ``metric="ip"``, and
**negated squared L2 distances** for ``metric="l2"``. Among returned hits, equal scores rank in
insertion order.

>>> import numpy as np
>>> index = FaissIndex("Flat")
>>> index.add(["a", "b", "c"], np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]))
>>> index.search(np.array([[1.0, 0.0]]), k=2).ids
[['c', 'a']]
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dualist.errors import ConfigError, DataError, MissingDependencyError

from .base import BaseIndex, SearchResults, read_ids, read_params

__all__ = ["FaissIndex"]

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"


def _import_faiss():
    try:
        import faiss
    except ImportError as e:
        raise MissingDependencyError("faiss-cpu", "FaissIndex", "faiss") from e
    return faiss


class FaissIndex(BaseIndex):
    """A FAISS index made from a factory string, mapping FAISS's row numbers back to string ids.

    Args:
        factory: FAISS ``index_factory`` description, e.g. ``"Flat"``, ``"HNSW32"``, ``"IVF256,PQ32"``.
        metric: ``"ip"`` (inner product) or ``"l2"``.
        nprobe: IVF lists to visit per query (IVF indexes only).
        ef_search: HNSW search beam width (HNSW indexes only).

    Saved with ``faiss.write_index`` as ``index.faiss`` + ``ids.json`` + ``params.json``.
    """

    type_name = "faiss"

    def __init__(self, factory: str = "Flat", metric: Literal["ip", "l2"] = "ip", nprobe: int | None = None,
                 ef_search: int | None = None):
        self._faiss = _import_faiss()
        if metric not in ("ip", "l2"):
            raise ConfigError(f"metric must be 'ip' or 'l2', got {metric!r}")
        _check_search_params(factory, nprobe, ef_search)
        self.factory = factory
        self.metric = metric
        self.nprobe = None if nprobe is None else int(nprobe)
        self.ef_search = None if ef_search is None else int(ef_search)
        self._index: Any = None
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._mmapped = False

    # -- state -----------------------------------------------------------------------------------

    @property
    def dim(self) -> int | None:
        return None if self._index is None else int(self._index.d)

    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    @property
    def faiss_index(self) -> Any:
        """The underlying ``faiss.Index`` (``None`` before the first add/train)."""
        return self._index

    def _build(self, dim: int) -> None:
        faiss = self._faiss
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        try:
            self._index = faiss.index_factory(dim, self.factory, metric)
        except RuntimeError as e:
            raise ConfigError(f"FAISS cannot build {self.factory!r}: {_faiss_message(e)}") from e
        self._apply_search_params()

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ``nprobe`` / ``ef_search`` (None keeps the current value), e.g. on a loaded index."""
        _check_search_params(self.factory, nprobe, ef_search)
        if nprobe is not None:
            self.nprobe = int(nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)
        if self._index is not None:
            self._apply_search_params()

    def _apply_search_params(self) -> None:
        space = self._faiss.ParameterSpace()
        for name, value in (("nprobe", self.nprobe), ("efSearch", self.ef_search)):
            if value is not None:
                try:
                    space.set_index_parameter(self._index, name, value)
                except RuntimeError as e:
                    raise ConfigError(f"cannot set {name}={value} on {self.factory!r}: {_faiss_message(e)}") from e

    # -- contract --------------------------------------------------------------------------------

    def train(self, embeddings: np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on a sample; a no-op for Flat/HNSW."""
        emb = self._check_vectors(embeddings, "training vectors")
        if self._index is None:
            self._build(emb.shape[1])
        if not self._index.is_trained:
            try:
                self._index.train(emb)
            except RuntimeError as e:
                raise DataError(f"training {self.factory!r} on {len(emb)} vectors failed: {_faiss_message(e)}",
                                hint="train on more vectors, or use fewer IVF lists / PQ centroids") from e

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Append documents; the first call builds the index and trains it on these vectors if needed."""
        if self._mmapped:
            raise ConfigError("this index was loaded with mmap=True, which is read-only; "
                              "load it with mmap=False to add documents")
        ids, emb = self._check_add(ids, embeddings, self._id_set)
        if self._index is None:
            self._build(emb.shape[1])
        if not self._index.is_trained:
            logger.info("training FAISS %s on the %d vectors of the first add", self.factory, len(emb))
            self.train(emb)
        self._index.add(emb)
        self._ids.extend(ids)
        self._id_set.update(ids)

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        q = self._check_search(queries, k)
        nq = q.shape[0]
        if len(self) == 0:
            return self._empty_results(nq)
        k = min(int(k), len(self))
        scores, rows = self._index.search(q, k)
        if self.metric == "l2":
            scores = -scores
        missing = rows < 0  # an approximate index may find fewer than k
        if missing.any():
            self._warn_short(missing, k)
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        # Deterministic order among returned hits: score desc, then insertion order; misses last.
        keys = np.where(missing, np.iinfo(np.int64).max, rows)
        by_row = np.argsort(keys, axis=1, kind="stable")
        scores, rows = np.take_along_axis(scores, by_row, 1), np.take_along_axis(rows, by_row, 1)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        ids = self._ids
        return SearchResults(ids=[[ids[j] for j in row if j >= 0] for row in rows.tolist()], scores=scores)

    def _warn_short(self, missing: np.ndarray, k: int) -> None:
        """Say so when an approximate search returns fewer results than asked: it costs recall quietly."""
        short = int(missing.any(axis=1).sum())
        found = int(missing.size - missing.sum())
        knob = ("raise nprobe (--nprobe; IVF lists visited per query, now "
                f"{self.nprobe or 'FAISS default 1'})" if "IVF" in self.factory.upper() else
                f"raise ef_search (--ef-search, now {self.ef_search or 'FAISS default 16'})"
                if "HNSW" in self.factory.upper() else "use a less approximate index")
        logger.warning("FAISS %s returned %d of the %d results asked for (%d of %d queries got fewer than "
                       "k=%d); %s", self.factory, found, missing.size, short, missing.shape[0], k, knob)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._index is not None:
            tmp = directory / f".{INDEX_FILE}.{os.getpid()}.tmp"
            try:
                self._faiss.write_index(self._index, str(tmp))
                os.replace(tmp, directory / INDEX_FILE)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._write_common(directory, {"factory": self.factory, "metric": self.metric,
                                       "nprobe": self.nprobe, "ef_search": self.ef_search})
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> FaissIndex:
        """Read a saved index; ``mmap=True`` maps the FAISS file instead of reading it."""
        directory = Path(directory)
        params = read_params(directory, cls.type_name)
        index = cls(factory=params["factory"], metric=params["metric"], nprobe=params.get("nprobe"),
                    ef_search=params.get("ef_search"))
        count = int(params["count"])
        path = directory / INDEX_FILE
        if params["dim"] is not None:
            faiss = index._faiss
            index._index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
            if index._index.ntotal != count or index._index.d != params["dim"]:
                raise DataError(f"FAISS index holds {index._index.ntotal} x {index._index.d}, params.json says "
                                f"{count} x {params['dim']}", path=path, hint="the index directory is damaged")
            index._apply_search_params()
            index._mmapped = mmap
        index._ids = read_ids(directory, count)
        index._id_set = set(index._ids)
        return index


def _check_search_params(factory: str, nprobe: int | None, ef_search: int | None) -> None:
    for name, value, needs in (("nprobe", nprobe, "IVF"), ("ef_search", ef_search, "HNSW")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if needs not in factory.upper():
            raise ConfigError(f"{name} applies to {needs} indexes only, not to {factory!r} "
                              f"(--{name.replace('_', '-')})")


def _faiss_message(e: Exception) -> str:
    """FAISS errors start with a C++ signature and location; keep the part a user can act on."""
    text = str(e).strip()
    for marker in ("Error: ", ":could not", "could not"):
        if marker in text:
            return text[text.index(marker):].lstrip(":").removeprefix("Error: ")
    return text.splitlines()[-1] if text else repr(e)

"""The index contract (docs/architecture.md §2): ``add(ids, embeddings)``, ``search(queries, k)``, ``save``, ``load``.

Similarity is the **inner product**; higher scores are better. For cosine similarity, L2-normalize
documents and queries before adding/searching. An index directory always holds a ``params.json``
whose ``type`` says which class reads it back (:func:`dualist.index.load_index`); no pickle.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dualist._io import read_json, write_json
from dualist.errors import DataError

__all__ = ["BaseIndex", "SearchResults", "PARAMS_FILE", "IDS_FILE"]

PARAMS_FILE = "params.json"
IDS_FILE = "ids.json"
FORMAT_VERSION = 1


@dataclass
class SearchResults:
    """Top hits per query, best first.

    ``ids[i]`` lists query ``i``'s document ids; ``scores[i, j]`` is the score of ``ids[i][j]``.
    ``scores`` is float32 of shape ``(n_queries, k')`` with ``k' = min(k, len(index))``; a row with
    fewer hits than ``k'`` (possible with approximate indexes) is padded with ``-inf``.

    >>> res = SearchResults(ids=[["d2", "d1"]], scores=np.array([[0.9, 0.4]], dtype=np.float32))
    >>> res.to_run(["q1"])
    {'q1': {'d2': 0.8999999761581421, 'd1': 0.4000000059604645}}
    """

    ids: list[list[str]]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def to_run(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """A TREC-style run ``{qid: {doc_id: score}}`` naming queries in search order."""
        if len(query_ids) != len(self.ids):
            raise ValueError(f"{len(query_ids)} query ids for {len(self.ids)} searched queries")
        if len(set(query_ids)) != len(query_ids):
            raise ValueError("duplicate query ids: each query of a run needs its own id")
        return {str(q): {d: float(s) for d, s in zip(hits, row)}
                for q, hits, row in zip(query_ids, self.ids, self.scores)}


class BaseIndex(abc.ABC):
    """An inner-product index from string ids to embeddings.

    Subclasses implement :meth:`add`, :meth:`search`, :meth:`save`, :meth:`load` and :attr:`dim`, and
    keep their ids in ``self._ids`` (``ids`` and ``len()`` read it); the argument checks live here so every index rejects bad input the same way.
    """

    type_name: ClassVar[str]  # the ``type`` written to params.json

    @property
    @abc.abstractmethod
    def dim(self) -> int | None:
        """Embedding dimension; ``None`` until the first :meth:`add`."""

    _ids: list[str]  # every subclass keeps its document ids here, in insertion order

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids in insertion order (a copy)."""
        return list(self._ids)

    @abc.abstractmethod
    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Append documents; ``embeddings`` has shape ``(len(ids), dim)``. Ids must be new."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        """The ``k`` highest inner products for each row of ``queries`` ``(n_queries, dim)``."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path) -> BaseIndex: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, dim={self.dim})"

    # -- shared validation ---------------------------------------------------------------------

    def _check_add(self, ids: Sequence[str], embeddings: Any, known: set[str]) -> tuple[list[str], np.ndarray]:
        """Validate an ``add`` call; return the ids as plain strings and float32 C-ordered embeddings."""
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of strings, not one string")
        ids = list(ids)
        bad = next((i for i in ids if not isinstance(i, str)), None)
        if bad is not None:
            raise TypeError(f"document ids must be strings, got {type(bad).__name__} {bad!r}")
        emb = _as_matrix(embeddings, "embeddings")
        if emb.shape[0] != len(ids):
            raise DataError(f"{len(ids)} ids but {emb.shape[0]} embeddings",
                            hint="pass one embedding row per id")
        if self.dim is not None and emb.shape[1] != self.dim:
            raise DataError(f"embeddings have dimension {emb.shape[1]} but the index has dimension {self.dim}")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise DataError(f"duplicate document id {dup!r} in this batch")
        clash = next((i for i in ids if i in known), None)
        if clash is not None:
            raise DataError(f"document id {clash!r} is already in the index")
        return [str(i) for i in ids], emb

    def _check_search(self, queries: Any, k: int) -> np.ndarray:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return self._check_vectors(queries, "queries")

    def _check_vectors(self, x: Any, what: str) -> np.ndarray:
        arr = _as_matrix(x, what)
        if self.dim is not None and arr.shape[1] != self.dim:
            raise DataError(f"{what} have dimension {arr.shape[1]} but the index has dimension {self.dim}")
        return arr

    def _empty_results(self, n_queries: int) -> SearchResults:
        return SearchResults(ids=[[] for _ in range(n_queries)], scores=np.zeros((n_queries, 0), np.float32))

    # -- params.json / ids.json ----------------------------------------------------------------

    def _write_common(self, directory: Path, params: dict[str, Any]) -> None:
        from dualist import __version__

        write_json(directory / IDS_FILE, self.ids, indent=0)
        # params.json goes last: its presence marks a complete index directory.
        write_json(directory / PARAMS_FILE, {"type": self.type_name, "format_version": FORMAT_VERSION,
                                             "dim": self.dim, "count": len(self),
                                             "dualist_version": __version__, **params})


def read_params(directory: str | Path, expected_type: str | None = None) -> dict[str, Any]:
    """Read an index directory's ``params.json``, checking its ``type`` when given."""
    path = Path(directory) / PARAMS_FILE
    if not path.exists():
        raise DataError("not an index directory (no params.json)", path=directory,
                        hint="save an index with index.save(dir) first")
    params = read_json(path)
    if expected_type is not None and params.get("type") != expected_type:
        raise DataError(f"index type is {params.get('type')!r}, not {expected_type!r}", path=path,
                        hint="use dualist.index.load_index(dir) to load any index type")
    return params


def read_ids(directory: str | Path, count: int) -> list[str]:
    path = Path(directory) / IDS_FILE
    ids = read_json(path)
    if not isinstance(ids, list) or len(ids) != count:
        raise DataError(f"expected a list of {count} ids", path=path, hint="the index directory is damaged")
    return ids


def _as_matrix(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (n, dim), got shape {arr.shape}",
                        hint="use x[None, :] for a single vector" if arr.ndim == 1 else None)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise DataError(f"{what} contain NaN or infinite values", hint="check the encoder's output")
    return arr

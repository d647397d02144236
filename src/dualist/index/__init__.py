"""Indexes over document embeddings (docs/architecture.md §2): exact search and FAISS, one small contract.

Similarity is the inner product (for cosine, L2-normalize first). ``ExactIndex`` is the oracle;
``FaissIndex`` wraps any FAISS factory string; ``MilvusIndex`` a Milvus collection (milvus-lite
or a server). Both save to a directory with a ``params.json`` that
:func:`load_index` dispatches on.

>>> import numpy as np, tempfile
>>> index = ExactIndex()
>>> index.add(["d1", "d2"], np.array([[0.6, 0.8], [1.0, 0.0]]))
>>> path = index.save(tempfile.mkdtemp())
>>> load_index(path).search(np.array([[0.0, 1.0]]), k=1).to_run(["q1"])
{'q1': {'d1': 0.800000011920929}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualist.errors import DataError

from .base import BaseIndex, SearchResults, read_params
from .exact import ExactIndex, ExactIndexWriter
from .faiss_index import FaissIndex
from .milvus_index import MilvusIndex

__all__ = ["BaseIndex", "SearchResults", "ExactIndex", "ExactIndexWriter", "FaissIndex", "MilvusIndex", "load_index", "INDEX_TYPES"]

# params.json "type" -> class that reads it
INDEX_TYPES: dict[str, type[BaseIndex]] = {ExactIndex.type_name: ExactIndex, FaissIndex.type_name: FaissIndex,
                                           MilvusIndex.type_name: MilvusIndex}


def load_index(directory: str | Path, **kwargs: Any) -> BaseIndex:
    """Load any saved index; ``kwargs`` go to that class's ``load`` (e.g. ``mmap=``)."""
    params = read_params(directory)
    cls = INDEX_TYPES.get(params.get("type"))
    if cls is None:
        raise DataError(f"unknown index type {params.get('type')!r}; known: {sorted(INDEX_TYPES)}",
                        path=Path(directory) / "params.json")
    return cls.load(directory, **kwargs)

"""Milvus behind the index contract: milvus-lite (a local folder, no server) by default, a Milvus
server or cluster by URI, the same code either way.

Documents are rows of one collection: an ``INT64`` primary key (the insertion row; ``ids.json``
maps it back to the string id) and a ``FLOAT_VECTOR``. The vector index is chosen by
``index_type`` (``FLAT`` = exact, ``HNSW``, ``IVF_FLAT``) and ``quantization``:

============  =====================  ================================
quantization  FLAT / IVF_FLAT         HNSW
============  =====================  ================================
``none``      FLAT / IVF_FLAT         HNSW
``int8``      IVF_SQ8                 HNSW_SQ (``sq_type=SQ8``)
``binary``    IVF_RABITQ (1 bit/dim)  IVF_RABITQ (1 bit/dim)
============  =====================  ================================

With quantization (or ``rescore > 1``) the search asks Milvus for ``rescore × k`` candidates and
re-scores them **exactly** with their float vectors (Milvus keeps the raw vectors; they come back as
an output field), so quantization costs recall only where the true top ``k`` falls outside the
candidates. ``binary`` is for Milvus servers (2.6+, RaBitQ's 1-bit codes of the float vectors) and is
refused on milvus-lite, which (version 3.2) has no ``BINARY_VECTOR`` field and whose index factory
builds only FLAT, HNSW, HNSW_SQ, IVF_FLAT and IVF_SQ8 (an unknown type fails in its background
indexer, and searches then silently scan unindexed segments). HNSW and IVF in milvus-lite are
built with faiss-cpu, which the ``[milvus]`` extra therefore includes.

On a server the same code runs; it is tested against the standalone Milvus 2.3.5 that the
``milvus`` wheel runs (the ``[milvus-server]`` extra, ``milvus-server`` command). That server
builds FLAT, HNSW, IVF_FLAT and IVF_SQ8 and refuses HNSW_SQ and IVF_RABITQ: the refusal becomes a
:class:`~dualist.errors.ConfigError`, and the collection pymilvus created before the index is
dropped again.

Scores are inner products ("higher is better"); returned hits are ordered by score, then insertion
order, like every dualist index. ``save(dir)`` writes ``params.json`` and ``ids.json``; a
milvus-lite database created by the index itself lives in ``dir/milvus.db`` (a folder), a given URI
is recorded as is.

Example (needs ``pip install 'dualist[milvus]'``)::

    index = MilvusIndex(index_type="HNSW", quantization="int8")   # or MilvusIndex("http://host:19530")
    index.add(doc_ids, doc_embeddings)
    index.save("index/milvus")                                     # load_index("index/milvus") reconnects
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dualist.errors import ConfigError, DataError, MissingDependencyError

from .base import BaseIndex, SearchResults, read_ids, read_params

__all__ = ["MilvusIndex"]

logger = logging.getLogger(__name__)

LITE_DIR = "milvus.db"
TOKEN_ENV = "DUALIST_MILVUS_TOKEN"  # a server token (user:password or an API key)
_VEC, _PK = "vec", "pk"
_INSERT_ROWS = 10000
_MAX_TOPK = 16384  # Milvus' limit on one search's topk
IndexType = Literal["FLAT", "HNSW", "IVF_FLAT"]
Quantization = Literal["none", "int8", "binary"]


def _import_pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise MissingDependencyError("pymilvus", "MilvusIndex", "milvus") from e
    return pymilvus


def _hit_pk(hit: Any) -> int:
    """A search hit's primary key. pymilvus keys it by the field name the server reports (``pk``:
    milvus-lite 3.2) or, from a server that reports none (Milvus 2.3), by ``id``."""
    return hit[_PK] if _PK in hit else hit["id"]


def _server_version(client: Any) -> str:
    try:
        return f"version {client.get_server_version()}"
    except Exception:  # only for the message
        return "version unknown"


def _is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


class MilvusIndex(BaseIndex):
    """A Milvus collection as a dualist index.

    Args:
        uri: a milvus-lite path (``something.db``) or a server URI (``http://host:19530``); None: a
            milvus-lite database that :meth:`save` moves into the index folder.
        collection: collection name.
        index_type: ``FLAT`` (exact), ``HNSW`` or ``IVF_FLAT``.
        quantization: ``none``, ``int8`` (scalar quantization) or ``binary`` (RaBitQ, 1 bit per dimension).
        rescore: fetch ``rescore × k`` candidates and re-score them exactly (default 4 with
            quantization, else 1 = Milvus' own scores).
        build_params: index build parameters (defaults: HNSW ``M=16, efConstruction=200``; IVF ``nlist=128``).
        search_params: search parameters (defaults: HNSW ``ef=max(64, candidates)``; IVF ``nprobe=16``).
        token: credentials for a server (``user:password`` or an API key); None: the environment
            variable ``DUALIST_MILVUS_TOKEN`` if set (how ``dualist index``, ``search`` and ``serve`` get
            it, so that a secret never sits on a command line or in ``params.json``).
    """

    type_name = "milvus"

    def __init__(self, uri: str | None = None, *, collection: str = "dualist", index_type: IndexType = "FLAT",
                 quantization: Quantization = "none", rescore: int | None = None,
                 build_params: dict[str, Any] | None = None, search_params: dict[str, Any] | None = None,
                 token: str | None = None):
        self._pymilvus = _import_pymilvus()
        if index_type not in ("FLAT", "HNSW", "IVF_FLAT"):
            raise ConfigError(f"index_type must be FLAT, HNSW or IVF_FLAT, got {index_type!r}")
        if quantization not in ("none", "int8", "binary"):
            raise ConfigError(f"quantization must be none, int8 or binary, got {quantization!r}")
        if quantization == "binary" and (uri is None or _is_lite(uri)):
            raise ConfigError("binary quantization needs a Milvus server (IVF_RABITQ): milvus-lite has no "
                              "BINARY_VECTOR field and no RaBitQ index (its index factory builds FLAT, HNSW, "
                              "HNSW_SQ, IVF_FLAT and IVF_SQ8); use quantization='int8' with milvus-lite")
        rescore = (4 if quantization != "none" else 1) if rescore is None else rescore
        if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 1:
            raise ConfigError(f"rescore must be a positive integer, got {rescore!r}")
        self.uri, self.collection, self.index_type = uri, collection, index_type
        self.quantization, self.rescore = quantization, rescore
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.build_params = dict(build_params or {})
        self.search_params = dict(search_params or {})
        self._client: Any = None
        self._tmp: str | None = None  # a temporary lite database, for searches before save()
        self._staged: list[np.ndarray] = []  # uri=None: rows kept until save() gives the database a home
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._dim: int | None = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def milvus_index_type(self) -> str:
        """The Milvus index actually built (quantization folded in)."""
        if self.quantization == "int8":
            return "HNSW_SQ" if self.index_type == "HNSW" else "IVF_SQ8"
        if self.quantization == "binary":
            return "IVF_RABITQ"
        return self.index_type

    def _index_params(self) -> dict[str, Any]:
        kind = self.milvus_index_type
        if kind.startswith("HNSW"):
            params = {"M": 16, "efConstruction": 200}
            if kind == "HNSW_SQ":
                params["sq_type"] = "SQ8"
        elif kind.startswith("IVF"):
            params = {"nlist": 128}
        else:
            params = {}
        return {**params, **self.build_params}

    def _search_params(self, limit: int) -> dict[str, Any]:
        kind = self.milvus_index_type
        if kind.startswith("HNSW"):
            params = {"ef": max(64, limit)}
        elif kind.startswith("IVF"):
            params = {"nprobe": 16}
        else:
            params = {}
        return {"metric_type": "IP", "params": {**params, **self.search_params}}

    def _open(self, uri: str) -> Any:
        kwargs = {"token": self.token} if self.token else {}
        if _is_lite(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = self._pymilvus.MilvusClient(uri=uri, **kwargs)
        except Exception as e:
            hint = ("pip install 'dualist[milvus]' (milvus-lite runs local files on Linux and macOS)"
                    if _is_lite(uri) else "check that the Milvus server is running and reachable")
            raise DataError(f"cannot open Milvus at {uri}: {e}", hint=hint) from e
        self._uri_open = uri
        return self._client

    def _connect(self) -> Any:
        if self._client is None:
            if self.uri is not None:
                return self._open(self.uri)
            # searched before save(): a temporary lite database holds the staged rows
            self._tmp = tempfile.mkdtemp(prefix="dualist-milvus-")
            self._materialize(str(Path(self._tmp) / LITE_DIR))
        return self._client

    def _create(self, dim: int) -> None:
        client, dt = self._connect(), self._pymilvus.DataType
        if client.has_collection(self.collection):
            raise DataError(f"Milvus collection {self.collection!r} already exists at {self._uri_open}",
                            hint="choose another collection name, or load the saved index with load_index(dir)")
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_PK, dt.INT64, is_primary=True)
        schema.add_field(_VEC, dt.FLOAT_VECTOR, dim=dim)
        index_params = client.prepare_index_params()
        index_params.add_index(_VEC, index_type=self.milvus_index_type, metric_type="IP",
                               params=self._index_params())
        try:
            client.create_collection(self.collection, schema=schema, index_params=index_params)
        except Exception as e:
            # pymilvus creates the collection, then its index: a refused index leaves an unindexed collection
            if client.has_collection(self.collection):
                client.drop_collection(self.collection)
            if "index type" not in str(e).lower():
                raise
            raise ConfigError(f"Milvus at {self._uri_open} ({_server_version(client)}) refuses the index type "
                              f"{self.milvus_index_type} ({self.index_type} with quantization={self.quantization!r}): "
                              f"{e}; FLAT, HNSW, IVF_FLAT and IVF_FLAT with int8 (IVF_SQ8) build on every Milvus "
                              "server and on milvus-lite; HNSW with int8 (HNSW_SQ) and binary (IVF_RABITQ) need a "
                              "newer server") from e
        self._dim = dim

    # -- contract --------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        ids, emb = self._check_add(ids, embeddings, self._id_set)
        if self.uri is None:
            # No home yet: keep the rows until save() (or a search) creates the database, since a
            # milvus-lite folder cannot be moved once opened.
            self._staged.append(emb)
            self._dim = self._dim or emb.shape[1]
            self._drop_tmp()
        else:
            if self._dim is None or not self._connect().has_collection(self.collection):
                self._create(emb.shape[1])
            self._insert(len(self._ids), emb)
        self._ids.extend(ids)
        self._id_set.update(ids)
        self._loaded = False

    def _insert(self, start: int, emb: np.ndarray) -> None:
        client = self._connect()
        for s in range(0, len(emb), _INSERT_ROWS):
            block = emb[s:s + _INSERT_ROWS]
            client.insert(self.collection, [{_PK: start + s + i, _VEC: row} for i, row in enumerate(block)])

    def _materialize(self, uri: str) -> None:
        """Create the collection at ``uri`` from the staged rows."""
        self.close()
        self._open(uri)
        self._create(self._dim)
        if self._staged:
            self._insert(0, np.concatenate(self._staged))

    def _drop_tmp(self) -> None:
        if self._tmp is not None:
            self.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _ensure_loaded(self) -> None:
        if not getattr(self, "_loaded", False):
            client = self._connect()
            client.flush(self.collection)
            client.load_collection(self.collection)
            self._loaded = True

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        q = self._check_search(queries, k)
        nq = q.shape[0]
        if len(self) == 0:
            return self._empty_results(nq)
        k = min(int(k), len(self))
        limit = min(len(self), k * self.rescore, _MAX_TOPK)
        if k > limit:
            raise ConfigError(f"k={k} is over Milvus' limit of {_MAX_TOPK} hits per query")
        self._ensure_loaded()
        rescoring = self.rescore > 1
        hits = self._connect().search(self.collection, data=q, limit=limit, anns_field=_VEC,
                                      search_params=self._search_params(limit),
                                      output_fields=[_VEC] if rescoring else [])
        rows = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        for i, found in enumerate(hits):
            if not found:
                continue
            r = np.fromiter((_hit_pk(h) for h in found), dtype=np.int64, count=len(found))
            if rescoring:
                vecs = np.asarray([h["entity"][_VEC] for h in found], dtype=np.float32)
                s = vecs @ q[i]
            else:
                s = np.fromiter((h["distance"] for h in found), dtype=np.float32, count=len(found))
            order = np.lexsort((r, -s))[:k]  # score desc, then insertion order: deterministic ties
            rows[i, :len(order)], scores[i, :len(order)] = r[order], s[order]
        ids = self._ids
        return SearchResults(ids=[[ids[j] for j in row if j >= 0] for row in rows.tolist()], scores=scores)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.uri is None:  # our own lite database: created now, in the index folder
            target = directory / LITE_DIR
            self._drop_tmp()
            if target.exists():
                shutil.rmtree(target)
            if self._dim is not None:
                self._materialize(str(target))
            self.uri, self._staged = str(target), []
        elif self._client is not None and self._dim is not None:
            self._client.flush(self.collection)
        uri = self.uri
        if _is_lite(uri) and Path(uri).resolve().parent == directory.resolve():
            stored = Path(uri).name  # inside the index folder: the folder stays relocatable
        else:
            stored = str(Path(uri).resolve()) if _is_lite(uri) else uri
        self._write_common(directory, {"uri": stored, "collection": self.collection, "index_type": self.index_type,
                                       "quantization": self.quantization, "rescore": self.rescore,
                                       "build_params": self.build_params, "search_params": self.search_params})
        return directory

    @classmethod
    def load(cls, directory: str | Path, token: str | None = None) -> MilvusIndex:
        """Reconnect to the collection a saved index names (a server URI needs the server running)."""
        directory = Path(directory)
        params = read_params(directory, cls.type_name)
        uri = params["uri"]
        if _is_lite(uri) and not Path(uri).is_absolute():
            uri = str(directory / uri)
        index = cls(uri, collection=params["collection"], index_type=params["index_type"],
                    quantization=params["quantization"], rescore=params["rescore"],
                    build_params=params.get("build_params"), search_params=params.get("search_params"), token=token)
        count = int(params["count"])
        index._ids = read_ids(directory, count)
        index._id_set = set(index._ids)
        index._dim = params["dim"]
        if count:
            client = index._connect()
            if not client.has_collection(index.collection):
                raise DataError(f"Milvus at {uri} has no collection {index.collection!r}", path=directory,
                                hint="it was dropped, or the URI points elsewhere; rebuild the index")
            stored = client.get_collection_stats(index.collection).get("row_count")
            if stored is not None and int(stored) != count:
                raise DataError(f"collection {index.collection!r} holds {stored} rows, params.json says {count}",
                                path=directory, hint="the collection changed since the index was saved; rebuild it")
        return index

    def drop(self) -> None:
        """Delete the collection from Milvus (the saved folder's params.json then points at nothing)."""
        client = self._connect()
        if client.has_collection(self.collection):
            client.drop_collection(self.collection)
        self._ids, self._id_set, self._dim, self._loaded = [], set(), None, False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._loaded = None, False

    def __del__(self) -> None:
        try:
            self._drop_tmp()
        except Exception:
            pass

"""The search service behind the HTTP layer: a student, an index, optionally BM25 and a re-ranker.

Everything is loaded once (:meth:`SearchService.from_config`); :meth:`SearchService.search_batch`
answers many queries with one query-encoder forward pass, one index search, one BM25 search and one
cross-encoder call, and :meth:`SearchService.rerank_batch` many re-rank requests with one cross-encoder
call: what the two micro-batchers feed them. No FastAPI here: the service is a
plain object, usable and testable without a server.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dualist.errors import ConfigError

from .config import ServeConfig

__all__ = ["SearchService", "SearchQuery", "Hit"]

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]


@dataclass
class SearchQuery:
    """One query of a batch: what ``POST /search`` asks for, already validated."""

    query: str
    k: int = 10
    mode: SearchMode = "dense"
    fusion: Literal["rrf", "sum"] = "rrf"
    rerank: bool = False
    rerank_depth: int = 50


@dataclass
class Hit:
    id: str
    score: float


class SearchService:
    """A loaded student + index (+ corpus texts, BM25, re-ranker), answering batches of queries.

    Args:
        model: a :class:`~dualist.models.DualEncoder` (or its quantized copy).
        index: any :class:`~dualist.index.BaseIndex` holding the model's document embeddings.
        dataset: a :class:`~dualist.data.Dataset` for document texts (BM25, hybrid, re-rank), or None.
        bm25: a :class:`~dualist.candidates.BM25Retriever` over the same corpus, or None.
        reranker: a :class:`~dualist.models.CrossEncoder` (or any model with ``score``), or None.
    """

    def __init__(self, model: Any, index: Any, *, dataset: Any = None, bm25: Any = None, reranker: Any = None,
                 rrf_k: float = 60.0, hybrid_depth: int = 100):
        self.model, self.index, self.dataset = model, index, dataset
        self.bm25, self.reranker = bm25, reranker
        self.rrf_k, self.hybrid_depth = rrf_k, hybrid_depth

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> SearchService:
        """Load the model(s), index, corpus and BM25 that ``cfg`` names, once."""
        from dualist.evaluation.modes import search_space, encode_corpus
        from dualist.index import ExactIndex, load_index
        from dualist.stages import load_dataset, load_model, model_kind

        cfg.check()
        t0 = time.time()
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        if model_kind(cfg.model) != "dual_encoder":
            raise ConfigError(f"--model {cfg.model} is a cross-encoder; serve needs a dual-encoder "
                              "(give the cross-encoder as --reranker)")
        model = load_model(cfg.model, precision=cfg.precision)
        dataset = load_dataset(cfg.data) if cfg.data else None
        if cfg.index:
            index = load_index(cfg.index)
        else:
            ids, emb = encode_corpus(model, dataset)
            index = ExactIndex()
            index.add(ids, search_space(model, emb))
        bm25 = None
        if dataset is not None:
            from dualist.candidates import BM25Retriever

            bm25 = BM25Retriever().index(dataset.corpus, show_progress=False)
        reranker = None
        if cfg.reranker:
            reranker = load_model(cfg.reranker, precision=cfg.precision)
        logger.info("loaded model, %s%s%s in %.1fs", index, ", BM25" if bm25 else "",
                    ", re-ranker" if reranker else "", time.time() - t0)
        return cls(model, index, dataset=dataset, bm25=bm25, reranker=reranker, rrf_k=cfg.rrf_k,
                   hybrid_depth=cfg.hybrid_depth)

    # ------------------------------------------------------------------ capabilities
    def modes(self) -> list[str]:
        return ["dense"] + (["bm25", "hybrid"] if self.bm25 is not None else [])

    def unavailable(self, q: SearchQuery) -> str | None:
        """Why this server cannot answer ``q`` (None when it can)."""
        if q.mode != "dense" and self.bm25 is None:
            return f"mode {q.mode!r} needs the corpus: start the server with --data (available: {self.modes()})"
        if q.rerank and self.reranker is None:
            return "rerank=true needs a cross-encoder: start the server with --reranker"
        if q.rerank and self.dataset is None:
            return "rerank=true needs document texts: start the server with --data"
        return None

    def info(self) -> dict[str, Any]:
        return {"documents": len(self.index), "dim": self.index.dim, "index": type(self.index).__name__,
                "modes": self.modes(), "reranker": self.reranker is not None}

    # ------------------------------------------------------------------ work (on the model thread)
    def encode(self, texts: list[str], kind: Literal["query", "doc"] = "query") -> np.ndarray:
        enc = self.model.encode_queries if kind == "query" else self.model.encode_docs
        return enc(texts, batch_size=max(1, len(texts)), show_progress=False)

    def rerank(self, query: str, docs: list[str]) -> np.ndarray:
        """Scores of ``docs`` for ``query``: the cross-encoder's, or the student's without one."""
        return self.rerank_batch([(query, docs)])[0]

    def rerank_batch(self, requests: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        """Scores of each ``(query, docs)`` request, from one model call over all their pairs.

        The pairs of every request go through the cross-encoder together (it sorts them by length and
        pads per mini-batch), so several small requests fill its batches instead of each running its own.
        """
        queries = [q for q, docs in requests for _ in docs]
        docs = [d for _, ds in requests for d in ds]
        if not docs:
            scores = np.zeros(0, np.float32)
        elif self.reranker is not None:
            scores = self.reranker.score(queries, docs, batch_size=64, show_progress=False)
        else:
            scores = self.model.score(queries, docs)
        bounds = np.cumsum([0] + [len(ds) for _, ds in requests])
        return [np.asarray(scores[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def doc_text(self, did: str) -> str:
        return self.dataset.doc_text(did)

    def search_batch(self, queries: list[SearchQuery]) -> list[list[Hit]]:
        """Answer every query of the batch with one forward pass per model."""
        from dualist.evaluation.fusion import fuse
        from dualist.evaluation.modes import search_space

        keys = [str(i) for i in range(len(queries))]
        depth = {key: max(q.k, q.rerank_depth if q.rerank else 0) for key, q in zip(keys, queries)}
        runs: dict[str, dict[str, float]] = {}

        dense = [i for i, q in enumerate(queries) if q.mode in ("dense", "hybrid")]
        dense_runs: dict[str, dict[str, float]] = {}
        if dense:
            emb = self.encode([queries[i].query for i in dense])
            k_dense = max(max(depth[keys[i]], self.hybrid_depth if queries[i].mode == "hybrid" else 0)
                          for i in dense)
            res = self.index.search(search_space(self.model, emb, query=True), k_dense)
            dense_runs = res.to_run([keys[i] for i in dense])

        lexical = [i for i, q in enumerate(queries) if q.mode in ("bm25", "hybrid")]
        bm25_runs: dict[str, dict[str, float]] = {}
        if lexical:
            k_bm25 = max(max(depth[keys[i]], self.hybrid_depth if queries[i].mode == "hybrid" else 0)
                         for i in lexical)
            bm25_runs = self.bm25.search({keys[i]: queries[i].query for i in lexical}, k=k_bm25,
                                         show_progress=False)

        for key, q in zip(keys, queries):
            if q.mode == "dense":
                runs[key] = dense_runs.get(key, {})
            elif q.mode == "bm25":
                runs[key] = bm25_runs.get(key, {})
            else:
                pair = [{key: bm25_runs.get(key, {})}, {key: dense_runs.get(key, {})}]
                runs[key] = fuse(pair, q.fusion, rrf_k=self.rrf_k).get(key, {})
            runs[key] = dict(list(runs[key].items())[:depth[key]])

        reranked = [key for key, q in zip(keys, queries) if q.rerank and runs[key]]
        if reranked:
            pairs = [(key, d) for key in reranked for d in list(runs[key])[:queries[int(key)].rerank_depth]]
            scores = self.reranker.score([queries[int(key)].query for key, _ in pairs],
                                         [self.doc_text(d) for _, d in pairs], batch_size=64, show_progress=False)
            new: dict[str, dict[str, float]] = {key: {} for key in reranked}
            for (key, d), s in zip(pairs, scores):
                new[key][d] = float(s)
            for key in reranked:
                runs[key] = new[key]

        from dualist.evaluation.metrics import rank_documents

        out = []
        for key, q in zip(keys, queries):
            docs = runs[key]
            out.append([Hit(d, float(docs[d])) for d in rank_documents(docs)[:q.k]])
        return out

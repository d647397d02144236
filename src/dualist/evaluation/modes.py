"""The two evaluation modes of docs/architecture.md §4.

* **Re-rank** (the paper's): a model re-scores the same candidate run (BM25 top-K) per query.
* **Retrieval** (a dual-encoder's real job): search the whole corpus with the model's embeddings.
* **Hybrid** retrieval: BM25 and the dual-encoder's full-corpus search, fused
  (:mod:`dualist.evaluation.fusion`: reciprocal rank fusion or a normalized-score sum).

Both return plain runs ``dict[qid, dict[did, float]]`` so :func:`dualist.evaluation.evaluate`
scores them like any TREC run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dualist.data import Dataset
    from dualist.index import BaseIndex
    from dualist.models import CrossEncoder, DualEncoder

__all__ = ["rerank", "retrieve", "top_k", "encode_corpus", "index_corpus", "search_space", "hybrid"]

logger = logging.getLogger(__name__)


def top_k(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """Keep each query's ``k`` best candidates in trec_eval order (score desc, ties by doc id desc).

    Using the evaluator's own order means a cut run evaluates exactly like the uncut one at depth k.
    """
    from dualist.evaluation.metrics import rank_documents

    return {qid: {d: docs[d] for d in rank_documents(docs)[:k]} for qid, docs in run.items()}


def _is_cross_encoder(model: DualEncoder | CrossEncoder) -> bool:
    from dualist.models import CrossEncoder

    return isinstance(model, CrossEncoder)


def encode_corpus(model: DualEncoder, dataset: Dataset, doc_ids: list[str] | None = None, *, batch_size: int = 64,
                  show_progress: bool | None = None) -> tuple[list[str], np.ndarray]:
    """Embed documents (all of the corpus by default) with a dual-encoder; returns ``(ids, embeddings)``."""
    ids = list(dataset.corpus) if doc_ids is None else list(doc_ids)
    emb = model.encode_docs([dataset.doc_text(d) for d in ids], batch_size=batch_size,
                            show_progress=show_progress)
    return ids, emb


def index_corpus(model: DualEncoder, dataset: Dataset, index: Any, *, batch_size: int = 64,
                 slice_docs: int = 16384, show_progress: bool | None = None) -> Any:
    """Embed the corpus ``slice_docs`` documents at a time into ``index`` (in the model's search space).

    ``index`` is anything with ``add(ids, embeddings)``: an index, or an
    :class:`~dualist.index.ExactIndexWriter`, which keeps memory bounded whatever the corpus size.
    """
    ids = list(dataset.corpus)
    for start in range(0, len(ids), slice_docs):
        part, emb = encode_corpus(model, dataset, ids[start:start + slice_docs], batch_size=batch_size,
                                  show_progress=show_progress)
        index.add(part, search_space(model, emb))
    return index


def rerank(model: DualEncoder | CrossEncoder, dataset: Dataset, queries: dict[str, str],
           candidates: dict[str, dict[str, float]], *, depth: int = 100, batch_size: int = 64,
           show_progress: bool | None = None,
           doc_embeddings: tuple[list[str], np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Re-score each query's top-``depth`` candidates with ``model`` (cross- or dual-encoder).

    A dual-encoder embeds every distinct candidate document once (or reuses ``doc_embeddings``,
    e.g. the corpus embeddings already computed for retrieval mode), then scores by its similarity.
    Queries missing from ``candidates`` get an empty ranking and count as misses downstream.
    """
    cands = top_k({q: candidates.get(q, {}) for q in queries}, depth)
    if _is_cross_encoder(model):
        pairs = [(q, d) for q, docs in cands.items() for d in docs]
        scores = model.score([queries[q] for q, _ in pairs], [dataset.doc_text(d) for _, d in pairs],
                             batch_size=batch_size, show_progress=show_progress)
        out: dict[str, dict[str, float]] = {q: {} for q in cands}
        for (q, d), s in zip(pairs, scores):
            out[q][d] = float(s)
        return out

    qids = list(cands)
    q_emb = model.encode_queries([queries[q] for q in qids], batch_size=batch_size,
                                 show_progress=show_progress)
    needed = sorted({d for docs in cands.values() for d in docs})
    if doc_embeddings is not None:
        pos = {d: i for i, d in enumerate(doc_embeddings[0])}
        missing = [d for d in needed if d not in pos]
        if missing:
            raise KeyError(f"{len(missing)} candidate documents have no embedding (e.g. {missing[:3]})")
        d_ids, d_emb = needed, doc_embeddings[1][[pos[d] for d in needed]]
    else:
        d_ids, d_emb = encode_corpus(model, dataset, needed, batch_size=batch_size,
                                     show_progress=show_progress)
    row = {d: i for i, d in enumerate(d_ids)}
    out = {}
    for qi, q in enumerate(qids):
        docs = list(cands[q])
        if not docs:
            out[q] = {}
            continue
        s = model.score_embeddings(q_emb[qi : qi + 1], d_emb[[row[d] for d in docs]])[0]
        out[q] = {d: float(v) for d, v in zip(docs, s)}
    return out


def retrieve(model: DualEncoder, dataset: Dataset, queries: dict[str, str], *, k: int = 100,
             index: BaseIndex | None = None,
             batch_size: int = 64, show_progress: bool | None = None,
             doc_embeddings: tuple[list[str], np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Full-corpus search with a dual-encoder: exact inner product unless an ``index`` is given.

    Scores equal ``model.score_embeddings`` (inner product, cosine or temperature applied as the model
    defines); documents are embedded once, or taken from ``doc_embeddings``/``index``.
    """
    from dualist.index import ExactIndex

    if index is None:
        ids, emb = doc_embeddings if doc_embeddings is not None else encode_corpus(
            model, dataset, batch_size=batch_size, show_progress=show_progress)
        index = ExactIndex()
        index.add(ids, search_space(model, emb))
    qids = list(queries)
    q_emb = model.encode_queries([queries[q] for q in qids], batch_size=batch_size,
                                 show_progress=show_progress)
    res = index.search(search_space(model, q_emb, query=True), k)
    return res.to_run(qids)


def hybrid(model: DualEncoder, dataset: Dataset, queries: dict[str, str], *, k: int = 100, method: str = "rrf",
           depth: int = 100, index: Any = None, bm25_run: dict[str, dict[str, float]] | None = None,
           dense_run: dict[str, dict[str, float]] | None = None, rrf_k: float = 60,
           weights: tuple[float, float] | None = None, batch_size: int = 64, show_progress: bool | None = None,
           doc_embeddings: tuple[list[str], np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """BM25 + dense retrieval fused per query (``method`` ``"rrf"`` or ``"sum"``); each query's best ``k``.

    Each side contributes its top ``depth``: a given ``bm25_run`` (e.g. the BM25 candidate run a
    pipeline already has) or a fresh BM25 search with Pyserini's defaults, and a given ``dense_run``
    or :func:`retrieve` over ``index`` (or the exact inner product). ``weights`` are (BM25, dense).
    """
    from dualist.evaluation.fusion import fuse

    if bm25_run is None:
        from dualist.candidates import BM25Retriever

        bm25_run = BM25Retriever().index(dataset.corpus, show_progress=show_progress).search(
            queries, k=depth, show_progress=show_progress)
    if dense_run is None:
        dense_run = retrieve(model, dataset, queries, k=depth, index=index, batch_size=batch_size,
                             show_progress=show_progress, doc_embeddings=doc_embeddings)
    runs = [top_k({q: bm25_run.get(q, {}) for q in queries}, depth),
            top_k({q: dense_run.get(q, {}) for q in queries}, depth)]
    return fuse(runs, method, weights=weights, rrf_k=rrf_k, k=k)


def search_space(model: DualEncoder, emb: np.ndarray, *, query: bool = False) -> np.ndarray:
    """Map embeddings so that inner product equals the model's score (cosine, temperature)."""
    cfg = model.config
    emb = np.asarray(emb, dtype=np.float32)
    if getattr(cfg, "similarity", "dot") == "cosine":
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if query:
        emb = emb / float(getattr(cfg, "temperature", 1.0))
    return np.ascontiguousarray(emb)

"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema).

Requests are strict (no type coercion: ``"k": "10"`` is an error, not 10) and forbid unknown fields,
so a typo such as ``top_k`` is reported instead of silently ignored. Limits that depend on the
server's settings (``max_k``, ``max_query_chars``, ...) are checked by the endpoints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SearchRequest", "SearchResponse", "HitOut", "RerankRequest", "RerankResponse", "EncodeRequest",
           "EncodeResponse"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Strict):
    query: str = Field(description="the query text (non-empty, at most max_query_chars characters)")
    k: int = Field(10, description="hits to return (1..max_k)")
    mode: Literal["dense", "bm25", "hybrid"] = Field("dense", description="dense index, BM25, or both fused")
    fusion: Literal["rrf", "sum"] = Field("rrf", description="hybrid fusion: reciprocal rank or normalized score sum")
    rerank: bool = Field(False, description="re-score the top rerank_depth hits with the cross-encoder")
    rerank_depth: int = Field(50, description="hits the cross-encoder re-scores (1..max_k)")
    return_text: bool = Field(False, description="include each hit's document text (needs --data)")


class HitOut(BaseModel):
    id: str
    score: float
    rank: int
    text: str | None = None


class SearchResponse(BaseModel):
    query: str
    mode: str
    reranked: bool
    hits: list[HitOut]
    took_ms: float


class RerankRequest(_Strict):
    query: str
    documents: list[str] | None = Field(None, description="document texts to score (at most max_texts)")
    doc_ids: list[str] | None = Field(None, description="or ids of corpus documents (needs --data)")


class RerankResponse(BaseModel):
    scores: list[float] = Field(description="one score per input document, in input order")
    ranking: list[int] = Field(description="input positions, best first")
    model: str = Field(description="which model scored: cross-encoder, or the dual-encoder without one")
    took_ms: float


class EncodeRequest(_Strict):
    texts: list[str] = Field(description="texts to embed (at most max_texts)")
    kind: Literal["query", "doc"] = Field("query", description="encode as queries or as documents")


class EncodeResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    took_ms: float

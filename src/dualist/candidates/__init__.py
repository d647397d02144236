"""Candidate generation: BM25 top-K runs (bm25s) and hard negatives sampled from them."""

from __future__ import annotations

from dualist.candidates.bm25 import LUCENE_TOKEN_PATTERN, BM25Retriever, bm25_run
from dualist.candidates.negatives import sample_negatives

__all__ = ["BM25Retriever", "bm25_run", "sample_negatives", "LUCENE_TOKEN_PATTERN"]

"""``ServeConfig``: what ``dualist serve`` loads and the limits it enforces (also a ``serve.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from dualist.config import opt
from dualist.errors import ConfigError
from dualist.models.precision import Precision

__all__ = ["ServeConfig"]


@dataclass
class ServeConfig:
    """Settings of ``dualist serve`` (flags, or the same keys at the top level of ``serve.yaml``)."""

    model: str = opt("", "dual-encoder folder (from 'dualist train-student') that embeds queries")
    index: str = opt("", "index folder from 'dualist index' (exact, FAISS or Milvus); empty = embed --data's "
                         "corpus at start-up into an exact index")
    data: str = opt("", "BEIR folder whose corpus gives document texts (BM25, hybrid, re-rank by id, "
                        "return_text); empty = dense search only")
    reranker: str = opt("", "cross-encoder folder for re-ranking (POST /rerank, and /search with rerank=true)")
    precision: Precision = opt("fp32", "inference precision of the model(s), as for 'dualist search'")
    host: str = opt("127.0.0.1", "interface to listen on (127.0.0.1 = this machine only)")
    port: int = opt(8000, "TCP port (0 = any free port; the chosen one is logged)")
    max_batch: int = opt(32, "most queries per forward pass when concurrent /search requests are micro-batched "
                             "(and most /rerank requests per cross-encoder call)")
    max_rerank_pairs: int = opt(1024, "most query-document pairs per cross-encoder call when concurrent /rerank "
                                      "requests are micro-batched (a request with more runs alone)")
    max_wait_ms: float = opt(2.0, "how long a lone query (or /rerank request) waits for others to share its "
                                  "forward pass")
    max_query_chars: int = opt(2000, "longest query accepted (characters); longer ones get 422")
    max_k: int = opt(1000, "largest k (and rerank_depth) accepted")
    max_texts: int = opt(256, "most texts per /encode request and documents per /rerank request")
    max_body_bytes: int = opt(1 << 20, "largest request body accepted; larger ones get 413")
    rrf_k: float = opt(60.0, "reciprocal rank fusion constant for hybrid search")
    hybrid_depth: int = opt(100, "hits taken from BM25 and from the dense index before fusion")
    graceful_timeout_s: float = opt(10.0, "on SIGINT/SIGTERM, how long in-flight requests may finish")
    threads: int = opt(0, "torch threads for the model (0 = torch's default); on a shared machine fewer threads "
                          "than cores avoids OpenMP spin-waiting")

    def check(self) -> None:
        for name in ("max_batch", "max_rerank_pairs", "max_query_chars", "max_k", "max_texts", "max_body_bytes", "hybrid_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.model:
            raise ConfigError("model is required: a dual-encoder folder (--model or 'model:' in serve.yaml)")
        if not self.index and not self.data:
            raise ConfigError("give an index folder (--index) or a BEIR folder (--data) to index at start-up")

"""Serving (docs/architecture.md §1, last box): a student, an index, BM25 and a re-ranker behind HTTP.

``dualist serve --model M --index I --data D`` (or ``--config serve.yaml``) loads everything once and
serves ``POST /search`` (dense, BM25, hybrid; optional re-rank), ``POST /rerank``, ``POST /encode``,
``GET /health``, ``GET /metrics`` and OpenAPI docs on FastAPI + uvicorn, with concurrent queries
micro-batched into one forward pass. Needs ``pip install 'dualist[serve]'``; the service object
(:class:`SearchService`) and the batcher need neither FastAPI nor uvicorn.
"""

from __future__ import annotations

from .batcher import BatcherClosed, MicroBatcher
from .config import ServeConfig
from .service import Hit, SearchQuery, SearchService

__all__ = ["ServeConfig", "SearchService", "SearchQuery", "Hit", "MicroBatcher", "BatcherClosed",
           "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):  # FastAPI and uvicorn load only when a server is wanted
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

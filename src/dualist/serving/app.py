"""The FastAPI application of ``dualist serve`` and the uvicorn runner.

Endpoints: ``POST /search`` (dense, BM25 or hybrid; optional cross-encoder re-rank of the top
``rerank_depth``), ``POST /rerank``, ``POST /encode``, ``GET /health``, ``GET /metrics``
(Prometheus text format) and the OpenAPI docs (``/docs``, ``/openapi.json``).

Concurrent ``/search`` requests are micro-batched (:class:`~dualist.serving.batcher.MicroBatcher`)
into one forward pass, and concurrent ``/rerank`` requests, by a second batcher, into one
cross-encoder call over all their pairs; ``/encode`` is not batched (each request is already a batch
of texts). All model work runs on one thread, so calls never overlap. Every limit of
:class:`~dualist.serving.config.ServeConfig` is checked before any model work and answered with a
4xx and a ``detail`` message; a failing request never stops the server.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint annotations, and the
# request models are imported inside create_app (pydantic and FastAPI load only when serving).

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dualist.errors import MissingDependencyError

from .batcher import BatcherClosed, MicroBatcher
from .config import ServeConfig
from .service import SearchQuery, SearchService

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)

ENDPOINTS = ("/search", "/rerank", "/encode", "/health", "/metrics", "/docs", "/openapi.json")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _import_serving() -> tuple[Any, Any]:
    try:
        import fastapi
        import prometheus_client
    except ImportError as e:
        raise MissingDependencyError(e.name or "fastapi", "dualist serve", "serve") from e
    return fastapi, prometheus_client


class _Metrics:
    """Prometheus metrics in the app's own registry (two apps in one process never collide)."""

    def __init__(self, prometheus_client: Any):
        pc = prometheus_client
        self.pc = pc
        self.registry = pc.CollectorRegistry()
        self.requests = pc.Counter("dualist_requests", "HTTP requests by endpoint and status code",
                                   ["endpoint", "method", "status"], registry=self.registry)
        self.latency = pc.Histogram("dualist_request_seconds", "HTTP request latency by endpoint",
                                    ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch = pc.Histogram("dualist_search_batch_size", "queries per micro-batched forward pass",
                                  buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue = pc.Gauge("dualist_search_queue", "queries waiting for a batch", registry=self.registry)
        self.rerank_batch = pc.Histogram("dualist_rerank_batch_size",
                                         "/rerank requests per micro-batched cross-encoder call",
                                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.rerank_pairs = pc.Histogram("dualist_rerank_batch_pairs",
                                         "(query, document) pairs per micro-batched cross-encoder call",
                                         buckets=(1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
                                         registry=self.registry)
        self.rerank_queue = pc.Gauge("dualist_rerank_queue", "/rerank requests waiting for a batch",
                                     registry=self.registry)
        self.in_progress = pc.Gauge("dualist_requests_in_progress", "HTTP requests received and not yet answered",
                                    ["endpoint"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return self.pc.generate_latest(self.registry), self.pc.CONTENT_TYPE_LATEST


class _Guard:
    """ASGI middleware: body-size limit (413 before the app reads anything) and request metrics."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: _Metrics):
        self.app, self.max_body, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}
        t0 = time.perf_counter()
        self.metrics.in_progress.labels(endpoint).inc()

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await self._too_large(send_wrapper, int(declared))
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, more = b"", True
                while more:  # chunked bodies have no content-length: count what arrives
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body:
                        await self._too_large(send_wrapper, len(body))
                        return
                sent = False

                async def replay() -> dict:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.labels(endpoint).dec()
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _too_large(self, send: Any, size: int) -> None:
        body = json.dumps({"detail": f"request body of {size} bytes is over the limit of {self.max_body} bytes "
                                     "(max_body_bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(service: SearchService, cfg: ServeConfig | None = None) -> Any:
    """The FastAPI app over a loaded ``service``; ``cfg`` gives the limits and batching settings."""
    fastapi, prometheus_client = _import_serving()
    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    from .schemas import EncodeRequest, EncodeResponse, RerankRequest, RerankResponse, SearchRequest, SearchResponse

    cfg = cfg or ServeConfig(model="-", data="-")
    metrics = _Metrics(prometheus_client)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualist-model")
    batcher = MicroBatcher(service.search_batch, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                           executor=executor, on_batch=metrics.batch.observe)

    def rerank_batch(requests: list[tuple[str, list[str]]]) -> list[Any]:
        metrics.rerank_pairs.observe(sum(len(docs) for _, docs in requests))
        return service.rerank_batch(requests)

    # same executor: the cross-encoder never runs beside a search batch
    rerank_batcher = MicroBatcher(rerank_batch, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                                  executor=executor, on_batch=metrics.rerank_batch.observe,
                                  max_weight=cfg.max_rerank_pairs, weight=lambda request: len(request[1]))
    started = time.time()

    def unprocessable(message: str) -> HTTPException:
        return HTTPException(status_code=422, detail=message)

    def check_query(text: str) -> None:
        if not text.strip():
            raise unprocessable("query must not be empty")
        if len(text) > cfg.max_query_chars:
            raise unprocessable(f"query has {len(text)} characters; the limit is {cfg.max_query_chars} "
                                "(max_query_chars)")

    def check_count(name: str, value: int) -> None:
        if not 1 <= value <= cfg.max_k:
            raise unprocessable(f"{name} must be between 1 and {cfg.max_k} (max_k), got {value}")

    def check_texts(name: str, texts: list[str]) -> None:
        if not texts:
            raise unprocessable(f"{name} must not be empty")
        if len(texts) > cfg.max_texts:
            raise unprocessable(f"{len(texts)} {name}; the limit is {cfg.max_texts} per request (max_texts)")

    async def on_model_thread(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        rerank_batcher.start()
        port = getattr(app.state, "port", None)
        if port is not None:
            # One parseable line for scripts and tests: the server is up and answering.
            print(f"dualist serve: listening on http://{cfg.host}:{port}", file=sys.stderr, flush=True)
        yield
        logger.info("shutting down: finishing %d queued queries and %d re-rank requests", batcher.pending,
                    rerank_batcher.pending)
        await batcher.close()
        await rerank_batcher.close()
        executor.shutdown(wait=True)
        print("dualist serve: stopped", file=sys.stderr, flush=True)

    app = FastAPI(title="dualist", version=_version(), lifespan=lifespan,
                  description="Dense, BM25 and hybrid search over a dualist dual-encoder, with cross-encoder "
                              "re-ranking.")
    app.state.service = service
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        # One readable sentence per problem ("body.k: Input should be a valid integer"), then the details.
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": message, "errors": errors})

    @app.post("/search", response_model=SearchResponse, summary="search the corpus (dense, BM25 or hybrid)")
    async def search(req: SearchRequest):
        t0 = time.perf_counter()
        check_query(req.query)
        check_count("k", req.k)
        if req.rerank:
            check_count("rerank_depth", req.rerank_depth)
        q = SearchQuery(query=req.query, k=req.k, mode=req.mode, fusion=req.fusion, rerank=req.rerank,
                        rerank_depth=req.rerank_depth)
        why = service.unavailable(q)
        if why is None and req.return_text and service.dataset is None:
            why = "return_text=true needs document texts: start the server with --data"
        if why is not None:
            raise HTTPException(status_code=400, detail=why)
        metrics.queue.set(batcher.pending)
        try:
            hits = await batcher.submit(q)
        except BatcherClosed as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        out = [{"id": h.id, "score": h.score, "rank": r,
                "text": service.doc_text(h.id) if req.return_text else None} for r, h in enumerate(hits, start=1)]
        return {"query": req.query, "mode": req.mode, "reranked": req.rerank, "hits": out,
                "took_ms": 1000 * (time.perf_counter() - t0)}

    @app.post("/rerank", response_model=RerankResponse, summary="score documents for a query with the re-ranker")
    async def rerank(req: RerankRequest):
        t0 = time.perf_counter()
        check_query(req.query)
        if (req.documents is None) == (req.doc_ids is None):
            raise unprocessable("give exactly one of 'documents' (texts) or 'doc_ids'")
        if req.doc_ids is not None:
            check_texts("doc_ids", req.doc_ids)
            if service.dataset is None:
                raise HTTPException(status_code=400, detail="doc_ids need the corpus: start the server with --data")
            unknown = [d for d in req.doc_ids if d not in service.dataset.corpus]
            if unknown:
                raise unprocessable(f"{len(unknown)} unknown doc_ids, e.g. {unknown[:3]}")
            docs = [service.doc_text(d) for d in req.doc_ids]
        else:
            docs = req.documents
            check_texts("documents", docs)
        metrics.rerank_queue.set(rerank_batcher.pending)
        try:
            scores = await rerank_batcher.submit((req.query, docs))
        except BatcherClosed as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        scores = [float(s) for s in scores]
        ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return {"scores": scores, "ranking": ranking, "took_ms": 1000 * (time.perf_counter() - t0),
                "model": "cross-encoder" if service.reranker is not None else "dual-encoder"}

    @app.post("/encode", response_model=EncodeResponse, summary="embed queries or documents with the student")
    async def encode(req: EncodeRequest):
        t0 = time.perf_counter()
        check_texts("texts", req.texts)
        for text in req.texts:
            if len(text) > cfg.max_query_chars:
                raise unprocessable(f"a text has {len(text)} characters; the limit is {cfg.max_query_chars} "
                                    "(max_query_chars)")
        emb = await on_model_thread(service.encode, req.texts, req.kind)
        return {"embeddings": emb.tolist(), "dim": int(emb.shape[1]), "took_ms": 1000 * (time.perf_counter() - t0)}

    @app.get("/health", summary="liveness, and what this server can do")
    async def health():
        return {"status": "ok", "uptime_s": round(time.time() - started, 3), "queued": batcher.pending,
                "rerank_queued": rerank_batcher.pending, **service.info()}

    @app.get("/metrics", summary="Prometheus metrics: request counts, latency histograms, batch sizes")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return _Guard(app, cfg.max_body_bytes, metrics) if cfg.max_body_bytes else app


def _version() -> str:
    from dualist import __version__

    return __version__


def serve(cfg: ServeConfig) -> None:
    """Load everything ``cfg`` names once, then serve until SIGINT/SIGTERM (graceful shutdown)."""
    _import_serving()
    try:
        import uvicorn
    except ImportError as e:
        raise MissingDependencyError("uvicorn", "dualist serve", "serve") from e
    cfg.check()
    service = SearchService.from_config(cfg)
    app = create_app(service, cfg)
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))  # bound here so that port 0 can report the port it got
    inner = app.app if isinstance(app, _Guard) else app
    inner.state.port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=cfg.graceful_timeout_s,
                            lifespan="on", access_log=False)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to whatever handler
    # was there before it; ours turns that into a normal return, so a stop on request exits with 0.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped(signum)

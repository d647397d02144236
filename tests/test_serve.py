"""``dualist serve`` end to end: the real CLI starts real uvicorn on a loopback port; every endpoint is hit.

One server (tiny random BERT student and cross-encoder, tiny BEIR corpus) serves the whole module;
the last test shuts it down with SIGTERM and checks that in-flight requests still finish.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from dualist.data import load_beir  # noqa: E402
from dualist.evaluation.modes import search_space, encode_corpus  # noqa: E402
from dualist.index import ExactIndex  # noqa: E402
from dualist.models import CrossEncoder, DualEncoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def served(tiny_beir, tiny_bert, tmp_path_factory):
    """(base URL, process, student, index) of a running ``dualist serve``."""
    root = tmp_path_factory.mktemp("serve")
    de = DualEncoder(model=str(tiny_bert))
    de.save_pretrained(root / "student")
    CrossEncoder(model=str(tiny_bert)).save_pretrained(root / "teacher")
    de = DualEncoder.from_pretrained(root / "student")
    ids, emb = encode_corpus(de, load_beir(tiny_beir))
    index = ExactIndex()
    index.add(ids, search_space(de, emb))
    index.save(root / "index")
    (root / "serve.yaml").write_text(
        f"model: {root / 'student'}\nindex: {root / 'index'}\ndata: {tiny_beir}\nreranker: {root / 'teacher'}\n"
        "port: 0\nmax_wait_ms: 50\nmax_rerank_pairs: 8\nmax_k: 100\nmax_texts: 8\nmax_body_bytes: 4096\nmax_query_chars: 200\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dualist", "serve", "--config", str(root / "serve.yaml")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    url, lines, deadline = None, [], time.time() + 120
    while url is None and time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
    if url is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    yield url, proc, de, index
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served[0], timeout=60) as c:
        yield c


def test_health_and_openapi(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["documents"] == 48 and h["modes"] == ["dense", "bm25", "hybrid"]
    assert h["reranker"] is True
    spec = client.get("/openapi.json").json()
    assert {"/search", "/rerank", "/encode", "/health", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_dense_search_equals_the_exact_index(served, client):
    _, _, de, index = served
    queries = ["protein folding enzyme", "ocean warming carbon"]
    expected = index.search(search_space(de, de.encode_queries(queries), query=True), 5)
    for q, ids, scores in zip(queries, expected.ids, expected.scores):
        r = client.post("/search", json={"query": q, "k": 5})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert [h["id"] for h in hits] == ids
        np.testing.assert_allclose([h["score"] for h in hits], scores, rtol=1e-4, atol=1e-5)
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]


def test_bm25_hybrid_and_rerank_modes(client):
    q = "vaccine antibody dose"
    bm25 = client.post("/search", json={"query": q, "k": 5, "mode": "bm25", "return_text": True}).json()["hits"]
    assert bm25[0]["id"].startswith("d2")  # topic 2 is "vaccine": BM25 must find its words
    assert "vaccine" in bm25[0]["text"] or "antibody" in bm25[0]["text"] or "dose" in bm25[0]["text"]
    for fusion in ("rrf", "sum"):
        hyb = client.post("/search", json={"query": q, "k": 5, "mode": "hybrid", "fusion": fusion}).json()
        assert hyb["mode"] == "hybrid" and len(hyb["hits"]) == 5
        scores = [h["score"] for h in hyb["hits"]]
        assert scores == sorted(scores, reverse=True)
    rr = client.post("/search", json={"query": q, "k": 3, "mode": "bm25", "rerank": True, "rerank_depth": 10}).json()
    assert rr["reranked"] is True and len(rr["hits"]) == 3
    # the re-ranked top 3 come from BM25's top 10, re-scored by the cross-encoder
    top10 = {h["id"] for h in client.post("/search", json={"query": q, "k": 10, "mode": "bm25"}).json()["hits"]}
    assert {h["id"] for h in rr["hits"]} <= top10


def test_rerank_and_encode_endpoints(served, client):
    _, _, de, _ = served
    docs = ["enzyme binding peptide", "sleep melatonin night", "protein folding amino"]
    r = client.post("/rerank", json={"query": "protein folding", "documents": docs}).json()
    assert len(r["scores"]) == 3 and r["model"] == "cross-encoder"
    assert sorted(r["ranking"]) == [0, 1, 2] and r["scores"][r["ranking"][0]] == max(r["scores"])
    by_id = client.post("/rerank", json={"query": "protein folding", "doc_ids": ["d000", "d100"]})
    assert by_id.status_code == 200 and len(by_id.json()["scores"]) == 2
    e = client.post("/encode", json={"texts": ["protein folding", "ocean"], "kind": "query"}).json()
    assert e["dim"] == 32
    np.testing.assert_allclose(e["embeddings"], de.encode_queries(["protein folding", "ocean"]), atol=1e-5)
    d = client.post("/encode", json={"texts": ["protein folding"], "kind": "doc"}).json()
    np.testing.assert_allclose(d["embeddings"], de.encode_docs(["protein folding"]), atol=1e-5)


@pytest.mark.parametrize("path,body,status,words", [
    ("/search", {"query": ""}, 422, "empty"),
    ("/search", {"query": "   "}, 422, "empty"),
    ("/search", {"query": "protein", "k": 0}, 422, "k must be between 1 and 100"),
    ("/search", {"query": "protein", "k": 10**9}, 422, "k must be between 1 and 100"),
    ("/search", {"query": "protein", "k": "ten"}, 422, "body.k"),
    ("/search", {"query": 42}, 422, "body.query"),
    ("/search", {"query": "protein", "mode": "sparse"}, 422, "body.mode"),
    ("/search", {"query": "protein", "top_k": 5}, 422, "top_k"),
    ("/search", {"k": 5}, 422, "body.query"),
    ("/search", {"query": "x" * 201}, 422, "limit is 200"),
    ("/search", {"query": "protein", "rerank": True, "rerank_depth": 0}, 422, "rerank_depth"),
    ("/rerank", {"query": "protein"}, 422, "exactly one of"),
    ("/rerank", {"query": "protein", "documents": []}, 422, "must not be empty"),
    ("/rerank", {"query": "protein", "doc_ids": ["nope"]}, 422, "unknown doc_ids"),
    ("/rerank", {"query": "protein", "documents": ["a"] * 9}, 422, "limit is 8"),
    ("/encode", {"texts": []}, 422, "must not be empty"),
    ("/encode", {"texts": ["a"], "kind": "passage"}, 422, "body.kind"),
])
def test_bad_requests_get_4xx_with_a_message(client, path, body, status, words):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


def test_malformed_and_oversize_bodies(client):
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    big = {"query": "protein " * 1000}  # ~8 KB against max_body_bytes 4096
    r = client.post("/search", json=big)
    assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["detail"]

    def chunks():  # no content-length: the limit is counted as the body arrives
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/nope").status_code == 404
    assert client.post("/search", json={"query": "protein"}).status_code == 200


def _histogram(url: str, name: str) -> tuple[float, float]:
    """(count, sum) of a Prometheus histogram the server exports."""
    text = httpx.get(url + "/metrics").text
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    return count, total


def test_concurrent_queries_are_micro_batched(served):
    url = served[0]

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            rs = await asyncio.gather(*(c.post("/search", json={"query": f"protein {i}", "k": 3})
                                        for i in range(n)))
        return [r.status_code for r in rs]

    c0, s0 = _histogram(url, "dualist_search_batch_size")
    assert asyncio.run(burst(16)) == [200] * 16
    c1, s1 = _histogram(url, "dualist_search_batch_size")
    assert s1 - s0 == 16  # every query went through the batcher...
    assert c1 - c0 < 16  # ...in fewer forward passes than queries


def test_concurrent_reranks_are_micro_batched_and_equal_sequential_ones(served, client):
    url = served[0]
    words = ["protein folding", "ocean warming carbon", "vaccine antibody dose", "sleep melatonin",
             "enzyme binding peptide", "climate sea ice"]
    bodies = [{"query": words[i % len(words)] + f" {i}",
               "documents": [words[(i + j) % len(words)] + " study" * j for j in range(1 + i % 4)]}
              for i in range(12)]
    bodies.append({"query": "protein folding", "doc_ids": ["d000", "d100", "d201"]})
    sequential = []
    for body in bodies:  # one at a time: each request is alone in its cross-encoder call
        r = client.post("/rerank", json=body)
        assert r.status_code == 200, r.text
        sequential.append(r.json())

    async def burst() -> list:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(*(c.post("/rerank", json=b) for b in bodies))

    c0, s0 = _histogram(url, "dualist_rerank_batch_size")
    p0 = _histogram(url, "dualist_rerank_batch_pairs")[1]
    concurrent = asyncio.run(burst())
    c1, s1 = _histogram(url, "dualist_rerank_batch_size")
    p1 = _histogram(url, "dualist_rerank_batch_pairs")[1]
    assert [r.status_code for r in concurrent] == [200] * len(bodies)
    for alone, together, body in zip(sequential, (r.json() for r in concurrent), bodies):
        n = len(body.get("documents") or body["doc_ids"])
        assert len(together["scores"]) == n and together["model"] == "cross-encoder"
        # the same scores whichever pairs shared the call (only the padding differs)
        np.testing.assert_allclose(together["scores"], alone["scores"], rtol=1e-4, atol=1e-4)
    assert s1 - s0 == len(bodies)  # every request went through the re-rank batcher...
    assert c1 - c0 < len(bodies)  # ...in fewer cross-encoder calls than requests...
    # ...of at most max_rerank_pairs (8) pairs each, so at least ceil(pairs / 8) calls
    pairs = sum(len(b.get("documents") or b["doc_ids"]) for b in bodies)
    assert c1 - c0 >= -(-pairs // 8)
    assert p1 - p0 == sum(len(b.get("documents") or b["doc_ids"]) for b in bodies)


def test_rerank_batch_splits_one_model_call_back_into_requests(served):
    """Without a cross-encoder the student scores; each request gets its own scores, in order."""
    from dualist.serving import SearchService

    _, _, de, index = served
    service = SearchService(de, index)
    requests = [("protein folding", ["enzyme binding", "ocean warming"]), ("sleep", []), ("vaccine", ["dose"])]
    out = service.rerank_batch(requests)
    assert [len(scores) for scores in out] == [2, 0, 1]
    for (query, docs), scores in zip(requests, out):
        if docs:
            np.testing.assert_allclose(scores, de.score([query] * len(docs), docs), rtol=1e-5, atol=1e-5)
    assert service.rerank_batch([("sleep", [])])[0].shape == (0,)


def test_metrics_count_requests_and_errors(client):
    client.post("/search", json={"query": "protein", "k": 0})
    text = client.get("/metrics").text
    assert re.search(r'dualist_requests_total\{endpoint="/search",method="POST",status="200"\} [1-9]', text)
    assert re.search(r'dualist_requests_total\{endpoint="/search",method="POST",status="422"\} [1-9]', text)
    assert 'dualist_request_seconds_bucket{endpoint="/search",le="0.1"}' in text
    # the /metrics request being answered is the one in progress; finished ones are not
    assert 'dualist_requests_in_progress{endpoint="/metrics"} 1.0' in text
    assert 'dualist_requests_in_progress{endpoint="/search"} 0.0' in text


def test_sigterm_finishes_in_flight_requests_then_exits(served):
    """Last in the module: it stops the shared server."""
    url, proc, _, _ = served

    def received(text: str) -> float:
        """/search and /rerank requests the server has taken in: answered or in progress."""
        return sum(float(v) for v in re.findall(
            r'dualist_requests(?:_total|_in_progress)\{endpoint="/(?:search|rerank)"[^}]*\} (\S+)', text))

    async def in_flight() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c, httpx.AsyncClient(base_url=url) as probe:
            before = received((await probe.get("/metrics")).text)
            tasks = [asyncio.create_task(c.post("/search", json={"query": f"climate {i}", "k": 3,
                                                                 "rerank": True, "rerank_depth": 20}))
                     for i in range(8)]
            tasks += [asyncio.create_task(c.post("/rerank", json={"query": f"ocean {i}", "doc_ids": ["d000", "d100"]}))
                      for i in range(4)]
            # signal once the server holds all 12 (a request still on the wire when uvicorn stops accepting
            # would be refused, which is not what this test is about; on a loaded machine that took > 50 ms)
            for _ in range(600):
                if received((await probe.get("/metrics")).text) - before >= 12:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            return [r.status_code for r in await asyncio.gather(*tasks)]

    assert asyncio.run(in_flight()) == [200] * 12
    assert proc.wait(timeout=30) == 0
    assert "dualist serve: stopped" in proc.stderr.read()

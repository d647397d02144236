"""Bounded load test of ``dualist serve`` on loopback: throughput and p50/p95/p99 latency at 1, 8 and 32
concurrent clients, with and without cross-encoder re-ranking, against the same work without
micro-batching and as a plain in-process single-query loop.

The script starts the real server (``python -m dualist serve ... --port 0``, 127.0.0.1 only) once
with micro-batching (``--max-batch 32``) and once without (``--max-batch 1``), and drives each with
httpx: ``C`` client tasks send ``POST /search`` for test queries of the dataset, round robin, until
``--requests`` answers or ``--max-seconds`` have passed, whichever comes first. Every non-200
answer counts as an error. The single-query loop calls ``encode_queries([q])`` and
``index.search`` (and the cross-encoder on the top ``--rerank-depth``) one query at a time in this
process, with no HTTP: the cost of the same work without batching or a server.

    python bench/bench_serve.py --model STUDENT --index INDEX --data ../shared/data/scifact \\
        --reranker CROSS_ENCODER --requests 200 --max-seconds 60 --json out/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import setup_env  # beside this script: Python puts a script's own folder on sys.path

REPO = Path(__file__).resolve().parents[1]


def start_server(args, max_batch: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "dualist", "serve", "--model", args.model, "--index", args.index, "--data",
           args.data, "--port", "0", "--host", "127.0.0.1", "--max-batch", str(max_batch), "-q"]
    if args.reranker:
        cmd += ["--reranker", args.reranker]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("server did not start in 600 s")


def stop_server(proc: subprocess.Popen) -> int:
    proc.terminate()
    return proc.wait(timeout=60)


async def drive(url: str, queries: list[str], clients: int, n: int, max_seconds: float, body: dict) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    sent = 0
    t_end = time.perf_counter() + max_seconds

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while sent < n and time.perf_counter() < t_end:
            i = sent
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await c.post("/search", json={"query": queries[i % len(queries)], **body})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await c.post("/search", json={"query": queries[0], **body})  # warm
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return summary(lat, wall, errors)


def summary(lat: list[float], wall: float, errors: int) -> dict:
    ms = np.asarray(lat) * 1000
    return {"requests": len(lat), "errors": errors, "seconds": round(wall, 2), "rps": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def single_query_loop(args, queries: list[str], rerank: bool) -> dict:
    from dualist.evaluation.modes import search_space
    from dualist.index import load_index
    from dualist.stages import load_dataset, load_model

    model = load_model(args.model)
    index = load_index(args.index)
    ds = load_dataset(args.data)
    ce = load_model(args.reranker) if rerank else None
    lat = []
    t_end = time.perf_counter() + args.max_seconds
    t0 = time.perf_counter()
    for i in range(args.requests):
        if time.perf_counter() > t_end:
            break
        t = time.perf_counter()
        q = queries[i % len(queries)]
        res = index.search(search_space(model, model.encode_queries([q], show_progress=False), query=True),
                           args.rerank_depth if rerank else args.k)
        if ce is not None:
            docs = res.ids[0]
            ce.score([q] * len(docs), [ds.doc_text(d) for d in docs], show_progress=False)
        lat.append(time.perf_counter() - t)
    return summary(lat, time.perf_counter() - t0, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--reranker", default="")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=200, help="answers per configuration (upper bound)")
    p.add_argument("--max-seconds", type=float, default=60, help="time per configuration (upper bound)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rerank-depth", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (server and loop; 0 = default)")
    p.add_argument("--no-unbatched", action="store_true", help="skip the --max-batch 1 server")
    p.add_argument("--json", default="")
    args = p.parse_args()
    setup_env(args.threads or None)
    from dualist.stages import load_dataset

    queries = list(load_dataset(args.data).queries_for("test").values())
    modes = [False] + ([True] if args.reranker else [])
    rows = []
    servers = [("micro-batched (max_batch 32)", 32)] + ([] if args.no_unbatched else [("unbatched (max_batch 1)", 1)])
    for label, max_batch in servers:
        proc, url = start_server(args, max_batch)
        try:
            for rerank in modes:
                body = {"k": args.k, "rerank": rerank, "rerank_depth": args.rerank_depth}
                for c in args.clients:
                    r = asyncio.run(drive(url, queries, c, args.requests, args.max_seconds, body))
                    rows.append({"server": label, "rerank": rerank, "clients": c, **r})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            rows.append({"server": label, "exit_code": stop_server(proc)})
    for rerank in modes:
        r = single_query_loop(args, queries, rerank)
        rows.append({"server": "in-process single-query loop (no HTTP)", "rerank": rerank, "clients": 1, **r})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

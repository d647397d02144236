"""MilvusIndex (milvus-lite) against the exact index: recall@10 and nDCG@10 on real data, and build /
search throughput on a synthetic corpus.

Part 1, per BEIR dataset: the student embeds the corpus once (or an exact index folder from
``dualist index`` is reused: ``--index-dir scifact=PATH``); every Milvus variant indexes the same
embeddings; the test queries are searched with k=10 in each, and the script prints recall@10 against
the exact index's top 10 (the share of the exact top 10 found), nDCG@10 of each run, and build and
search times. FLAT must give recall 1.000 (it is exact).

Part 2 (``--synthetic N``, the corpus size): N x 384 random unit vectors; build time and search
throughput (``--queries`` queries, 1,000 by default, k=10, in one call) of the exact index, written
to disk slice by slice and searched memory-mapped as ``dualist index`` leaves it, and of each Milvus
variant, with recall@10 against the exact index. A Milvus build is insert + index + load, and it
counts until Milvus reports every row indexed (its index builds run in the background: a search
before then scans the unindexed segments instead).

    python bench/bench_milvus.py --data ../shared/data/scifact ../shared/data/nfcorpus
    python bench/bench_milvus.py --synthetic 1000000 --variants FLAT,HNSW
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import setup_env  # beside this script: Python puts a script's own folder on sys.path

VARIANTS = {"FLAT": ("FLAT", "none"), "HNSW": ("HNSW", "none"), "HNSW-int8": ("HNSW", "int8"),
            "IVF_FLAT": ("IVF_FLAT", "none"), "IVF-int8": ("IVF_FLAT", "int8")}


def recall_at(res_ids, ref_ids, k=10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / max(1, len(b[:k])) for a, b in zip(res_ids, ref_ids)]))


def build_milvus(name: str, ids, emb, root: Path):
    from dualist.index import MilvusIndex, load_index

    index_type, quant = VARIANTS[name]
    t0 = time.perf_counter()
    index = MilvusIndex(index_type=index_type, quantization=quant)
    for s in range(0, len(ids), 50000):
        index.add(ids[s:s + 50000], emb[s:s + 50000])
    index.save(root / name)
    index.close()
    index = load_index(root / name)
    index._ensure_loaded()  # flush + load: the collection is searchable
    wait_indexed(index)
    return index, time.perf_counter() - t0


def wait_indexed(index, timeout_s: float = 3600.0) -> None:
    """Block until Milvus says the vector index covers every row of the collection."""
    client = index._connect()
    deadline = time.monotonic() + timeout_s
    while True:
        info = [client.describe_index(index.collection, name) for name in client.list_indexes(index.collection)]
        if all(int(i.get("indexed_rows", 0)) >= len(index) and not int(i.get("pending_index_rows", 0))
               for i in info):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Milvus index not finished after {timeout_s:.0f} s: {info}")
        time.sleep(1.0)


def real(args) -> list[dict]:
    from dualist.evaluation import evaluate
    from dualist.evaluation.modes import search_space, encode_corpus
    from dualist.index import ExactIndex, load_index
    from dualist.stages import load_dataset
    from dualist.models import DualEncoder

    model = DualEncoder.from_pretrained(args.model) if args.model else DualEncoder(model="minilm-l6")
    given = dict(item.split("=", 1) for item in args.index_dir)
    rows = []
    for data in args.data:
        ds = load_dataset(data)
        name = Path(data).name
        t0 = time.perf_counter()
        if name in given:
            exact = load_index(given[name])
        else:
            ids, emb = encode_corpus(model, ds)
            exact = ExactIndex()
            exact.add(ids, search_space(model, emb))
        enc_s = time.perf_counter() - t0
        queries = ds.queries_for("test")
        qids = list(queries)
        q = search_space(model, model.encode_queries([queries[i] for i in qids]), query=True)
        qrels = ds.qrels_for("test")
        t0 = time.perf_counter()
        ref = exact.search(q, 10)
        exact_s = time.perf_counter() - t0
        ref_ndcg = evaluate(qrels, ref.to_run(qids), ["ndcg@10"]).mean["ndcg@10"]
        rows.append({"dataset": name, "index": "exact", "docs": len(exact), "queries": len(qids),
                     "recall@10": 1.0, "ndcg@10": ref_ndcg, "build_s": enc_s, "search_s": exact_s})
        print(json.dumps(rows[-1]), flush=True)
        emb = np.asarray(exact.embeddings, dtype=np.float32)
        root = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
        try:
            for v in args.variants:
                index, build_s = build_milvus(v, exact.ids, emb, root)
                t0 = time.perf_counter()
                res = index.search(q, 10)
                search_s = time.perf_counter() - t0
                rows.append({"dataset": name, "index": f"milvus-lite {v}", "docs": len(exact), "queries": len(qids),
                             "recall@10": recall_at(res.ids, ref.ids),
                             "ndcg@10": evaluate(qrels, res.to_run(qids), ["ndcg@10"]).mean["ndcg@10"],
                             "build_s": build_s, "search_s": search_s})
                print(json.dumps(rows[-1]), flush=True)
                index.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def synthetic(args) -> list[dict]:
    from dualist.index import ExactIndexWriter, load_index

    rng = np.random.default_rng(0)
    n, dim, nq = args.synthetic, 384, args.queries
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(n)]
    q = emb[rng.choice(n, nq, replace=False)] + 0.5 * rng.standard_normal((nq, dim), dtype=np.float32) / np.sqrt(dim)
    name = f"synthetic {n}x{dim}"
    root = Path(tempfile.mkdtemp(prefix="bench-milvus-", dir=args.tmp or None))
    try:
        t0 = time.perf_counter()
        with ExactIndexWriter(root / "exact") as writer:  # what `dualist index` does, 50k rows at a time
            for s in range(0, n, 50000):
                writer.add(ids[s:s + 50000], emb[s:s + 50000])
        build_s = time.perf_counter() - t0
        exact = load_index(root / "exact", mmap=True)
        assert isinstance(exact.embeddings, np.memmap), type(exact.embeddings)
        exact.search(q[:10], 10)  # warm
        t0 = time.perf_counter()
        ref = exact.search(q, 10)
        rows = [{"dataset": name, "index": "exact (memory-mapped)", "queries": nq, "build_s": build_s,
                 "insert_docs_per_s": n / build_s, "search_qps": nq / (time.perf_counter() - t0), "recall@10": 1.0}]
        print(json.dumps(rows[-1]), flush=True)
        for v in args.variants:
            index, build_s = build_milvus(v, ids, emb, root)
            index.search(q[:10], 10)  # warm
            t0 = time.perf_counter()
            res = index.search(q, 10)
            rows.append({"dataset": name, "index": f"milvus-lite {v}", "queries": nq, "build_s": build_s,
                         "insert_docs_per_s": n / build_s, "search_qps": nq / (time.perf_counter() - t0),
                         "recall@10": recall_at(res.ids, ref.ids)})
            print(json.dumps(rows[-1]), flush=True)
            index.drop()
            index.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="*", default=[], help="BEIR folders (test split)")
    p.add_argument("--model", default="", help="student folder (default: the packaged all-MiniLM-L6-v2, zero-shot)")
    p.add_argument("--index-dir", nargs="*", default=[], help="NAME=PATH: reuse an exact index of dataset NAME")
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    p.add_argument("--synthetic", type=int, default=0, help="also N x 384 synthetic vectors (0 = skip)")
    p.add_argument("--queries", type=int, default=1000, help="synthetic queries searched (k=10, one call)")
    p.add_argument("--tmp", default="", help="folder for the synthetic indexes (default: the system's temp folder)")
    p.add_argument("--json", default="", help="write the rows here")
    args = p.parse_args()
    setup_env()
    rows = real(args) if args.data else []
    if args.synthetic:
        rows += synthetic(args)
    if args.json:
        from dualist._io import write_json  # creates the folder

        write_json(args.json, rows, indent=1)


if __name__ == "__main__":
    main()

"""Corpus encoding throughput: dualist ``DualEncoder.encode_docs`` vs sentence-transformers ``encode``.

Both sides embed the same SciFact documents (``title text``) with all-MiniLM-L6-v2, truncated at
``--max-length`` tokens (256), batch ``--batch-size`` (64 on both), mean pooling + L2 normalisation.
Variants of dualist: fp32 in torch and ``quantized("onnx-fp32")`` in ONNX Runtime (both must give
the peer's embeddings: max abs diff <= ``--atol``), and the reduced-precision copies
``quantized("int8")``, ``quantized("bf16")`` and ``quantized("onnx-int8")``, whose retrieval
nDCG@10 on the SciFact test queries (exact search over the encoded documents, each side's own
query embeddings, ``dualist.evaluation.evaluate``) must stay within ``--ndcg-tol`` of torch fp32.

Throughput is timed (interleaved repeats) on the first ``--time-docs`` documents; the quality
check encodes ``--docs`` documents once per dualist variant: by default a 400-document slice, the
283 documents judged for the test queries plus others, so retrieval is still meaningful.
``--docs 0 --time-docs 0`` times and checks on the whole corpus (5,183 documents; hours on 2 cores).

    python bench/bench_encode.py                             # ~10 min on 2 busy cores
    python bench/bench_encode.py --time-docs 400 --docs 0    # more timing, whole-corpus retrieval check
"""

from __future__ import annotations

import time

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path


def build_parser():
    p = C.precision_parser(__doc__.split("\n\n")[0], compared="embedding", ndcg="nDCG@10",
                           max_length_help="document length (tokens)")
    p.add_argument("--docs", type=int, default=400, help="documents of the retrieval check (0: the whole corpus)")
    p.add_argument("--time-docs", type=int, default=128, help="documents encoded per timed repeat (0: --docs)")
    return p


def select_docs(ds, n: int) -> list[str]:
    """The documents judged for the test queries first, then the rest in corpus order, ``n`` in all."""
    ids = list(ds.corpus)
    if n <= 0 or n >= len(ids):
        return ids
    judged = [d for d in dict.fromkeys(d for rels in ds.qrels_for("test").values() for d in rels)
              if d in ds.corpus]
    chosen = dict.fromkeys(judged[:n])
    for d in ids:
        if len(chosen) >= n:
            break
        chosen.setdefault(d, None)
    return list(chosen)


def make_side(name: str, args):
    """(encode_docs(texts), encode_queries(texts)) for one variant; models are loaded here."""
    if name == "peer":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(C.minilm_path(), device="cpu")
        st.max_seq_length = args.max_length

        def enc(texts):
            return st.encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)

        return enc, enc
    from dualist.models import DualEncoder

    de = DualEncoder(model="minilm-l6", doc_max_length=args.max_length, query_max_length=args.max_length)
    if name == "dualist-hf":  # the Hugging Face forward instead of the packed one
        de.packed_inference = False
    elif name != "dualist":
        de = de.quantized(name.split("-", 1)[1])
    return (lambda texts: de.encode_docs(texts, batch_size=args.batch_size, show_progress=False),
            lambda texts: de.encode_queries(texts, batch_size=args.batch_size, show_progress=False))


def ndcg10(ds, doc_ids, doc_emb, query_emb, qids) -> float:
    from dualist.evaluation import evaluate
    from dualist.index import ExactIndex

    index = ExactIndex()
    index.add(doc_ids, doc_emb)
    run = index.search(query_emb, k=10).to_run(qids)
    qrels = {q: {d: r for d, r in rels.items() if d in set(doc_ids)} for q, rels in ds.qrels_for("test").items()}
    return float(evaluate(qrels, run, ["ndcg@10"]).mean["ndcg@10"])


def main() -> None:
    args = C.parse(build_parser())
    C.setup_env(args.threads)
    ds = C.load_scifact(args.data)
    doc_ids = select_docs(ds, args.docs)
    texts = [ds.doc_text(d) for d in doc_ids]
    timed_texts = texts[: args.time_docs] if args.time_docs > 0 else texts
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    if args.rss_side:  # child: load one side, encode the timed documents once, exit
        enc, _ = make_side(args.rss_side, args)
        t = time.perf_counter()
        enc(timed_texts)
        C.emit_child_result({"seconds": time.perf_counter() - t})
        return

    import numpy as np

    info = C.machine_info()
    sides = {v: make_side(v, args) for v in variants}
    print(f"timing: {len(timed_texts)} docs x {args.repeats} repeats per side, interleaved", flush=True)
    outputs, times = C.timed_outputs({v: (lambda enc=sides[v][0]: enc(timed_texts)) for v in variants}, args.repeats,
                                     warm={v: (lambda enc=sides[v][0]: enc(timed_texts[:8])) for v in variants})
    dps = {v: len(timed_texts) / C.median(times[v]) for v in variants}

    from dualist.models import DualEncoder

    tok = DualEncoder(model="minilm-l6").tokenizer
    n_tokens = sum(len(x) for x in tok(timed_texts, truncation=True, max_length=args.max_length)["input_ids"])

    # retrieval quality of each dualist variant on the --docs slice (fp32 is the reference)
    checked = [v for v in variants if v != "peer"]
    print(f"retrieval check: {len(texts)} docs, {', '.join(checked)}", flush=True)
    qids = list(ds.queries_for("test"))
    qtexts = [ds.queries[q] for q in qids]
    ndcg, full = {}, {}
    for v in checked:
        full[v] = sides[v][0](texts)
        ndcg[v] = ndcg10(ds, doc_ids, full[v], sides[v][1](qtexts), qids)
    rss = {} if args.no_rss else C.peak_rss_of_sides("bench_encode.py", args, variants)

    rows = []
    for v in checked:
        if v in C.FLOAT32_VARIANTS:
            ref = "peer" if "peer" in outputs else "dualist"
            diff = float(np.abs(outputs[v] - outputs[ref]).max())
            ok = diff <= args.atol
            check = f"max |emb diff| vs peer {diff:.1e} ({'OK' if ok else 'FAIL'} <= {args.atol:g})"
        else:
            fp32 = ndcg.get("dualist")
            if fp32 is None:  # the float32 side did not run: nothing to compare with, which is not a failure
                ok = None
                check = f"nDCG@10 {ndcg[v]:.4f}; UNCHECKED against fp32 (add 'dualist' to --variants)"
            else:
                cos = float((full[v] * full["dualist"]).sum(1).mean())
                ok = abs(ndcg[v] - fp32) <= args.ndcg_tol
                check = (f"nDCG@10 {ndcg[v]:.4f} vs fp32 {fp32:.4f} ({'OK' if ok else 'FAIL'} within "
                         f"{args.ndcg_tol:g}, {len(texts)} docs); mean cos to fp32 {cos:.4f}")
        rows.append(C.Row(f"encode docs, {v}", "docs/s", dps[v], dps.get("peer"), goal=C.precision_goal(v),
                          dualist_rss=rss.get(v), peer_rss=rss.get("peer"), check=check,
                          extra={"check_ok": ok, "ndcg@10": ndcg[v], "times_s": times[v],
                                 "peer_times_s": times.get("peer"),
                                 "tokens_per_s": n_tokens / C.median(times[v])}))
    print(f"timed {len(timed_texts)} docs, {n_tokens} tokens (mean {n_tokens / len(timed_texts):.0f}); nDCG@10 "
          + ", ".join(f"{v} {x:.4f}" for v, x in ndcg.items()))
    C.report(f"bench_encode: SciFact docs, length {args.max_length}, batch {args.batch_size}", rows, info, args)


if __name__ == "__main__":
    main()

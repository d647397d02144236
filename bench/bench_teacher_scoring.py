"""Teacher scoring throughput: dualist ``CrossEncoder.score`` vs sentence-transformers ``CrossEncoder.predict``.

The teacher is all-MiniLM-L6-v2 with a fresh 1-logit head built by dualist
(``CrossEncoder(pooling="cls")``, seeded) and saved; dualist and sentence-transformers both load
that one folder. The pairs are the BM25 top-100 (dualist's Lucene-like BM25) of the first
``--queries`` SciFact test queries (0 = all 300), truncated at 256 tokens, batch ``--batch-size``
(64 on both sides). Throughput is timed (interleaved repeats) on the first ``--time-pairs`` pairs;
the quality check scores all the pairs once per dualist variant.

Checks: dualist fp32 logits, in torch and in ONNX Runtime (``quantized("onnx-fp32")``), equal the
peer's (max abs diff <= ``--atol``); the reduced-precision copies ``quantized("int8")`` /
``quantized("bf16")`` / ``quantized("onnx-int8")`` keep the re-rank nDCG@10
(``dualist.evaluation.evaluate`` on the SciFact test qrels) within ``--ndcg-tol`` of fp32. With a
fresh head the fp32 ranking is not a good one: ``--quality-teacher DIR`` runs this check with a
trained dualist teacher instead (any pooling, e.g. the ``models/teacher/model`` folder of a
``dualist repro`` run), while the timing stays on the sentence-transformers-loadable teacher.
``--teacher DIR`` replaces that one (it must have ``pooling="cls"`` for sentence-transformers to load
it the same way).

    python bench/bench_teacher_scoring.py                              # ~12 min on 2 busy cores
    python bench/bench_teacher_scoring.py --queries 20 --time-pairs 0  # 2,000 pairs, all timed
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path


def build_parser():
    p = C.precision_parser(__doc__.split("\n\n")[0], compared="logit", ndcg="re-rank nDCG@10",
                           max_length_help="query + document length (tokens)")
    p.add_argument("--queries", type=int, default=5, help="test queries whose BM25 top-k is scored (0: all)")
    p.add_argument("--time-pairs", type=int, default=256, help="pairs scored per timed repeat (0: all)")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    p.add_argument("--teacher", default=None, help="a saved dualist teacher (pooling='cls'); default: a "
                                                    "fresh head on minilm-l6, saved to a temporary folder")
    p.add_argument("--quality-teacher", default=None,
                   help="a trained dualist teacher folder (any pooling) for the reduced-precision re-rank check; "
                        "default: the timed teacher")
    p.add_argument("--pairs-file", default=None, help=__import__("argparse").SUPPRESS)
    return p


def make_teacher(args, workdir: Path) -> str:
    if args.teacher:
        return args.teacher
    import torch

    from dualist.models import CrossEncoder

    torch.manual_seed(0)
    path = CrossEncoder(model="minilm-l6", max_length=args.max_length, pooling="cls").save_pretrained(
        workdir / "teacher")
    return str(path)


def make_pairs(args, ds) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(qid, did) pairs of the BM25 top-``depth``, with their query and document texts."""
    from dualist.candidates.bm25 import BM25Retriever

    queries = ds.queries_for("test")
    qids = list(queries)[: args.queries] if args.queries > 0 else list(queries)
    run = BM25Retriever().index(ds).search({q: queries[q] for q in qids}, k=args.depth)
    pairs = [(q, d) for q in qids for d in run.get(q, {})]
    return pairs, [queries[q] for q, _ in pairs], [ds.doc_text(d) for _, d in pairs]


def make_side(name: str, teacher: str, args):
    if name == "peer":
        from sentence_transformers import CrossEncoder as STCrossEncoder

        st = STCrossEncoder(teacher, device="cpu", local_files_only=True, max_length=args.max_length)
        return lambda q, d: st.predict(list(zip(q, d)), batch_size=args.batch_size, show_progress_bar=False,
                                       convert_to_numpy=True)
    from dualist.models import CrossEncoder

    ce = CrossEncoder.from_pretrained(teacher, max_length=args.max_length)
    if name == "dualist-hf":  # the Hugging Face forward instead of the packed one
        ce.packed_inference = False
    elif name != "dualist":
        ce = ce.quantized(name.split("-", 1)[1])
    return lambda q, d: ce.score(q, d, batch_size=args.batch_size, show_progress=False)


def main() -> None:
    import json

    import numpy as np

    args = C.parse(build_parser())
    C.setup_env(args.threads)
    if args.rss_side:  # child: load one side, score the timed pairs once, exit
        data = json.loads(Path(args.pairs_file).read_text())
        fn = make_side(args.rss_side, data["teacher"], args)
        t = time.perf_counter()
        fn(data["queries"], data["docs"])
        C.emit_child_result({"seconds": time.perf_counter() - t})
        return

    info = C.machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="dualist-bench-teacher-"))
    ds = C.load_scifact(args.data)
    teacher = make_teacher(args, workdir)
    pairs, qtexts, dtexts = make_pairs(args, ds)
    n_time = args.time_pairs if 0 < args.time_pairs < len(pairs) else len(pairs)
    tq, td = qtexts[:n_time], dtexts[:n_time]
    pairs_file = workdir / "pairs.json"
    pairs_file.write_text(json.dumps({"teacher": teacher, "queries": tq, "docs": td}))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    sides = {v: make_side(v, teacher, args) for v in variants}
    print(f"timing: {n_time} pairs x {args.repeats} repeats per side, interleaved", flush=True)
    outputs, times = C.timed_outputs(
        {v: (lambda fn=sides[v]: np.asarray(fn(tq, td), dtype=np.float32)) for v in variants}, args.repeats,
        warm={v: (lambda fn=sides[v]: fn(tq[:8], td[:8])) for v in variants})  # warm-up: one small batch each
    pps = {v: n_time / C.median(times[v]) for v in variants}

    from dualist.evaluation import evaluate

    qrels = {q: rels for q, rels in ds.qrels_for("test").items() if q in {p[0] for p in pairs}}

    def ndcg(scores):
        run: dict[str, dict[str, float]] = {}
        for (q, d), s in zip(pairs, scores):
            run.setdefault(q, {})[d] = float(s)
        return float(evaluate(qrels, run, ["ndcg@10"]).mean["ndcg@10"])

    checked = [v for v in variants if v != "peer"]
    quality_teacher = args.quality_teacher or teacher
    print(f"re-rank check: {len(pairs)} pairs, {', '.join(checked)}, teacher {quality_teacher}", flush=True)
    if args.quality_teacher:
        qsides = {v: make_side(v, quality_teacher, args) for v in checked}
        full = {v: np.asarray(qsides[v](qtexts, dtexts), dtype=np.float32) for v in checked}
    else:
        full = {v: (outputs[v] if n_time == len(pairs) else np.asarray(sides[v](qtexts, dtexts), dtype=np.float32))
                for v in checked}
    ndcgs = {v: ndcg(full[v]) for v in checked}
    rss = {} if args.no_rss else C.peak_rss_of_sides(
        "bench_teacher_scoring.py", args, variants, extra=["--pairs-file", str(pairs_file)])
    rows = []
    for v in checked:
        if v in C.FLOAT32_VARIANTS:
            ref = "peer" if "peer" in outputs else "dualist"
            diff = float(np.abs(outputs[v] - outputs[ref]).max())
            ok = diff <= args.atol
            check = (f"max |logit diff| vs peer {diff:.1e} ({'OK' if ok else 'FAIL'} <= {args.atol:g}; "
                     f"logit std {float(np.std(outputs[ref])):.3g})")
        else:
            fp32 = ndcgs.get("dualist")
            corr = float(np.corrcoef(full[v], full["dualist"])[0, 1]) if "dualist" in full else float("nan")
            ok = fp32 is not None and abs(ndcgs[v] - fp32) <= args.ndcg_tol
            verdict = "OK" if ok else "FAIL"
            if not args.quality_teacher:  # the timed teacher is a fresh head: its ranking says nothing
                ok, verdict = None, "UNCHECKED: untrained teacher, pass --quality-teacher DIR"
            check = (f"re-rank nDCG@10 {ndcgs[v]:.4f} vs fp32 {fp32 if fp32 is not None else float('nan'):.4f} "
                     f"({verdict} within {args.ndcg_tol:g}, {len(pairs)} pairs); "
                     f"Pearson r to fp32 {corr:.4f}")
        rows.append(C.Row(f"teacher scoring, {v}", "pairs/s", pps[v], pps.get("peer"), goal=C.precision_goal(v),
                          dualist_rss=rss.get(v), peer_rss=rss.get("peer"), check=check,
                          extra={"check_ok": ok, "ndcg@10": ndcgs[v], "times_s": times[v],
                                 "peer_times_s": times.get("peer")}))
    print(f"{len(pairs)} pairs of {len({p[0] for p in pairs})} queries; timed teacher {teacher}; quality "
          f"teacher {quality_teacher}; re-rank nDCG@10 "
          + ", ".join(f"{v} {x:.4f}" for v, x in ndcgs.items()))
    C.report(f"bench_teacher_scoring: SciFact BM25 pairs, length {args.max_length}, batch {args.batch_size}",
             rows, info, args)


if __name__ == "__main__":
    main()

"""BM25 candidates: dualist ``BM25Retriever.search`` vs bm25s called directly, SciFact test, top-100.

Both sides score with the same analyzer (dualist's Lucene-like tokenizer, Porter stemmer, Lucene's
English stop words) and the same bm25s index settings (``method="lucene"``, k1=0.9, b=0.4): the peer
tokenizes the corpus with that analyzer and calls ``bm25s.BM25(...).index(tokens)`` and
``retrieve(query_tokens, k=100)`` itself (bm25s's default single-threaded backend). Timed: query
tokenization + retrieval for all test queries, on both sides (dualist's time includes building its
``{qid: {doc: score}}`` run; the peer's returns arrays). Indexing is timed too, for information.
Check: for every query, the same scores at every rank (within 1e-5) and the same documents except
where scores tie.

    python bench/bench_bm25.py                       # SciFact test (300 queries)
    python bench/bench_bm25.py --split train         # 809 queries
"""

from __future__ import annotations

import time

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path

SIDES = ("dualist", "peer")


def build_parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(C.DEFAULT_SCIFACT), help="BEIR folder")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=100)
    p.set_defaults(repeats=5)
    return p


def make_side(side: str, ds):
    """(index() -> searcher, searcher(queries) -> result) for one side."""
    from dualist.candidates.bm25 import BM25Retriever

    if side == "dualist":
        def index():
            return BM25Retriever().index(ds, show_progress=False)

        return index, lambda r, queries, k: r.search(queries, k=k, show_progress=False)

    import bm25s

    analyzer = BM25Retriever().analyzer  # the same terms as dualist
    doc_ids = list(ds.corpus)

    def index():
        tokens = [analyzer(ds.doc_text(d)) for d in doc_ids]
        bm = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
        bm.index(tokens, show_progress=False)
        return bm

    def search(bm, queries, k):
        tokens = [analyzer(t) for t in queries.values()]
        return bm.retrieve(tokens, k=k, show_progress=False)

    return index, search


def as_run(side: str, result, ds, queries) -> dict[str, list[tuple[str, float]]]:
    if side == "dualist":
        return {q: list(docs.items()) for q, docs in result.items()}
    doc_ids = list(ds.corpus)
    docs, scores = result.documents, result.scores
    return {q: [(doc_ids[int(d)], float(s)) for d, s in zip(docs[i], scores[i]) if s > 0]
            for i, q in enumerate(queries)}


def compare(a, b, tol: float = 1e-5) -> tuple[bool, str]:
    bad_scores = bad_docs = 0
    max_diff = 0.0
    for q in b:
        ra, rb = a.get(q, []), b[q]
        if len(ra) != len(rb):
            bad_scores += 1
            continue
        diffs = [abs(x[1] - y[1]) for x, y in zip(ra, rb)]
        max_diff = max([max_diff, *diffs])
        if any(d > tol for d in diffs):
            bad_scores += 1
            continue
        # documents may differ only inside groups of tied scores (and at a tie straddling the cut)
        kth = rb[-1][1] if rb else 0.0
        sa = {d for d, s in ra if s > kth + tol}
        sb = {d for d, s in rb if s > kth + tol}
        if sa != sb:
            bad_docs += 1
    ok = bad_scores == 0 and bad_docs == 0
    return ok, (f"{len(b)} queries: score lists differ {bad_scores}, document sets differ {bad_docs} "
                f"(beyond ties), max |score diff| {max_diff:.1e}")


def main() -> None:
    args = C.parse(build_parser())
    C.setup_env(args.threads)
    ds = C.load_scifact(args.data)
    queries = ds.queries_for(args.split)
    if args.rss_side:  # child: index and search once
        index, search = make_side(args.rss_side, ds)
        t = time.perf_counter()
        search(index(), queries, args.k)
        C.emit_child_result({"seconds": time.perf_counter() - t})
        return
    info = C.machine_info()
    sides = {s: make_side(s, ds) for s in SIDES}
    indexes: dict[str, object] = {}
    results: dict[str, object] = {}

    def do_index(s):
        def run():
            indexes[s] = sides[s][0]()
        return run

    def do_search(s):
        def run():
            results[s] = sides[s][1](indexes[s], queries, args.k)
        return run

    ti = C.interleaved({s: do_index(s) for s in SIDES}, args.repeats, warmup=1)
    ts = C.interleaved({s: do_search(s) for s in SIDES}, args.repeats, warmup=1)
    runs = {s: as_run(s, results[s], ds, queries) for s in SIDES}
    ok, check = compare(runs["dualist"], runs["peer"])
    rss = {} if args.no_rss else C.peak_rss_of_sides("bench_bm25.py", args, SIDES)
    n = len(queries)
    rows = [
        C.Row(f"BM25 top-{args.k}, SciFact {args.split} ({n} queries)", "queries/s",
              n / C.median(ts["dualist"]), n / C.median(ts["peer"]), goal=0.9,
              dualist_rss=rss.get("dualist"), peer_rss=rss.get("peer"), check=("OK " if ok else "FAIL ") + check,
              extra={"check_ok": ok, "times_s": ts}),
        C.Row(f"BM25 indexing, SciFact corpus ({len(ds.corpus)} docs)", "docs/s",
              len(ds.corpus) / C.median(ti["dualist"]), len(ds.corpus) / C.median(ti["peer"]),
              dualist_rss=rss.get("dualist"), peer_rss=rss.get("peer"),
              check="same analyzer and bm25s settings on both sides", extra={"times_s": ti}),
    ]
    C.report("bench_bm25: BM25 candidates (dualist BM25Retriever vs bm25s directly)", rows, info, args)


if __name__ == "__main__":
    main()

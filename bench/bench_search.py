"""Exact top-k search: dualist ``ExactIndex`` vs ``faiss.IndexFlatIP``, batched and one query at a time.

Both sides index the same seeded random unit vectors (``--sizes`` rows x ``--dim`` float32) and
search the same unit queries for the top ``--k`` inner products: a batch of ``--queries`` queries
in one call, then ``--single`` queries one call each (the serving pattern). Index building is not
timed. Check: the same ids in the same order for every query (a difference is tolerated only
between hits whose scores are within 1e-5, i.e. float rounding of near-ties), scores within 1e-5.

    python bench/bench_search.py                          # 100k x 384 (~2 min)
    python bench/bench_search.py --sizes 100000,1000000   # and 1M x 384 (needs ~5 GB of RAM)
"""

from __future__ import annotations

import gc
import time

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path

SIDES = ("dualist", "peer")


def build_parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000", help="comma-separated corpus sizes")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=300, help="queries in the batched search")
    p.add_argument("--single", type=int, default=100, help="queries searched one call each")
    p.add_argument("--size", type=int, default=None, help=__import__("argparse").SUPPRESS)  # child: one size
    return p


def unit_rows(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 65536):  # in blocks: no float64 copy of a 1M-row corpus
        block = rng.standard_normal((min(65536, n - s), dim), dtype=np.float32)
        out[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def build(side: str, emb):
    """``search(queries, k) -> (ids as int array (nq, k), scores)`` for one side."""
    import numpy as np

    if side == "peer":
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)

        def search(q, k):
            scores, ids = index.search(q, k)
            return ids, scores

        return search
    from dualist.index import ExactIndex

    index = ExactIndex()
    index.add([str(i) for i in range(len(emb))], emb)

    def search(q, k):
        res = index.search(q, k)
        return np.array([[int(i) for i in row] for row in res.ids], dtype=np.int64), res.scores

    return search


def compare(a, b, tol: float = 1e-5) -> tuple[bool, str]:
    import numpy as np

    (ia, sa), (ib, sb) = a, b
    score_diff = float(np.abs(sa - sb).max())
    bad = 0
    for r in range(ia.shape[0]):
        for j in np.flatnonzero(ia[r] != ib[r]):
            # a swap is fine only if the two sides' hits at this place have (nearly) the same score
            near = np.abs(sa[r] - sa[r, j]) <= tol
            if ib[r, j] not in set(ia[r, near].tolist()):
                bad += 1
                break
    ok = bad == 0 and score_diff <= tol
    return ok, f"{ia.shape[0]} queries: rows with other ids {bad}, max |score diff| {score_diff:.1e}"


def child(args) -> None:
    emb = unit_rows(args.size, args.dim, seed=0)
    search = build(args.rss_side, emb)
    del emb
    gc.collect()
    q = unit_rows(args.queries, args.dim, seed=1)
    t = time.perf_counter()
    search(q, args.k)
    C.emit_child_result({"seconds": time.perf_counter() - t})


def main() -> None:
    args = C.parse(build_parser())
    C.setup_env(args.threads)
    if args.rss_side:
        child(args)
        return
    info = C.machine_info()
    rows = []
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        emb = unit_rows(n, args.dim, seed=0)
        q = unit_rows(args.queries, args.dim, seed=1)
        sides = {s: build(s, emb) for s in SIDES}
        del emb
        gc.collect()
        out: dict[str, tuple] = {}

        def batched(s):
            def run():
                out[s] = sides[s](q, args.k)
            return run

        single_q = q[: args.single]
        single_out: dict[str, list] = {}

        def single(s):
            def run():
                single_out[s] = [sides[s](single_q[i:i + 1], args.k) for i in range(len(single_q))]
            return run

        print(f"{n} x {args.dim}: batch of {args.queries} and {len(single_q)} single queries, "
              f"{args.repeats} repeats per side", flush=True)
        tb = C.interleaved({s: batched(s) for s in SIDES}, args.repeats, warmup=1)
        ts = C.interleaved({s: single(s) for s in SIDES}, args.repeats, warmup=1)
        ok_b, check_b = compare(out["dualist"], out["peer"])
        import numpy as np

        cat = {s: (np.concatenate([x[0] for x in single_out[s]]), np.concatenate([x[1] for x in single_out[s]]))
               for s in SIDES}
        ok_s, check_s = compare(cat["dualist"], cat["peer"])
        del sides, out, single_out
        gc.collect()
        rss = {} if args.no_rss else C.peak_rss_of_sides("bench_search.py", args, SIDES,
                                                        extra=["--size", str(n)])
        qps_b = {s: args.queries / C.median(tb[s]) for s in SIDES}
        qps_s = {s: len(single_q) / C.median(ts[s]) for s in SIDES}
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}M"
        rows.append(C.Row(f"exact top-{args.k}, {label}x{args.dim}, batch {args.queries}", "queries/s",
                          qps_b["dualist"], qps_b["peer"], goal=0.9, dualist_rss=rss.get("dualist"),
                          peer_rss=rss.get("peer"), check=("OK " if ok_b else "FAIL ") + check_b,
                          extra={"check_ok": ok_b, "times_s": tb}))
        rows.append(C.Row(f"exact top-{args.k}, {label}x{args.dim}, one at a time", "queries/s",
                          qps_s["dualist"], qps_s["peer"], goal=0.9, dualist_rss=rss.get("dualist"),
                          peer_rss=rss.get("peer"), check=("OK " if ok_s else "FAIL ") + check_s,
                          extra={"check_ok": ok_s, "times_s": ts}))
    C.report(f"bench_search: exact inner-product top-{args.k}", rows, info, args)


if __name__ == "__main__":
    main()

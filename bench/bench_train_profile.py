"""Where a float32 training step's time goes, and what a faster matrix product could still buy.

1. The profile: one forward + backward of all-MiniLM-L6-v2 in training mode (dropout on, the Hugging
   Face forward, as sentence-transformers' trainer runs it) on ``--batch`` texts of ``--length``
   tokens, under ``torch.profiler``; the self CPU time of every op, grouped into matrix products
   (``mm``/``addmm``/``bmm``/``linear``), attention, GELU, dropout, layer norm, softmax and the rest.
2. The products: the step's Linear shapes (``N x 384 -> 1152`` for Q/K/V, ``384 -> 384``,
   ``384 -> 1536``, ``1536 -> 384``) in all three of their training products (forward ``X W^T``,
   input gradient ``dY W``, weight gradient ``dY^T X``) at ``N = batch x length`` rows, through
   ``torch.mm`` (MKL) and through oneDNN's linear (what dualist's packed inference uses), interleaved.

No goal: it says how much of a step a faster product could remove (issue 19's question for AVX2
CPUs; run it with ``--cpu-cap avx2`` too).

    python bench/bench_train_profile.py                  # ~2 min on 2 cores
    python bench/bench_train_profile.py --cpu-cap avx2
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path

GROUPS = (  # (group, substrings of op names), first match wins
    ("matrix products", ("addmm", "aten::mm", "aten::bmm", "aten::linear", "matmul")),
    ("attention (softmax, masks)", ("softmax", "scaled_dot_product", "masked_fill", "aten::where")),
    ("GELU", ("gelu",)),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("layer norm", ("layer_norm",)),
    ("embedding", ("embedding",)),
)
SHAPES = ((384, 1152), (384, 384), (384, 1536), (1536, 384))


def build_parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="texts per step (the training benchmark's 16 x (1 + 7))")
    p.add_argument("--length", type=int, default=128, help="tokens per text")
    return p


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other (copies, adds, reductions, autograd)"


def profile_step(model, ids, mask) -> tuple[float, dict[str, float]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    def step():
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()

    step()  # warm-up
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    wall = time.perf_counter() - t
    groups: dict[str, float] = {}
    for ev in prof.key_averages():
        groups[group_of(ev.key)] = groups.get(group_of(ev.key), 0.0) + ev.self_cpu_time_total / 1e6
    del torch
    return wall, groups


def gemm_seconds(rows: int, repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` seconds of each training product, per shape, through mm and oneDNN."""
    import torch

    from dualist.models.packed import onednn_available

    def best(fn) -> float:
        fn()
        b = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            b = min(b, time.perf_counter() - t)
        return b

    def dnn(a, w):  # a (M, K) @ w (O, K)^T, the weight packed on every call, as training would need
        return torch.ops.mkldnn._linear_pointwise(a, torch.ops.mkldnn._reorder_linear_weight(w, a.shape[0]),
                                                  None, "none", [], "")

    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for k, o in SHAPES:
            x, w, dy = torch.randn(rows, k), torch.randn(o, k), torch.randn(rows, o)
            products = {"forward": (x, w), "input grad": (dy, w.t().contiguous()),
                        "weight grad": (dy.t().contiguous(), x.t().contiguous())}
            for name, (a, b) in products.items():
                key = f"{k}->{o} {name}"
                out[key] = {"flop": 2.0 * rows * k * o, "mm": best(lambda: torch.mm(a, b.t()))}
                out[key]["onednn"] = best(lambda: dnn(a, b)) if onednn_available() else float("nan")
    return out


def main() -> None:
    args = C.parse(build_parser())
    C.setup_env(args.threads)
    import torch
    from transformers import AutoModel

    info = C.machine_info()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(C.minilm_path()).train()
    ids = torch.randint(1000, 20000, (args.batch, args.length))
    mask = torch.ones_like(ids)
    wall, groups = profile_step(model, ids, mask)
    gemms = gemm_seconds(args.batch * args.length, args.repeats)
    total = sum(groups.values())
    mm_total = sum(g["mm"] for g in gemms.values())
    dnn_total = sum(g["onednn"] for g in gemms.values())

    print("\n== bench_train_profile: one float32 training step of MiniLM-L6, by op class")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info.get('torch_threads')}, "
          f"{C.cpu_class_line(info)}, {info['date']}" + (f" ({C.shared_note(info)})" if info["shared"] else ""))
    print(f"step: {args.batch} texts x {args.length} tokens, forward + backward, {wall:.2f} s wall "
          f"(profiled ops' self time {total:.2f} s)")
    print(f"{'op class':42s} {'seconds':>8s} {'share':>6s}")
    for name, sec in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{name:42s} {sec:8.2f} {sec / total:6.0%}")
    print(f"\ntraining products at {args.batch * args.length} rows (best of {args.repeats}), GFLOP/s:")
    print(f"{'product':28s} {'torch.mm':>9s} {'oneDNN':>9s}")
    for key, g in gemms.items():
        print(f"{key:28s} {g['flop'] / g['mm'] / 1e9:9.0f} {g['flop'] / g['onednn'] / 1e9:9.0f}")
    print(f"all products of one layer: torch.mm {mm_total:.3f} s, oneDNN (weights packed per call) {dnn_total:.3f} s "
          f"= {mm_total / dnn_total:.2f}x")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "machine": info, "command": sys.argv, "step_seconds": wall, "op_seconds": groups,
            "gemms": gemms, "layer_products_mm_s": mm_total, "layer_products_onednn_s": dnn_total}, indent=2) + "\n")


if __name__ == "__main__":
    main()

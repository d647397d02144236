"""How close encoding gets to the machine: matmul GFLOP/s on these cores vs model FLOPs/token x tokens/s.

1. The ceiling: GFLOP/s of a large square fp32 matmul (``torch.mm``, ``--n`` x ``--n``) and of the
   model's own GEMM shape (``tokens x 384 @ 384 x 1536``), and the same in bf16, with torch's threads;
   in fp32 also through oneDNN's prepacked linear (what dualist's packed forward uses where torch
   has it), which on some CPUs is faster than ``torch.mm``. Utilisation is against the faster one.
2. The model: all-MiniLM-L6-v2 FLOPs per token at the measured mean length, counted analytically
   (2 x multiply-adds of every Linear, plus QK^T and AV of attention); the Linear part is checked
   against ``torch.utils.flop_counter.FlopCounterMode`` on a real batch (which has no formula for
   the CPU flash-attention kernel).
3. The achieved rate: dualist ``encode_docs`` tokens/s (fp32, and the bf16 / int8 copies) on
   ``--docs`` SciFact documents at ``--max-length`` tokens, times FLOPs/token.

Utilisation = achieved GFLOP/s / matmul GFLOP/s. The peer (sentence-transformers ``encode``) is
measured alongside, interleaved, for the same figure. No goal; it says where the time goes.

    python bench/bench_ceiling.py                # ~3 min
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path


def build_parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(C.DEFAULT_SCIFACT), help="BEIR folder (SciFact)")
    p.add_argument("--docs", type=int, default=128, help="documents encoded per repeat")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=2048, help="square matmul size for the ceiling")
    return p


def gemm_gflops(m: int, k: int, n: int, dtype, repeats: int) -> float:
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def onednn_gflops(m: int, k: int, n: int, repeats: int) -> float:
    """fp32 ``(m x k) @ (k x n)`` through oneDNN's prepacked linear; nan where torch has none."""
    import torch

    from dualist.models.packed import onednn_available

    if not onednn_available():
        return float("nan")
    x = torch.randn(m, k)
    w = torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, k), m)
    with torch.inference_mode():
        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def flops_per_token(cfg, mean_len: float) -> float:
    """Analytic forward FLOPs per token of a BERT encoder (Linear layers + attention products)."""
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    linear = 2 * (4 * d * d + 2 * d * ff)  # Q, K, V, attention output; FFN up and down
    attention = 2 * 2 * mean_len * d  # QK^T and AV: each d multiply-adds per (token, key)
    return layers * (linear + attention)


def main() -> None:
    args = C.parse(build_parser())
    C.setup_env(args.threads)
    import numpy as np
    import torch

    info = C.machine_info()
    ds = C.load_scifact(args.data)
    texts = [ds.doc_text(d) for d in list(ds.corpus)[: args.docs]]

    from dualist.models import DualEncoder

    de = DualEncoder(model="minilm-l6", doc_max_length=args.max_length)
    lengths = [len(x) for x in de.tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    n_tokens, mean_len = sum(lengths), float(np.mean(lengths))
    fpt = flops_per_token(de.doc_model.config, mean_len)

    # FlopCounterMode on one real batch, to check the analytic count (it counts mm/bmm/sdpa)
    from torch.utils.flop_counter import FlopCounterMode

    batch = de.tokenizer(texts[:8], padding=True, truncation=True, max_length=args.max_length,
                         return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        de.doc_model(**batch)
    padded = batch["input_ids"].numel()
    counted = counter.get_total_flops() / padded
    # FlopCounterMode has no formula for the CPU flash-attention kernel: compare Linear FLOPs only
    analytic_linear = flops_per_token(de.doc_model.config, 0)

    sq32 = gemm_gflops(args.n, args.n, args.n, torch.float32, args.repeats)
    sqbf = gemm_gflops(args.n, args.n, args.n, torch.bfloat16, args.repeats)
    shape32 = gemm_gflops(args.batch_size * mean_len.__int__(), 384, 1536, torch.float32, args.repeats)
    shapebf = gemm_gflops(args.batch_size * mean_len.__int__(), 384, 1536, torch.bfloat16, args.repeats)
    sq_dnn = onednn_gflops(args.n, args.n, args.n, args.repeats)
    shape_dnn = onednn_gflops(args.batch_size * mean_len.__int__(), 384, 1536, args.repeats)
    best32 = max(sq32, shape32, *(g for g in (sq_dnn, shape_dnn) if g == g))

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(C.minilm_path(), device="cpu")
    st.max_seq_length = args.max_length
    q8, bf = de.quantized("int8"), de.quantized("bf16")
    sides = {
        "dualist fp32": lambda: de.encode_docs(texts, batch_size=args.batch_size, show_progress=False),
        "peer fp32": lambda: st.encode(texts, batch_size=args.batch_size, show_progress_bar=False),
        "dualist bf16": lambda: bf.encode_docs(texts, batch_size=args.batch_size, show_progress=False),
        "dualist int8": lambda: q8.encode_docs(texts, batch_size=args.batch_size, show_progress=False),
    }
    from dualist.models.onnx_runtime import onnx_available

    if onnx_available():  # the ONNX Runtime copies (pip install -e '.[onnx]')
        o32, o8 = de.quantized("onnx-fp32"), de.quantized("onnx-int8")
        sides["dualist onnx-fp32"] = lambda: o32.encode_docs(texts, batch_size=args.batch_size, show_progress=False)
        sides["dualist onnx-int8"] = lambda: o8.encode_docs(texts, batch_size=args.batch_size, show_progress=False)
    for fn in sides.values():
        fn()
    times = C.interleaved(sides, args.repeats, warmup=0)
    print(f"\n== bench_ceiling: MiniLM-L6 encoding vs the machine's matmul rate")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info.get('torch_threads')}, "
          f"{info['date']}" + (f" ({C.shared_note(info)})" if info["shared"] else ""))
    print(f"ceiling: fp32 matmul {args.n}^3 {sq32:.0f} GFLOP/s, model GEMM shape ({args.batch_size}x{int(mean_len)})x384"
          f"@384x1536 {shape32:.0f} GFLOP/s; oneDNN fp32 {sq_dnn:.0f} / {shape_dnn:.0f} GFLOP/s; "
          f"bf16 {sqbf:.0f} / {shapebf:.0f} GFLOP/s")
    print(f"model: {fpt / 1e6:.1f} MFLOP/token at mean length {mean_len:.0f} (analytic, attention included); "
          f"FlopCounterMode on a padded batch: {counted / 1e6:.1f} MFLOP/token vs analytic Linear-only "
          f"{analytic_linear / 1e6:.1f} (it does not count the CPU flash-attention kernel)")
    print(f"{'side':17s} {'docs/s':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of fp32 mm':>10s} {'of bf16 mm':>10s}"
          f"   (fp32 mm: the fastest fp32 rate above, {best32:.0f} GFLOP/s)")
    out = {}
    for name, ts in times.items():
        tps = n_tokens / C.median(ts)
        gf = tps * fpt / 1e9
        out[name] = {"docs_per_s": len(texts) / C.median(ts), "tokens_per_s": tps, "gflops": gf}
        print(f"{name:17s} {len(texts) / C.median(ts):8.2f} {tps:9.0f} {gf:8.1f} {gf / best32:10.0%} {gf / sqbf:10.0%}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "machine": info, "command": sys.argv, "matmul_gflops": {"fp32_square": sq32, "bf16_square": sqbf,
                                                                    "fp32_model_shape": shape32,
                                                                    "bf16_model_shape": shapebf,
                                                                    "fp32_square_onednn": sq_dnn,
                                                                    "fp32_model_shape_onednn": shape_dnn,
                                                                    "fp32_best": best32},
            "flops_per_token": fpt, "flop_counter_per_padded_token": counted, "mean_length": mean_len,
            "sides": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Render the ``--json`` files of the benchmarks as Markdown tables (the body of RESULTS.md).

    python bench/results.py out/bm25.json out/search.json ... > results-tables.md

One section per file: its title, the machine line (cores, torch threads, date, load, and the other
busy processes when the machine was shared), the exact command, and the rows with both sides'
figures, the ratio against the goal, each side's peak RSS and the equivalence check. The file of
``bench_ceiling.py`` gets the measured matmul rates and each encoder's share of them instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def gib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**30:.2f} GiB"


def num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.3f}"


def machine_line(m: dict) -> str:
    busy = m.get("other_busy_processes") or []
    shared = ("" if not m.get("shared") else " — **shared** with: " + "; ".join(busy) if busy
              else " — load average raised at start, no other busy process seen")
    cls = ""
    if "cpu_class" in m:  # records from before the CPU class was recorded have none
        caps = m.get("cpu_caps") or {}
        cls = (f"; CPU class {m['cpu_class']} (hardware: {' '.join(m.get('isa_flags') or []) or '?'}"
               + (f"; caps {' '.join(f'{k}={v}' for k, v in caps.items())}, ONNX Runtime uncapped" if caps else "")
               + ")")
    return (f"{m['cpu']}, {m['cores']} cores, torch {m.get('torch')} with {m.get('torch_threads')} threads, "
            f"Python {m.get('python')}, {m['date']}, load average at start {m.get('load_avg_1m_at_start')}{cls}{shared}")


def ceiling_section(payload: dict) -> str:
    """``bench_ceiling.py --json``: the matmul rates, then each encoder's throughput as a share of them."""
    mm = payload["matmul_gflops"]
    peak32 = mm.get("fp32_best", mm["fp32_square"])  # files before the oneDNN rates: torch.mm's square
    dnn = (f"; through oneDNN {num(mm['fp32_square_onednn'])} / {num(mm['fp32_model_shape_onednn'])}"
           if "fp32_square_onednn" in mm else "")
    lines = ["### bench_ceiling: MiniLM-L6 encoding vs the machine's matmul rate", "", machine_line(payload["machine"]),
             "", "```", "python " + " ".join(payload["command"]), "```", "",
             f"fp32 matmul {num(mm['fp32_square'])} GFLOP/s square, {num(mm['fp32_model_shape'])} in the model's GEMM "
             f"shape{dnn} (the fp32 peak below: {num(peak32)}); bf16 {num(mm['bf16_square'])} / "
             f"{num(mm['bf16_model_shape'])}. The model: "
             f"{payload['flops_per_token'] / 1e6:.1f} MFLOP per token at mean length {payload['mean_length']:.0f}.",
             "", "| side | docs/s | tokens/s | GFLOP/s | of the fp32 peak | of the bf16 peak |", "|---|--:|--:|--:|--:|--:|"]
    for name, side in payload["sides"].items():
        gf = side["gflops"]
        lines.append(f"| {name} | {num(side['docs_per_s'])} | {num(side['tokens_per_s'])} | {num(gf)} "
                     f"| {gf / peak32:.0%} | {gf / mm['bf16_square']:.0%} |")
    return "\n".join(lines) + "\n"


def section(payload: dict) -> str:
    if "matmul_gflops" in payload:
        return ceiling_section(payload)
    lines = [f"### {payload['title']}", "", machine_line(payload["machine"]),
             "", "```", "python " + " ".join(payload["command"]), "```", "",
             "| what | dualist | peer | dualist / peer | goal | met | peak RSS dualist | peak RSS peer | check |",
             "|---|--:|--:|--:|--:|:-:|--:|--:|---|"]
    for r in payload["rows"]:
        ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else "-"
        goal = f"≥ {r['goal']:.2f}×" if r.get("goal") is not None else "-"
        check = r["check"].replace("|", "\\|")
        lines.append(f"| {r['what']} ({r['unit']}) | {num(r['dualist'])} | {num(r.get('peer'))} | {ratio} | {goal} "
                     f"| {r.get('met', '-')} | {gib(r.get('dualist_rss'))} | {gib(r.get('peer_rss'))} | {check} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSON files written by the benchmarks' --json")
    args = p.parse_args(argv)
    parts = []
    for f in args.files:
        try:
            payload = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{f}: not a benchmark result ({exc}); pass the files written with --json")
        if not isinstance(payload, dict) or not ({"title", "machine", "command", "rows"} <= payload.keys()
                                                 or {"machine", "command", "matmul_gflops", "sides"} <= payload.keys()):
            raise SystemExit(f"{f}: missing one of title/machine/command/rows (or, from bench_ceiling, "
                             "matmul_gflops/sides); pass the files written with --json")
        parts.append(section(payload))
    sys.stdout.write("\n".join(parts))


if __name__ == "__main__":
    main()

"""Render the ``--json`` files of the benchmarks as Markdown tables (the body of RESULTS.md).

    python bench/results.py out/bm25.json out/search.json ... > results-tables.md

One section per file: its title, the machine line (cores, torch threads, date, load, and the other
busy processes when the machine was shared), the exact command, and the rows with both sides'
figures, the ratio against the goal, each side's peak RSS and the equivalence check.
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


def section(payload: dict) -> str:
    m = payload["machine"]
    busy = m.get("other_busy_processes") or []
    shared = ("" if not m.get("shared") else " — **shared** with: " + "; ".join(busy) if busy
              else " — load average raised at start, no other busy process seen")
    lines = [f"### {payload['title']}", "",
             f"{m['cpu']}, {m['cores']} cores, torch {m.get('torch')} with {m.get('torch_threads')} threads, "
             f"Python {m.get('python')}, {m['date']}, load average at start {m.get('load_avg_1m_at_start')}{shared}",
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
        if not {"title", "machine", "command", "rows"} <= payload.keys():
            raise SystemExit(f"{f}: missing one of title/machine/command/rows; pass the files written with --json")
        parts.append(section(payload))
    sys.stdout.write("\n".join(parts))


if __name__ == "__main__":
    main()

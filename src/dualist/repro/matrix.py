"""The reproduction matrix: conditions × datasets with the figures obtained and a tolerance.

``matrix.yaml`` (packaged beside this module) is data, like Pyserini's reproduction matrices:
``dualist repro --check`` reruns every entry (finished stages are reused) and prints OK / FAIL per
figure; ``dualist repro --table`` prints the README's results table from the same file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml

from dualist.repro.plan import ReproArgs, run_repro

__all__ = ["load_matrix", "check_matrix", "print_table", "compare_rows", "record_entry", "MATRIX_PATH"]

logger = logging.getLogger(__name__)
MATRIX_PATH = Path(__file__).with_name("matrix.yaml")
TABLE_COLUMNS = ["re-rank MRR@10", "re-rank nDCG@10", "retrieval nDCG@10", "retrieval R@100"]


def load_matrix(path: str | Path | None = None) -> dict[str, Any]:
    from dualist.errors import ConfigError

    path = Path(path) if path else MATRIX_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data.get("entries"), list):
        raise ConfigError(f"{path}: expected a top-level 'entries' list")
    for i, e in enumerate(data["entries"]):
        for key in ("dataset", "profile", "expected"):
            if key not in e:
                raise ConfigError(f"{path}: entry {i} has no '{key}'")
    return data


def compare_rows(rows: list[dict[str, Any]], expected: dict[str, dict[str, float]],
                 tolerance: float) -> list[tuple[str, str, float | None, float, bool]]:
    """``(model, column, got, expected, ok)`` for every expected figure; a missing figure fails."""
    by = {r["model"]: r for r in rows}
    out = []
    for model, cols in expected.items():
        for col, want in cols.items():
            got = by.get(model, {}).get(col)
            ok = got is not None and abs(float(got) - float(want)) <= tolerance
            out.append((model, col, got, float(want), ok))
    return out


def check_matrix(args: ReproArgs) -> dict[str, Any]:
    """Rerun each matrix entry and print OK / FAIL per figure; exit status 1 when any fails."""
    matrix = load_matrix(args.matrix or None)
    tol = float(matrix.get("tolerance", 0.02))
    failures = 0
    report = []
    for entry in matrix["entries"]:
        label = f"{Path(entry['dataset']).name}-{entry['profile']}"
        sub = dataclasses.replace(args, check=False, table=False, dataset=entry["dataset"],
                                  profile=entry["profile"], seeds=int(entry.get("seeds", 1)),
                                  override=list(entry.get("override", args.override)),
                                  model=entry.get("model", args.model),
                                  losses=list(entry.get("losses", args.losses)),
                                  out=args.out and str(Path(args.out) / label))
        res = run_repro(sub)
        for model, col, got, want, ok in compare_rows(res["rows"], entry["expected"], entry.get("tolerance", tol)):
            failures += not ok
            shown = "missing" if got is None else f"{got:.3f}"
            line = (f"{'OK  ' if ok else 'FAIL'} {Path(entry['dataset']).name:<10} {entry['profile']:<6} {model:<24} "
                    f"{col:<18} got {shown} expected {want:.3f} ± {tol}")
            print(line)
            report.append(line)
    print(f"{len(report) - failures} OK, {failures} FAIL")
    if failures:
        raise SystemExit(1)
    return {"lines": report, "failures": failures}


def print_table(path: str | Path | None = None) -> str:
    """The README results table (Markdown), one block per dataset × profile, from the matrix."""
    from dualist.report import markdown_table

    matrix = load_matrix(path)
    blocks = []
    for entry in matrix["entries"]:
        rows = [{"model": m, **cols} for m, cols in entry["expected"].items()]
        head = f"**{entry['dataset']}**, `{entry['profile']}` profile, {entry.get('seeds', 1)} seed(s)"
        if entry.get("note"):
            head += f" — {entry['note']}"
        blocks.append(head + "\n\n" + markdown_table(rows, ["model", *TABLE_COLUMNS]))
    return "\n\n".join(blocks)


def record_entry(results: dict[str, Any], path: str | Path | None = None, *, dataset: str | None = None,
                 note: str = "") -> Path:
    """Write a finished run's figures into the matrix, replacing the entry of the same dataset/profile.

    Used by ``dualist repro --record``: the matrix only ever holds figures a run produced.
    """
    path = Path(path) if path else MATRIX_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    data = data or {"tolerance": 0.02, "entries": []}
    dataset = dataset or results["dataset"]
    expected = {r["model"]: {c: round(float(r[c]), 4) for c in TABLE_COLUMNS if r.get(c) is not None}
                for r in results["rows"]}
    entry = {"dataset": dataset, "profile": results["profile"], "seeds": results["settings"]["seeds"]}
    if results["settings"].get("override"):  # --check reruns the entry with the same overrides
        entry["override"] = list(results["settings"]["override"])
    # a run that resumed a work folder took less than a fresh one: its minutes are kept apart
    minutes = "resumed_run_minutes" if results["settings"].get("resumed work folder") else "wall_minutes"
    entry.update({minutes: round(results["timings"]["total"] / 60, 1), "dualist_version": results["version"],
                  "expected": expected})
    if note:
        entry["note"] = note
    entries = [e for e in data["entries"] if (e["dataset"], e["profile"]) != (dataset, results["profile"])]
    entries.append(entry)
    data["entries"] = sorted(entries, key=lambda e: (e["dataset"], e["profile"]))
    path.write_text("# Reproduction matrix: figures obtained by `dualist repro` (written by --record).\n"
                    "# `dualist repro --check --data-root DIR` reruns each entry and compares within the tolerance.\n"
                    + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path

"""The report stage: the summary, the paper's diagnostics and their plots, ``results.json`` and the report.

It is not cached: it is cheap next to the stages before it, and it records the run's own timings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dualist._io import read_json, write_json
from dualist.data import Dataset

__all__ = ["EvaluatedModel", "ReportConfig", "report_stage"]


@dataclass(frozen=True)
class EvaluatedModel:
    """A model to report: its id (``bm25``, ``zeroshot``, ``teacher`` or a loss name), its evaluation
    files (one per training seed) and its training probes (the score-evolution plot)."""

    id: str
    kind: Literal["bm25", "cross_encoder", "dual_encoder"]
    evaluations: tuple[Path, ...]
    probes: Path | None = None


@dataclass(frozen=True)
class ReportConfig:
    title: str
    models: tuple[EvaluatedModel, ...]
    results_path: Path                  # results.json
    seeds: int = 1
    gap_queries: int = 100              # how many training queries the train-vs-test gap used (for its text)
    notes: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    started_at: float | None = None     # time.time() at the start of the run: the total wall time
    header: Mapping[str, Any] = field(default_factory=dict)  # leading results.json fields (dataset, profile)
    # (label, training folder[, evaluation file]) of each trained model: the dev selection table
    trained: tuple[tuple[str, Path] | tuple[str, Path, Path], ...] = ()
    # the dev queries that picked the checkpoints, where a cap sampled them (None: all of dev). The dev
    # queries outside them are held out from selection: the table shows each model's re-rank on those
    select_queries: tuple[str, ...] | None = None


def report_stage(dataset: Dataset, config: ReportConfig, out: str | Path) -> Path:
    """Write ``out/index.html``, ``out/report.md`` (with their plots) and ``config.results_path``; returns ``out``."""
    from dualist import __version__
    from dualist.report import write_report
    from dualist.report.summary import ModelResults, summarize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {p: read_json(p) for m in config.models for p in m.evaluations}  # read once: summary and selection
    models = [ModelResults(m.id, m.kind, tuple(loaded[p] for p in m.evaluations), m.probes) for m in config.models]
    summary = summarize(models, seeds=config.seeds)
    diagnostics = _diagnostics(dataset, summary, out)
    timings = dict(config.timings)
    if config.started_at is not None:
        timings["total"] = time.time() - config.started_at
    rows, columns = summary.rows(), summary.columns()
    claims = [c.text for c in summary.claims]
    sections = [{"title": "Claims checked on this data", "text": "\n\n".join(claims), "image": None, "table": None}]
    if summary.targets:
        sections.append({"title": "Targets of the distillation recipe",
                         "text": "\n\n".join(t.text for t in summary.targets), "image": None, "table": None})
    sections += _diagnostic_sections(diagnostics, config)
    zeroshot = next((m.evaluations[0] for m in config.models if m.id == "zeroshot"), None)
    selection = _selection_rows(config.trained, config.select_queries, zeroshot, loaded)
    if selection:
        sel_columns = ["model", "chosen step", "steps", "dev nDCG@10", "kept start"]
        text = ("The step each model was taken at (dev nDCG@10 on the dev queries that choose checkpoints, "
                "evaluated at step 0 too). A model whose chosen step is 0 never beat its start on dev and is its "
                "starting model.")
        shown = [c for _, mean_col, diff_col in HELD_OUT for c in (mean_col, diff_col)
                 if any(mean_col in r for r in selection)]
        if shown:
            sel_columns += shown
            held = next(r["held-out dev queries"] for r in selection if "held-out dev queries" in r)
            text += (f" The held-out columns give nDCG@10 on the {held} dev queries that chose no checkpoint "
                     "(re-rank of the same candidates, and full-corpus retrieval for a dual-encoder), and the "
                     "difference from the zero-shot DE on them with a paired permutation test's p in "
                     "brackets: a choice that generalizes moves these queries the way it moved the others.")
        sections.append({"title": "Checkpoint selection on dev", "text": text, "image": None,
                         "table": {"rows": selection, "columns": sel_columns}})
    if summary.comparison is not None and summary.significance():
        sig_rows = [{"model": label, "mean diff nDCG@10": v["mean_diff"], "p-value": f"{v['p_value']:.4f}"}
                    for label, v in summary.significance().items()]
        sections.append({"title": "Paired permutation test vs DE one-hot (test re-rank nDCG@10)",
                         "text": f"{config.seeds} seed(s); per-query values averaged over seeds.", "image": None,
                         "table": {"rows": sig_rows, "columns": ["model", "mean diff nDCG@10", "p-value"]}})
    write_report(out, title=config.title, table_rows=rows, columns=columns, sections=sections,
                 settings=config.settings, timings=timings, version=__version__, notes=config.notes)
    write_json(config.results_path, {
        **config.header, "version": __version__, "rows": rows, "gaps": diagnostics["gaps"],
        "margins": diagnostics["margin_summary"], "significance": summary.significance(),
        "claims": [c.to_dict() for c in summary.claims], "targets": [t.to_dict() for t in summary.targets],
        "versus_start": list(summary.versus_start), "best_distilled_on_dev": summary.best_on_dev,
        "selection": selection, "settings": dict(config.settings), "timings": timings})
    return out


# the selection table's held-out columns: (results section, column of its mean, column of its difference)
HELD_OUT = (("rerank_dev", "held-out dev re-rank", "re-rank vs zero-shot (p)"),
            ("retrieval_dev", "held-out dev retrieval", "retrieval vs zero-shot (p)"))


def _selection_rows(trained: tuple[tuple[str, Path] | tuple[str, Path, Path], ...],
                    select_queries: tuple[str, ...] | None, zeroshot: Path | None,
                    loaded: Mapping[Path, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per trained model: the step its checkpoint was chosen at on dev, from its run's ``dualist.json``.

    Where the checkpoints were chosen on a sample of dev and the model's evaluation file is given, also its
    nDCG@10 on the other dev queries (re-rank, and retrieval for a dual-encoder), each against the zero-shot
    DE's on the same queries: the difference and a paired permutation test's p, as numbers
    (``<section> vs zero-shot`` and ``<section> p``) and as one cell. ``loaded`` holds evaluation files
    already read (by path); the others are read here.
    """
    from dualist._io import read_meta
    from dualist.evaluation import paired_test

    def read(path: Path | None) -> Mapping[str, Any] | None:
        if select_queries is None or path is None:
            return None
        if loaded is not None and path in loaded:
            return loaded[path]
        return read_json(path) if path.exists() else None

    zeroshot_evaluation = read(zeroshot)
    base = {section: _held_out(zeroshot_evaluation, section, select_queries) for section, _, _ in HELD_OUT}
    rows = []
    for label, folder, *evaluation in trained:
        meta = read_meta(folder) or {}
        row: dict[str, Any] = {"model": label, "chosen step": meta.get("best_step"), "steps": meta.get("steps"),
                               "dev nDCG@10": meta.get("best_metric"), "kept start": bool(meta.get("kept_start"))}
        own_evaluation = read(evaluation[0]) if evaluation and any(base.values()) else None
        for section, mean_col, diff_col in HELD_OUT:
            own = _held_out(own_evaluation, section, select_queries) if base[section] else None
            if own:
                diff, p = paired_test(own, base[section])
                row.update({"held-out dev queries": len(own), mean_col: float(np.mean(list(own.values()))),
                            f"{section} vs zero-shot": diff, f"{section} p": p, diff_col: f"{diff:+.4f} ({p:.3f})"})
        rows.append(row)
    return rows


def _held_out(evaluation: Mapping[str, Any] | None, section: str, select_queries: tuple[str, ...] | None,
              ) -> dict[str, float] | None:
    """Per-query nDCG@10 in ``section`` of an evaluation, for the dev queries outside ``select_queries``
    (None: no evaluation, no such queries, or no such section, e.g. a cross-encoder's retrieval or an
    evaluation made before it existed)."""
    if evaluation is None or select_queries is None:
        return None
    found = evaluation.get(section)
    if found is None:
        return None
    chosen = set(select_queries)
    held = {q: float(v) for q, v in found["per_query"]["ndcg@10"].items() if q not in chosen}
    return held or None


def _diagnostics(dataset: Dataset, summary: Any, out: Path) -> dict[str, Any]:
    """The paper's diagnostics for the teacher, the one-hot DE and the best distilled DE on dev (first seed)."""
    from dualist.diagnostics import normalized_margins, read_probes, score_distributions, score_evolution
    from dualist.report import plot_gap, plot_margins, plot_score_distributions, plot_score_evolution

    picked = {m.label: m for m in summary.models if m.id in ("teacher", "onehot")}
    if summary.best_on_dev is not None:
        best = summary.model(summary.best_on_dev)
        picked[best.label + " (best on dev)"] = best
    qrels = dataset.qrels_for("test")
    first = {label: m.evaluations[0] for label, m in picked.items()}
    margins = {label: normalized_margins(e["rerank_test_scores"], qrels) for label, e in first.items()}
    dists = {label: score_distributions(e["rerank_test_scores"], qrels, standardize="query_minmax")
             for label, e in first.items()}
    gaps = {label: {"train": e["rerank_train"]["mean"]["ndcg@10"], "test": e["rerank_test"]["mean"]["ndcg@10"]}
            for label, e in first.items()}
    evolutions = {label: score_evolution(read_probes(m.probes)) for label, m in picked.items()
                  if m.probes is not None and m.probes.exists()}
    images = {"gap": plot_gap(gaps, out / "gap.png", metric="re-rank nDCG@10"),
              "dists": plot_score_distributions(dists, out / "score_distributions.png"),
              "margins": plot_margins(margins, out / "margins.png")}
    if evolutions:
        images["evolution"] = plot_score_evolution(evolutions, out / "score_evolution.png")
    margin_summary = {label: {"median": float(np.median(list(m.values()))) if m else math.nan,
                              "mean": float(np.mean(list(m.values()))) if m else math.nan, "n": len(m)}
                      for label, m in margins.items()}
    teacher = next((m for m in summary.models if m.id == "teacher"), None)
    return {"gaps": gaps, "margin_summary": margin_summary, "images": images,
            "probe_query": _probe_query(teacher.probes if teacher is not None else None)}


def _diagnostic_sections(d: dict[str, Any], config: ReportConfig) -> list[dict[str, Any]]:
    gap_rows = [{"model": label, "train nDCG@10": g["train"], "test nDCG@10": g["test"], "gap": g["train"] - g["test"]}
                for label, g in d["gaps"].items()]
    margin_rows = [{"model": label, **ms} for label, ms in d["margin_summary"].items()]
    img = d["images"]
    sections = [
        {"title": "Train-vs-test gap (re-rank nDCG@10)",
         "text": f"Train: {config.gap_queries} training queries re-ranked like the test queries. A larger gap "
                 "means more overfitting (the paper's explanation of the DE's shortfall).",
         "image": img["gap"], "table": {"rows": gap_rows, "columns": ["model", "train nDCG@10", "test nDCG@10",
                                                                     "gap"]}},
        {"title": "Score distributions (test candidates, per-query min-max scaled)",
         "text": "Positives vs negatives among the re-ranked BM25 candidates.", "image": img["dists"], "table": None},
        {"title": "Normalized margins",
         "text": "(s+ - max_neg s) / (max s - min s) per test query; higher is better, scale-free.",
         "image": img["margins"], "table": {"rows": margin_rows, "columns": ["model", "median", "mean", "n"]}},
    ]
    if "evolution" in img:
        sections.append({"title": f"Score evolution (training query {d['probe_query']})",
                         "text": "Scores of 5 positives (solid) and 5 negatives (dashed) across training steps.",
                         "image": img["evolution"], "table": None})
    return sections


def _probe_query(probes: Path | None) -> str:
    if probes is not None and probes.exists():
        first = probes.read_text().splitlines()[:1]
        if first:
            return str(json.loads(first[0]).get("query_id", "?"))
    return "?"

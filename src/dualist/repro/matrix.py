"""The reproduction matrix: the figures each condition produced, the command that reproduces it, a tolerance.

``matrix.yaml`` (packaged beside this module) is data, like Pyserini's reproduction matrices. It is
keyed by ids, never by display labels: a condition id (``<dataset>-<profile>``, with ``+`` and the
``--override`` list appended for a condition that has one, and ``@`` with the base seed, seed count
and losses where they are not the defaults: :func:`condition_id`), then under
``expected`` a model id (``bm25``, ``zeroshot``, ``teacher`` or a loss name) and a figure id
(``rerank.ndcg@10``...; :mod:`dualist.report.labels` derives the labels). ``dualist repro --check``
reruns every condition (finished stages are reused) and prints OK / FAIL per figure; ``dualist repro
--table`` prints the README's results table from the same file; ``dualist repro --record`` writes a
finished run's figures into it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml

from dualist.errors import ConfigError
from dualist.losses import LOSS_NAMES
from dualist.report.labels import MODEL_LABELS, TABLE_METRICS, figure_label, is_count, model_label
from dualist.repro.plan import FOLDER_TOTAL, TIMINGS_LOG, ReproArgs, run_repro

__all__ = ["load_matrix", "check_matrix", "print_table", "compare_rows", "record_entry", "condition_id",
           "condition_command", "MATRIX_PATH"]

logger = logging.getLogger(__name__)
DEFAULT_SEED: int = next(f.default for f in dataclasses.fields(ReproArgs) if f.name == "seed")
MATRIX_PATH = Path(__file__).with_name("matrix.yaml")
HEADER = ("# Reproduction matrix: figures obtained by `dualist repro` (written by --record), keyed by\n"
          "# condition id, model id (bm25, zeroshot, teacher, or a loss name) and figure id.\n"
          "# `dualist repro --check --data-root DIR` reruns each condition and compares within the tolerance.\n")


def load_matrix(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a matrix: every condition has a dataset, a profile, a command and known ids."""
    path = Path(path) if path else MATRIX_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data.get("conditions"), dict):
        raise ConfigError(f"{path}: expected a top-level 'conditions' mapping (condition id -> condition)")
    for cid, cond in data["conditions"].items():
        for key in ("dataset", "profile", "command", "expected"):
            if key not in cond:
                raise ConfigError(f"{path}: condition {cid!r} has no '{key}'")
        for model, figures in cond["expected"].items():
            if model not in MODEL_LABELS:
                raise ConfigError(f"{path}: condition {cid!r}: unknown model id {model!r}; known: {list(MODEL_LABELS)}")
            for figure in figures:
                try:
                    figure_label(figure)
                except ValueError as exc:
                    raise ConfigError(f"{path}: condition {cid!r}, model {model!r}: {exc}") from None
    return data


def condition_id(dataset: str, profile: str, override: list[str] | tuple[str, ...] = (), *,
                 seed: int = DEFAULT_SEED, seeds: int = 1, losses: list[str] | tuple[str, ...] | None = None) -> str:
    """``<dataset>-<profile>``, then ``+`` and the overrides where a condition has any, then ``@`` and the
    run's base seed, student seed count and loss list where they differ from the defaults
    (``scifact-full@seed=14,seeds=3,losses=onehot+kl+m3se``), so a run of the defaults and one that
    switches part of the recipe off, starts from another seed or trains fewer students are separate
    conditions, not one replacing the other."""
    cid = f"{Path(dataset).name}-{profile}"
    if override:
        cid += f"+{','.join(override)}"
    run = []
    if int(seed) != DEFAULT_SEED:
        run.append(f"seed={int(seed)}")
    if int(seeds) != 1:
        run.append(f"seeds={int(seeds)}")
    if losses and list(losses) != list(LOSS_NAMES):
        run.append(f"losses={'+'.join(losses)}")
    return f"{cid}@{','.join(run)}" if run else cid


def condition_command(cond: dict[str, Any]) -> str:
    """The command line that reproduces a condition (the dataset found under ``--data-root``)."""
    parts = ["dualist repro", "--dataset", str(cond["dataset"]), "--profile", str(cond["profile"])]
    if int(cond.get("seed", DEFAULT_SEED)) != DEFAULT_SEED:
        parts += ["--seed", str(cond["seed"])]
    if int(cond.get("seeds", 1)) != 1:
        parts += ["--seeds", str(cond["seeds"])]
    if cond.get("losses") and list(cond["losses"]) != list(LOSS_NAMES):
        parts += ["--losses", ",".join(cond["losses"])]
    if cond.get("model"):
        parts += ["--model", str(cond["model"])]
    if cond.get("override"):
        parts += ["--override", ",".join(cond["override"])]
    return " ".join(parts)


def compare_rows(rows: list[dict[str, Any]], expected: dict[str, dict[str, float]],
                 tolerance: float) -> list[tuple[str, str, float | None, float, bool]]:
    """``(model id, figure id, got, expected, ok)`` for every expected figure; a missing figure fails.

    ``rows`` are ``results.json``'s (each with its model ``id`` and figures under their labels). A score
    passes within ``tolerance``; a count (distinct top-10 documents) within ``tolerance`` as a share of it.
    """
    by = {r["id"]: r for r in rows}
    out = []
    for model, figures in expected.items():
        for figure, want in figures.items():
            got = by.get(model, {}).get(figure_label(figure))
            slack = tolerance * abs(float(want)) if is_count(figure) else tolerance
            ok = got is not None and abs(float(got) - float(want)) <= slack
            out.append((model, figure, got, float(want), ok))
    return out


def check_matrix(args: ReproArgs) -> dict[str, Any]:
    """Rerun each condition and print OK / FAIL per figure; exit status 1 when any fails."""
    matrix = load_matrix(args.matrix or None)
    tol = float(matrix.get("tolerance", 0.02))
    failures = 0
    report = []
    for cid, cond in matrix["conditions"].items():
        # a condition reruns with the base seed it was recorded with (the default where it names none)
        sub = dataclasses.replace(args, check=False, table=False, dataset=cond["dataset"], profile=cond["profile"],
                                  seed=int(cond.get("seed", DEFAULT_SEED)), seeds=int(cond.get("seeds", 1)),
                                  override=list(cond.get("override", args.override)),
                                  model=cond.get("model", args.model), losses=list(cond.get("losses", args.losses)),
                                  out=args.out and str(Path(args.out) / cid))
        res = run_repro(sub)
        ctol = cond.get("tolerance", tol)
        for model, figure, got, want, ok in compare_rows(res["rows"], cond["expected"], ctol):
            failures += not ok
            fmt = ".0f" if is_count(figure) else ".3f"
            shown = "missing" if got is None else f"{got:{fmt}}"
            within = f"± {ctol:.0%}" if is_count(figure) else f"± {ctol}"
            line = (f"{'OK  ' if ok else 'FAIL'} {Path(cond['dataset']).name:<10} {cond['profile']:<6} "
                    f"{model_label(model):<24} {figure_label(figure):<20} got {shown} expected {want:{fmt}} {within}")
            print(line)
            report.append(line)
    print(f"{len(report) - failures} OK, {failures} FAIL")
    if failures:
        raise SystemExit(1)
    return {"lines": report, "failures": failures}


def print_table(path: str | Path | None = None) -> str:
    """The README results table (Markdown), one block per condition, from the matrix."""
    from dualist.report import markdown_table

    matrix = load_matrix(path)
    columns = [figure_label(m) for m in TABLE_METRICS]
    blocks = []
    for cond in matrix["conditions"].values():
        rows = [{"model": model_label(m), **{figure_label(f): v for f, v in figures.items()}}
                for m, figures in cond["expected"].items()]
        head = f"**{cond['dataset']}**, `{cond['profile']}` profile, {cond.get('seeds', 1)} seed(s)"
        head += f" from base seed {cond['seed']}" if "seed" in cond else ""
        subset = cond.get("losses") and list(cond["losses"]) != list(LOSS_NAMES)
        head += f", losses {', '.join(cond['losses'])}" if subset else ""
        if cond.get("override"):
            head += f", `--override {','.join(cond['override'])}`"
        else:
            head += ", the defaults otherwise" if subset else ", the defaults"
        if cond.get("note"):
            head += f" — {cond['note']}"
        # a condition recorded before a figure joined the matrix shows no empty column for it
        kept = [c for c in columns if any(r.get(c) is not None for r in rows)]
        blocks.append(head + "\n\n" + markdown_table(rows, ["model", *kept]))
    return "\n\n".join(blocks)


def _figure(value: Any, figure_id: str) -> int | float:
    return int(round(float(value))) if is_count(figure_id) else round(float(value), 4)


def record_entry(results: dict[str, Any], path: str | Path | None = None, *, dataset: str | None = None,
                 note: str = "") -> Path:
    """Write a finished run's figures into the matrix, replacing the condition of the same dataset, profile,
    overrides, base seed, seed count and losses (:func:`condition_id`); a path as ``dataset`` is recorded
    by its folder name.

    Used by ``dualist repro --record``: the matrix only ever holds figures a run produced.
    """
    path = Path(path) if path else MATRIX_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    data = data or {"tolerance": 0.02, "conditions": {}}
    # the matrix names a dataset, found under --data-root by --check, never a path of this machine
    dataset = Path(dataset or results["dataset"]).name
    settings = results["settings"]
    expected = {r["id"]: {f: _figure(r[figure_label(f)], f) for f in TABLE_METRICS
                          if r.get(figure_label(f)) is not None} for r in results["rows"]}
    cond: dict[str, Any] = {"dataset": dataset, "profile": results["profile"]}
    if int(settings.get("base_seed", DEFAULT_SEED)) != DEFAULT_SEED:
        cond["seed"] = int(settings["base_seed"])
    cond["seeds"] = settings["seeds"]
    if list(settings.get("losses", LOSS_NAMES)) != list(LOSS_NAMES):
        cond["losses"] = list(settings["losses"])
    if settings.get("override"):  # --check reruns the condition with the same overrides
        cond["override"] = list(settings["override"])
    cond["command"] = condition_command(cond)
    # a run that resumed a work folder is timed over all the invocations that built it (the folder's
    # timings.jsonl); one whose earlier invocations were not logged, or one of which was killed during a
    # stage (its seconds unknown), has no honest figure and gets none
    timings = results["timings"]
    if not settings.get("resumed work folder"):
        cond["wall_minutes"] = round(timings["total"] / 60, 1)
    elif FOLDER_TOTAL in timings:
        cond["resumed_run_minutes"] = round(timings[FOLDER_TOTAL] / 60, 1)
    else:
        logger.warning("--record: the work folder's earlier invocations left no complete %s (none, or one "
                       "killed during a stage), so the run's minutes are unknown and not recorded", TIMINGS_LOG)
    cond.update({"dualist_version": results["version"], "expected": expected})
    if note:
        cond["note"] = note
    conditions = dict(data["conditions"])
    cid = condition_id(dataset, results["profile"], cond.get("override", ()),
                       seed=cond.get("seed", DEFAULT_SEED), seeds=cond["seeds"], losses=cond.get("losses"))
    conditions[cid] = cond
    data["conditions"] = dict(sorted(conditions.items()))
    path.write_text(HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")
    return path

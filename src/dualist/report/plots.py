"""Diagnostics plots, one PNG each (docs/architecture.md §5).

matplotlib is imported inside each function and drawn through an explicit Agg canvas on a bare
``Figure``: no pyplot, so importing this module, or plotting from a worker thread, changes no global
backend or figure state.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dualist._io import atomic_write
from dualist.errors import MissingDependencyError

if TYPE_CHECKING:
    from dualist.diagnostics import EvolutionTable, ScoreDistributions

__all__ = ["plot_score_distributions", "plot_margins", "plot_score_evolution", "plot_gap", "DPI"]

DPI = 110
# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
POS_COLOR = "#0072B2"
NEG_COLOR = "#D55E00"
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
_STANDARDIZE_LABEL = {"none": "score", "query_z": "score (z-scored per query)",
                      "query_minmax": "score (min-max scaled per query)"}


def _figure(nrows: int, ncols: int, panel: tuple[float, float]) -> tuple[Any, np.ndarray]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is a core dependency
        raise MissingDependencyError("matplotlib", "Plotting diagnostics") from e
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    return fig, axes


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(n, max_cols))
    return math.ceil(max(n, 1) / ncols), ncols


def _text(s: Any) -> str:
    # User strings are shown literally: a "$" would otherwise switch matplotlib into mathtext.
    return str(s).replace("$", r"\$")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    # atomic_write's temporary file is 0600; plots are meant to be shared, so make them world-readable.
    os.chmod(path, 0o644)
    return path


def _require(items: Mapping[str, Any], what: str) -> None:
    if not items:
        raise ValueError(f"nothing to plot: no {what} given")


def plot_score_distributions(dists: Mapping[str, ScoreDistributions], path: str | Path, *,
                             title: str = "Scores of positives vs negatives", bins: int = 40) -> Path:
    """Histograms (density) of positive and negative scores, one panel per model; returns ``path``.

    Dashed lines mark each class's median. Densities, not counts, so 5 positives and 95 negatives
    per query can be compared by shape.
    """
    _require(dists, "score distributions")
    nrows, ncols = _grid(len(dists))
    fig, axes = _figure(nrows, ncols, (4.6, 3.5))
    for ax, (name, d) in zip(axes, dists.items()):
        both = np.concatenate([d.positives, d.negatives])
        if both.size == 0:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        else:
            lo, hi = float(both.min()), float(both.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
            for vals, color, label in ((d.negatives, NEG_COLOR, "negatives"), (d.positives, POS_COLOR, "positives")):
                if vals.size == 0:
                    continue
                ax.hist(vals, bins=edges, density=True, alpha=0.45, color=color,
                        label=f"{label} (n={vals.size:,}, median {np.median(vals):.2f})")
                ax.axvline(float(np.median(vals)), color=color, linestyle="--", linewidth=1.2)
            ax.legend(fontsize=8, loc="upper left")
        ax.set_title(_text(name))
        ax.set_xlabel(_STANDARDIZE_LABEL.get(d.standardize, "score"))
        ax.set_ylabel("density")
        ax.grid(alpha=0.25)
    for ax in axes[len(dists):]:
        ax.set_visible(False)
    fig.suptitle(_text(title))
    return _save(fig, path)


def plot_margins(margins: Mapping[str, Mapping[str, float]], path: str | Path, *,
                 title: str = "Normalized margin per query (higher is better)", bins: int = 40) -> Path:
    """Overlaid histograms (left) and ECDFs (right) of per-query normalized margins per model.

    The legend gives each model's median and number of queries; margins lie in [-1, 1] and the
    dotted line at 0 separates queries whose positive beats every negative (right of it).
    """
    _require(margins, "margins")
    fig, (ax_h, ax_e) = _figure(1, 2, (5.4, 3.8))
    edges = np.linspace(-1.0, 1.0, bins + 1)
    for k, (name, per_query) in enumerate(margins.items()):
        vals = np.asarray([v for v in per_query.values() if not math.isnan(v)], dtype=float)
        color = PALETTE[k % len(PALETTE)]
        if vals.size == 0:
            ax_e.plot([], [], color=color, label=f"{_text(name)} (no queries)")
            continue
        label = f"{_text(name)} (median {np.median(vals):.3f}, n={vals.size:,})"
        ax_h.hist(vals, bins=edges, density=True, histtype="step", linewidth=1.8, color=color)
        xs = np.sort(vals)
        frac = np.arange(1, xs.size + 1) / xs.size
        ax_e.step(np.concatenate([[-1.0], xs, [1.0]]), np.concatenate([[0.0], frac, [1.0]]),
                  where="post", color=color, linewidth=1.8, label=label)
        ax_e.axvline(float(np.median(vals)), color=color, linestyle=":", linewidth=1.0)
    for ax in (ax_h, ax_e):
        ax.axvline(0.0, color="grey", linestyle=":", linewidth=1.0)
        ax.set_xlim(-1.0, 1.0)
        ax.set_xlabel("normalized margin (s₊ − max neg) / score range")
        ax.grid(alpha=0.25)
    ax_h.set_ylabel("density")
    ax_h.set_title("histogram")
    ax_e.set_ylabel("fraction of queries ≤ margin")
    ax_e.set_ylim(0.0, 1.0)
    ax_e.set_title("cumulative (ECDF)")
    # Below the panels, so it never hides a curve whatever the data.
    fig.legend(loc="outside lower center", ncols=min(3, max(1, len(margins))), fontsize=9)
    fig.suptitle(_text(title))
    return _save(fig, path)


def plot_score_evolution(evolutions: Mapping[str, EvolutionTable], path: str | Path, *,
                         title: str = "Probe scores during training") -> Path:
    """One panel per model: each probe document's score vs training step.

    Positives are solid blue lines, negatives dashed orange. Panels keep their own y axis, since a
    CA's logits and a DE's similarities live on different scales; what compares is the separation.
    """
    _require(evolutions, "score evolutions")
    from matplotlib.lines import Line2D

    nrows, ncols = _grid(len(evolutions))
    fig, axes = _figure(nrows, ncols, (4.8, 3.5))
    for ax, (name, ev) in zip(axes, evolutions.items()):
        marker = "o" if len(ev.steps) <= 25 else None
        for j in range(len(ev.doc_ids)):
            positive = bool(ev.labels[j])
            ax.plot(ev.steps, ev.scores[:, j], color=POS_COLOR if positive else NEG_COLOR,
                    linestyle="-" if positive else "--", marker=marker, markersize=3, linewidth=1.4, alpha=0.85)
        handles = [Line2D([], [], color=POS_COLOR, linestyle="-", label=f"positives ({int(ev.labels.sum())})"),
                   Line2D([], [], color=NEG_COLOR, linestyle="--", label=f"negatives ({int((~ev.labels).sum())})")]
        ax.legend(handles=handles, fontsize=8, loc="best")
        ax.set_title(f"{_text(name)} — query {_text(ev.query_id)}")
        ax.set_xlabel("training step")
        ax.set_ylabel("score")
        ax.grid(alpha=0.25)
    for ax in axes[len(evolutions):]:
        ax.set_visible(False)
    fig.suptitle(_text(title))
    return _save(fig, path)


def plot_gap(gaps: Mapping[str, Mapping[str, float]], path: str | Path, *, metric: str = "metric",
             title: str | None = None) -> Path:
    """Grouped bars per model, one bar per split (e.g. train and test), values printed on the bars.

    Takes :func:`dualist.diagnostics.gap_table`'s output; a ``"gap"`` entry is not drawn as a bar but
    printed above the model's group (without one, the first split minus the second).
    """
    _require(gaps, "gaps")
    splits: list[str] = []
    for row in gaps.values():
        splits.extend(s for s in row if s != "gap" and s not in splits)
    if not splits:
        raise ValueError("nothing to plot: the gap table has no split values")
    models = list(gaps)
    fig, axes = _figure(1, 1, (max(5.0, 1.3 * len(models) + 2.0), 3.9))
    ax = axes[0]
    width = 0.8 / len(splits)
    x = np.arange(len(models))
    top = 0.0
    for k, split in enumerate(splits):
        vals = np.array([gaps[m].get(split, np.nan) for m in models], dtype=float)
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, np.nan_to_num(vals), width * 0.95,
                      color=PALETTE[k % len(PALETTE)], label=_text(split))
        for b, v in zip(bars, vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        top = max(top, float(np.nanmax(vals)) if not np.isnan(vals).all() else 0.0)
    for i, m in enumerate(models):
        row = gaps[m]
        gap = row.get("gap")
        if gap is None and len(splits) >= 2 and splits[0] in row and splits[1] in row:
            gap = row[splits[0]] - row[splits[1]]
        if gap is not None and not math.isnan(gap):
            ax.annotate(f"gap {gap:+.3f}", (x[i], top * 1.12 if top > 0 else 0.05), ha="center", va="bottom",
                        fontsize=9, fontweight="bold")
    ax.set_xticks(x, [_text(m) for m in models], rotation=20 if max(len(m) for m in models) > 12 else 0,
                  ha="right" if max(len(m) for m in models) > 12 else "center")
    ax.set_ylim(0, (top if top > 0 else 1.0) * 1.3)
    ax.set_ylabel(_text(metric))
    ax.legend(fontsize=8, loc="upper right", ncols=len(splits))
    ax.grid(axis="y", alpha=0.25)
    ax.set_title(_text(title or f"Train vs test {metric}"))
    return _save(fig, path)

"""The distillation recipe's targets, checked on a run's test figures, beside the paper's claims.

The paper's claims (:mod:`dualist.report.claims`) say what distillation should show; these targets say
whether training did its job at all on this data: no trained model below the zero-shot DE it started
from, a teacher far enough above the one-hot DE to leave something to distil, a distilled student
above the one-hot DE beyond noise, and students whose full-corpus top-10 lists are not taken over by
a few hub documents. Each is a :class:`~dualist.report.claims.Claim` (id, supported, figures), so the
report, ``results.json`` and tests read them like the claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dualist.report.claims import Claim
from dualist.report.labels import metric_label, model_label

__all__ = ["TARGETS", "recipe_targets", "target_text", "TEACHER_GAP", "HUBNESS_SHARE", "ALPHA"]

TEACHER_GAP = 0.02
"""re-rank nDCG@10 by which the teacher should lead the one-hot DE."""
HUBNESS_SHARE = 0.8
"""share of the zero-shot DE's distinct top-10 documents every trained DE should keep."""
ALPHA = 0.05

TARGETS: dict[str, str] = {
    "never_below_start": "no trained model is below the zero-shot DE it started from in re-rank or retrieval "
                         f"nDCG@10 (paired permutation test, p < {ALPHA})",
    "teacher_gap": f"the teacher beats the one-hot DE by at least {TEACHER_GAP} re-rank nDCG@10",
    "distilled_beats_onehot": f"a distilled DE beats the one-hot DE in re-rank nDCG@10 (p < {ALPHA})",
    "hubness_kept": f"every trained DE's top-10 lists hold at least {HUBNESS_SHARE:.0%} of the distinct documents "
                    "of the zero-shot DE's",
}
"""Target id -> the target, as the report states it."""


def recipe_targets(table: Mapping[str, Mapping[str, float | None]], versus_onehot: Any,
                   versus_start: Sequence[Mapping[str, Any]], distinct: Mapping[str, int | float | None]
                   ) -> list[Claim]:
    """The targets these figures can check.

    ``table``: model id -> metric id -> figure; ``versus_onehot``: the paired test of the distilled
    students against the one-hot DE (a :class:`dualist.evaluation.Comparison` or None);
    ``versus_start``: one ``{"model", "metric", "delta", "p_value"}`` per trained model and figure,
    tested against the zero-shot DE; ``distinct``: model id -> distinct documents in its test top-10 lists.
    """
    out: list[Claim] = []
    if versus_start:
        below = [dict(r) for r in versus_start if r["delta"] < 0 and r["p_value"] < ALPHA]
        out.append(Claim("never_below_start", not below, {"below": below, "checked": len(versus_start)}))
    col = "rerank.ndcg@10"
    if "teacher" in table and "onehot" in table:
        t, o = table["teacher"][col], table["onehot"][col]
        if t is not None and o is not None:
            out.append(Claim("teacher_gap", t - o >= TEACHER_GAP, {"teacher": t, "onehot": o, "gap": t - o}))
    rows = [r for r in versus_onehot.rows if r.p_value is not None] if versus_onehot is not None else []
    if rows:
        best = max(rows, key=lambda r: r.delta)
        out.append(Claim("distilled_beats_onehot", best.delta > 0 and best.p_value < ALPHA,
                         {"model": best.name, "diff": best.delta, "p_value": best.p_value}))
    start = distinct.get("zeroshot")
    trained = {m: d for m, d in distinct.items() if m not in ("zeroshot", "bm25", "teacher") and d is not None}
    if start and trained:
        worst = min(trained, key=lambda m: trained[m])
        share = trained[worst] / start
        out.append(Claim("hubness_kept", share >= HUBNESS_SHARE,
                         {"model": worst, "distinct": trained[worst], "zeroshot": start, "share": share}))
    return out


def target_text(claim: Claim) -> str:
    """The target as one paragraph: ``MET: …`` or ``NOT MET: …`` and its figures."""
    f = claim.figures
    verdict = "MET" if claim.supported else "NOT MET"
    if claim.id == "never_below_start":
        if not f["below"]:
            detail = f"(none of {f['checked']} comparisons is below with p < {ALPHA})."
        else:
            detail = "(below: " + "; ".join(
                f"{model_label(r['model'])} {metric_label(r['metric'])} {r['delta']:+.3f}, p = {r['p_value']:.4f}"
                for r in f["below"]) + ")."
    elif claim.id == "teacher_gap":
        detail = f"({f['teacher']:.3f} vs {f['onehot']:.3f}: {f['gap']:+.3f})."
    elif claim.id == "distilled_beats_onehot":
        detail = (f"(best: {model_label(f['model'])} {f['diff']:+.3f} vs the one-hot DE, "
                  f"p = {f['p_value']:.4f}).")
    elif claim.id == "hubness_kept":
        detail = (f"(fewest: {model_label(f['model'])} with {f['distinct']} against the zero-shot DE's "
                  f"{f['zeroshot']}, {f['share']:.0%}).")
    else:
        raise ValueError(f"unknown target {claim.id!r}; known: {sorted(TARGETS)}")
    return f"{verdict}: {TARGETS[claim.id]} {detail}"

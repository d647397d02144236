"""The paper's claims, checked on a run's test figures: data first (:class:`Claim`), text for the report.

A claim is reported, never tuned for: it is computed from the figures the run produced, and its text
is rendered from the same figures, so a test can assert on ``supported`` and on the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dualist.report.labels import model_label

__all__ = ["Claim", "CLAIMS", "paper_claims", "claim_text"]

CLAIMS: dict[str, str] = {
    "teacher_beats_onehot": "teacher beats one-hot DE in re-rank nDCG@10",
    "m3se_closes_half_gap": "DE + M3SE closes at least half of the teacher/one-hot gap",
    "m3se_beats_onehot": "DE + M3SE beats the one-hot DE beyond noise",
    "best_distilled_beats_baselines": "the best distilled DE on dev beats BM25 and the zero-shot DE in retrieval "
                                      "nDCG@10",
}
"""Claim id -> the claim, as the report states it."""


@dataclass(frozen=True)
class Claim:
    """One of :data:`CLAIMS`, and whether this run's figures support it (``figures``: the numbers it rests on)."""

    id: str
    supported: bool
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return claim_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "supported": self.supported, "figures": dict(self.figures), "text": self.text}


def paper_claims(table: Mapping[str, Mapping[str, float | None]], comparison: Any, best_on_dev: str | None,
                 seeds: int) -> list[Claim]:
    """The claims that ``table`` (model id -> metric id -> figure) can check.

    ``comparison`` is the paired test of the students against the one-hot DE
    (:class:`dualist.evaluation.Comparison`, or None); ``best_on_dev`` the distilled student chosen on dev.
    """
    out: list[Claim] = []
    col = "rerank.ndcg@10"
    if "onehot" in table:
        t, o = table["teacher"][col], table["onehot"][col]
        out.append(Claim("teacher_beats_onehot", t > o, {"teacher": t, "onehot": o}))
        if "m3se" in table:
            m = table["m3se"][col]
            gap = t - o
            closed = (m - o) / gap if gap > 0 else None
            out.append(Claim("m3se_closes_half_gap", closed is not None and closed >= 0.5,
                             {"teacher": t, "onehot": o, "m3se": m, "closed": closed}))
            row = next((r for r in comparison.rows if r.name == "m3se"), None) if comparison is not None else None
            if row is not None:
                out.append(Claim("m3se_beats_onehot", row.p_value < 0.05 and row.delta > 0,
                                 {"diff": row.delta, "p_value": row.p_value, "seeds": seeds}))
    if best_on_dev is not None:
        b, z = table["bm25"]["retrieval.ndcg@10"], table["zeroshot"]["retrieval.ndcg@10"]
        v = table[best_on_dev]["retrieval.ndcg@10"]
        out.append(Claim("best_distilled_beats_baselines", v > b and v > z,
                         {"model": best_on_dev, "best": v, "bm25": b, "zeroshot": z}))
    return out


def claim_text(claim: Claim) -> str:
    """The claim as one paragraph of the report: ``SUPPORTED: …`` or ``NOT SUPPORTED: …`` and its figures."""
    from dualist.report.targets import TARGETS, target_text

    if claim.id in TARGETS:
        return target_text(claim)
    f = claim.figures
    verdict = "SUPPORTED" if claim.supported else "NOT SUPPORTED"
    if claim.id == "teacher_beats_onehot":
        detail = f"({f['teacher']:.3f} vs {f['onehot']:.3f})."
    elif claim.id == "m3se_closes_half_gap":
        if f["closed"] is None:
            return (f"{verdict}: {CLAIMS[claim.id]}: there is no gap to close, the teacher ({f['teacher']:.3f}) is "
                    f"not above the one-hot DE ({f['onehot']:.3f}); M3SE {f['m3se']:.3f}.")
        detail = (f"(closes {round(f['closed'] * 100)}%: {f['m3se']:.3f} vs one-hot {f['onehot']:.3f}, "
                  f"teacher {f['teacher']:.3f}).")
    elif claim.id == "m3se_beats_onehot":
        detail = (f"(M3SE - one-hot = {_signed(f['diff'])}, paired permutation p = {f['p_value']:.4f}, "
                  f"{f['seeds']} seed(s)).")
    elif claim.id == "best_distilled_beats_baselines":
        return (f"{verdict}: the best distilled DE on dev ({model_label(f['model'])}) beats BM25 and the zero-shot "
                f"DE in retrieval nDCG@10 ({f['best']:.3f} vs {f['bm25']:.3f} and {f['zeroshot']:.3f}).")
    else:
        raise ValueError(f"unknown claim {claim.id!r}; known: {sorted(CLAIMS)}")
    return f"{verdict}: {CLAIMS[claim.id]} {detail}"


def _signed(x: float) -> str:
    """``x`` to three decimals with its sign, and a plain ``0.000`` where it rounds to nothing."""
    return "0.000" if round(x, 3) == 0 else f"{x:+.3f}"

"""Hard negatives mined with a dense model over the whole corpus, denoised by the teacher.

BM25 candidates share words with the query; a dual-encoder trained only against them is never told
that the documents near *every* query in its embedding space are wrong, and those documents become
hubs in full-corpus search. Mining retrieves each training query's top-``k`` from the whole corpus
with a dual-encoder (the zero-shot start, or a trained student), so the negatives are the ones the
student itself confuses.

Dense top-k lists also hold relevant documents nobody judged. The teacher removes the most likely
of them: a mined document is dropped when the teacher scores it at least as high as the query's
lowest-scored judged positive minus ``margin`` (so ``margin > 0`` drops more). Judged positives never
appear in the mined run, and neither do documents judged relevant at any grade.

The output is a candidate run like BM25's (query -> document -> the dense score), so teacher scoring
and student training read it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from dualist.data.dataset import Dataset

__all__ = ["MiningReport", "mine_negatives"]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class MiningReport:
    """What mining kept and removed, over all queries."""

    queries: int
    retrieved: int
    judged_removed: int
    teacher_removed: int
    kept: int


def mine_negatives(model: object, dataset: Dataset, split: str, *, k: int = 100, teacher: object | None = None,
                   margin: float = 0.0, batch_size: int = 64, doc_embeddings: object | None = None,
                   ) -> tuple[Run, MiningReport]:
    """Each query of ``split`` with a judged positive: its top-``k`` dense neighbours, judged documents
    removed, and (with ``teacher``) the ones the teacher scores like a positive removed.

    Args:
        model: a :class:`~dualist.models.DualEncoder` (embeds queries and the corpus).
        teacher: a :class:`~dualist.models.CrossEncoder`; None skips denoising.
        margin: a mined document is dropped when ``teacher(q, d) >= min_positive_teacher_score - margin``.
        doc_embeddings: precomputed corpus embeddings (in ``dataset.doc_ids`` order), to reuse.

    Returns:
        ``(run, report)``: the mined candidates (query -> doc -> dense score) and the counts.
    """
    from dualist.data.trec import ranked_positives
    from dualist.evaluation.modes import retrieve

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qrels = dataset.qrels_for(split)
    queries = {q: dataset.queries[q] for q in sorted(qrels)
               if q in dataset.queries and ranked_positives(qrels[q], dataset.corpus)}
    if not queries:
        raise ValueError(f"split {split!r} has no query with a judged positive to mine negatives for")
    # judged documents take places in the top k, so ask for as many more as the most-judged query has
    extra = max(sum(1 for g in qrels[q].values() if g > 0) for q in queries)
    dense = retrieve(model, dataset, queries, k=k + extra, batch_size=batch_size, doc_embeddings=doc_embeddings)
    run: Run = {}
    judged_removed = 0
    for qid, docs in dense.items():
        judged = {d for d, g in qrels[qid].items() if g > 0}
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [(d, s) for d, s in ranked if d not in judged]
        judged_removed += sum(1 for d, _ in ranked[:k] if d in judged)
        run[qid] = dict(kept[:k])
    retrieved = sum(len(v) for v in run.values()) + judged_removed
    teacher_removed = 0
    if teacher is not None:
        run, teacher_removed = _denoise(teacher, dataset, run, qrels, margin=margin, batch_size=batch_size)
    report = MiningReport(queries=len(run), retrieved=retrieved, judged_removed=judged_removed,
                          teacher_removed=teacher_removed, kept=sum(len(v) for v in run.values()))
    logger.info("mined %d candidates for %d queries (%d judged removed, %d removed by the teacher)",
                report.kept, report.queries, judged_removed, teacher_removed)
    return run, report


def _denoise(teacher: object, dataset: Dataset, run: Run, qrels: Mapping[str, Mapping[str, int]], *,
             margin: float, batch_size: int) -> tuple[Run, int]:
    """Drop each query's mined documents that the teacher scores like its weakest judged positive."""
    pairs = [(q, d) for q in sorted(run) for d in [*sorted(d for d, g in qrels[q].items() if g > 0
                                                           and d in dataset.corpus), *run[q]]]
    scores = teacher.score([dataset.queries[q] for q, _ in pairs], [dataset.doc_text(d) for _, d in pairs],
                           batch_size=batch_size)
    by_pair = {pair: float(s) for pair, s in zip(pairs, scores)}
    out: Run = {}
    removed = 0
    for qid, docs in run.items():
        positives = [by_pair[(qid, d)] for d, g in qrels[qid].items() if g > 0 and (qid, d) in by_pair]
        bar = min(positives) - margin
        out[qid] = {d: s for d, s in docs.items() if by_pair[(qid, d)] < bar}
        removed += len(docs) - len(out[qid])
    return out, removed

"""Score evolution of a fixed probe query during training (the paper's Figure on CA vs DE, docs/architecture.md §5).

The contract with the training loop: at chosen steps it scores one probe query against a fixed set
of documents (:func:`select_probe_docs`: a few positives and the hardest BM25 negatives) and appends
one JSON line to ``probes.jsonl``::

    {"step": 120, "query_id": "q1", "doc_ids": [...], "labels": [1, 1, 0, ...], "scores": [...]}

(:meth:`ProbeDocs.record` builds that line; other keys, such as the loop's ``"probe"`` name, are
ignored). :func:`read_probes` and :func:`score_evolution` turn the
file back into a ``steps x docs`` array.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dualist.errors import DataError

__all__ = ["EvolutionTable", "ProbeDocs", "score_evolution", "read_probes", "select_probe_docs",
           "pick_probe_query", "make_probe"]

logger = logging.getLogger(__name__)

_RECORD_KEYS = ("step", "query_id", "doc_ids", "labels", "scores")


@dataclass(frozen=True, eq=False)
class EvolutionTable:
    """Scores of one query's probe documents across training steps.

    ``steps`` ``(S,)`` ascending; ``doc_ids`` ``(D,)``; ``labels`` ``(D,)`` bool (relevant or not);
    ``scores`` ``(S, D)``: row ``i`` holds the scores at ``steps[i]``.
    """

    query_id: str
    steps: np.ndarray
    doc_ids: tuple[str, ...]
    labels: np.ndarray
    scores: np.ndarray

    @property
    def positives(self) -> np.ndarray:
        """``(S, P)`` scores of the relevant probe documents."""
        return self.scores[:, self.labels]

    @property
    def negatives(self) -> np.ndarray:
        """``(S, N)`` scores of the non-relevant probe documents."""
        return self.scores[:, ~self.labels]

    def __repr__(self) -> str:
        return (f"EvolutionTable(query_id={self.query_id!r}, steps={len(self.steps)}, "
                f"positives={int(self.labels.sum())}, negatives={int((~self.labels).sum())})")


class ProbeDocs(NamedTuple):
    """A probe query's fixed documents, positives first then negatives, with labels 1 / 0.

    A named tuple, so ``doc_ids, labels = select_probe_docs(...)`` works.
    """

    doc_ids: list[str]
    labels: list[int]

    def record(self, step: int, query_id: str, scores: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """The ``probes.jsonl`` line for ``scores`` (in ``doc_ids`` order) at training ``step``."""
        vals = [float(x) for x in np.asarray(scores, dtype=float).ravel()]
        if len(vals) != len(self.doc_ids):
            raise ValueError(f"expected {len(self.doc_ids)} scores (one per probe doc), got {len(vals)}")
        return {"step": int(step), "query_id": query_id, "doc_ids": list(self.doc_ids),
                "labels": list(self.labels), "scores": vals}


def read_probes(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``probes.jsonl`` file.

    A final line cut off without its newline (training killed mid-write) is skipped with a warning;
    any other unreadable line is a :class:`~dualist.errors.DataError` naming the line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                logger.warning("%s:%d: skipping a truncated last line", path, i)
                break
            raise DataError(f"not valid JSON ({e.msg})", path=path, line=i,
                            hint="each line must be one probe record") from None
        if not isinstance(rec, dict):
            raise DataError("expected a JSON object", path=path, line=i)
        records.append(rec)
    return records


def score_evolution(probe_records: Iterable[Mapping[str, Any]], *, query_id: str | None = None) -> EvolutionTable:
    """Parse probe records into an :class:`EvolutionTable` (steps sorted ascending).

    Records of several queries need ``query_id`` to choose one. Document order is that of the first
    record; later records may list the same documents in another order. A step recorded twice
    (a resumed run) keeps its last record.

    >>> recs = [{"step": 20, "query_id": "q", "doc_ids": ["a", "b"], "labels": [1, 0], "scores": [2.0, 1.0]},
    ...         {"step": 10, "query_id": "q", "doc_ids": ["b", "a"], "labels": [0, 1], "scores": [0.5, 0.7]}]
    >>> t = score_evolution(recs)
    >>> t.steps.tolist(), t.doc_ids, t.scores.tolist()
    ([10, 20], ('a', 'b'), [[0.7, 0.5], [2.0, 1.0]])
    """
    records = list(probe_records)
    for i, rec in enumerate(records):
        missing = [k for k in _RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"probe record {i} lacks {missing}; expected keys {list(_RECORD_KEYS)}")
    qids = sorted({str(r["query_id"]) for r in records})
    if query_id is None:
        if len(qids) > 1:
            raise ValueError(f"probe records cover several queries {qids}; pass query_id= to choose one")
        if not qids:
            raise ValueError("no probe records")
        query_id = qids[0]
    records = [r for r in records if str(r["query_id"]) == query_id]
    if not records:
        raise ValueError(f"no probe records for query {query_id!r} (queries present: {qids})")

    first = records[0]
    doc_ids = tuple(str(d) for d in first["doc_ids"])
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError(f"probe record for step {first['step']} repeats a document id")
    label_of = dict(zip(doc_ids, (int(x) > 0 for x in first["labels"])))
    by_step: dict[int, np.ndarray] = {}
    for rec in records:
        ids = [str(d) for d in rec["doc_ids"]]
        step = int(rec["step"])
        if not (len(ids) == len(rec["labels"]) == len(rec["scores"])):
            raise ValueError(f"probe record for step {step}: doc_ids, labels and scores differ in length")
        if sorted(ids) != sorted(doc_ids):
            raise ValueError(f"probe record for step {step} scores other documents than the first record")
        row = dict(zip(ids, (float(s) for s in rec["scores"])))
        for d, lab in zip(ids, rec["labels"]):
            if (int(lab) > 0) != label_of[d]:
                raise ValueError(f"probe record for step {step} changes the label of document {d!r}")
        if step in by_step:
            logger.debug("probe step %d recorded twice; keeping the later record", step)
        by_step[step] = np.array([row[d] for d in doc_ids], dtype=float)
    steps = sorted(by_step)
    return EvolutionTable(
        query_id=query_id,
        steps=np.array(steps, dtype=np.int64),
        doc_ids=doc_ids,
        labels=np.array([label_of[d] for d in doc_ids], dtype=bool),
        scores=np.stack([by_step[s] for s in steps]),
    )


def _ranked(cands: Mapping[str, float]) -> list[str]:
    # Highest score first; equal scores by doc id so the choice never depends on dict order.
    return [d for d, _ in sorted(cands.items(), key=lambda kv: (-kv[1], kv[0]))]


def _positives(qrels: Mapping[str, Mapping[str, int]], qid: str) -> list[str]:
    return sorted(d for d, r in qrels.get(qid, {}).items() if r > 0)


def select_probe_docs(qid: str, qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                      n_pos: int = 5, n_neg: int = 5, seed: int = 0) -> ProbeDocs:
    """Fix the probe documents of training query ``qid``: ``n_pos`` positives and ``n_neg`` hard negatives.

    Positives come from ``qrels`` (they need not be in the run: the probe scores them directly);
    with more than ``n_pos`` a seeded sample is kept, with fewer all of them (so fewer than ``n_pos``).
    Negatives are the ``n_neg`` highest-ranked non-relevant candidates of ``run`` (ties by doc id),
    fewer if the run has fewer. Positives are listed by id, negatives by rank.

    >>> p = select_probe_docs("q", {"q": {"a": 1, "b": 0}}, {"q": {"b": 9.0, "c": 3.0, "a": 5.0, "d": 3.0}},
    ...                       n_neg=2)
    >>> doc_ids, labels = p
    >>> doc_ids, labels
    (['a', 'b', 'c'], [1, 0, 0])
    """
    if n_pos < 1 or n_neg < 0:
        raise ValueError(f"need n_pos >= 1 and n_neg >= 0, got n_pos={n_pos}, n_neg={n_neg}")
    pos = _positives(qrels, qid)
    if not pos:
        raise ValueError(f"query {qid!r} has no relevant document in qrels; pick another probe query")
    if qid not in run:
        raise ValueError(f"query {qid!r} is not in the run, so it has no candidates to take negatives from")
    if len(pos) > n_pos:
        pos = sorted(random.Random(seed).sample(pos, n_pos))
    relevant = set(_positives(qrels, qid))
    neg = [d for d in _ranked(run[qid]) if d not in relevant][:n_neg]
    if len(neg) < n_neg:
        logger.info("probe query %r: only %d non-relevant candidates (asked for %d)", qid, len(neg), n_neg)
    return ProbeDocs(pos + neg, [1] * len(pos) + [0] * len(neg))


def pick_probe_query(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], *,
                     min_pos: int = 1, n_pos: int = 5) -> str:
    """Choose a probe query deterministically when the user names none.

    Eligible: queries in the run with at least ``min_pos`` relevant documents and at least one
    non-relevant candidate. Among them, the one with the most positives *counted up to* ``n_pos``
    wins, ties going to the smallest id: so it is the first id, in sorted order, that fills all
    ``n_pos`` positive slots if any does, and an unusual query with hundreds of positives is not
    preferred over it.

    >>> qrels = {"q1": {"a": 1}, "q2": {"a": 1, "b": 1}, "q3": {"a": 1, "b": 2, "c": 1}}
    >>> run = {q: {"a": 1.0, "b": 0.5, "c": 0.2, "z": 0.1} for q in qrels}
    >>> pick_probe_query(qrels, run, n_pos=2)
    'q2'
    """
    best: tuple[int, str] | None = None
    for qid in sorted(run):
        pos = set(_positives(qrels, qid))
        if len(pos) < min_pos or not any(d not in pos for d in run[qid]):
            continue
        count = min(len(pos), n_pos)
        if best is None or count > best[0]:
            best = (count, qid)
    if best is None:
        raise ValueError(f"no query in the run has >= {min_pos} relevant documents and a non-relevant candidate")
    return best[1]


def make_probe(dataset: Any, qid: str, doc_ids: list[str], labels: list[int]) -> Any:
    """A training probe (``probe(model, step) -> row`` for ``probes.jsonl``): the model's scores of
    the fixed documents ``doc_ids`` (e.g. from :func:`select_probe_docs`) for query ``qid``."""
    from dualist.models import CrossEncoder

    query = dataset.queries[qid]
    texts = [dataset.doc_text(d) for d in doc_ids]

    def probe(model: Any, step: int) -> dict[str, Any]:
        was = model.training
        model.eval()
        try:
            if isinstance(model, CrossEncoder):
                scores = model.score([query] * len(texts), texts, show_progress=False)
            else:
                q = model.encode_queries([query], show_progress=False)
                d = model.encode_docs(texts, show_progress=False)
                scores = model.score_embeddings(q, d)[0]
        finally:
            model.train(was)
        return {"step": step, "query_id": qid, "doc_ids": doc_ids, "labels": labels,
                "scores": [float(s) for s in scores]}

    return probe

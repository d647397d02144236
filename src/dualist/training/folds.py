"""Cross-fitted teacher scores: k fold-teachers, each scoring only the training queries it never saw.

A teacher trained on the training queries and then asked to score them returns its memory of their
labels: on SciFact the teacher's train-vs-test gap was 0.150 nDCG@10, so a student distilled from
those scores learns the one-hot labels again, with noise, rather than what the teacher knows about
unseen queries. Cross-fitting (as in stacking and double machine learning) removes that: the training
queries are split into ``k`` folds, fold-teacher ``f`` trains on every fold but ``f``, and the students'
targets for a query of fold ``f`` come from teacher ``f`` only.

Cost: ``k`` more teacher trainings (each on ``(k - 1) / k`` of the queries, with the same step budget),
and no extra scoring: every pair is still scored once.

:func:`assign_folds` splits the queries (seeded, balanced), :func:`fold_datasets` gives each
fold-teacher its training data, and :class:`FoldTeachers` is a teacher for
:func:`~dualist.training.score_candidates` that sends each pair to its query's fold-teacher.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dualist.data.dataset import Dataset

__all__ = ["assign_folds", "fold_datasets", "FoldTeachers"]


def assign_folds(qids: Sequence[str], k: int, seed: int, *, texts: Mapping[str, str] | None = None) -> dict[str, int]:
    """Query id -> fold in ``0..k-1``: a seeded shuffle dealt round-robin, so fold sizes differ by at
    most one and the same ids always get the same folds. With ``texts`` (query id -> text), queries
    with identical text are dealt as one, so they share a fold (a teacher that trained on one of
    them has seen the other).

    >>> assign_folds(["a", "b", "c", "d", "e"], 2, seed=0)
    {'a': 0, 'b': 1, 'c': 0, 'd': 0, 'e': 1}
    >>> assign_folds(["a", "b", "c"], 2, seed=0, texts={"a": "x", "b": "x", "c": "y"})
    {'a': 0, 'b': 0, 'c': 1}
    """
    if k < 2:
        raise ValueError(f"cross-fitting needs k >= 2 folds, got {k}")
    key = (lambda q: texts[q]) if texts is not None else (lambda q: q)
    units = sorted({key(q) for q in qids})
    if len(units) < k:
        raise ValueError(f"{len(units)} distinct queries cannot be split into {k} folds")
    random.Random(seed).shuffle(units)
    fold_of = {unit: i % k for i, unit in enumerate(units)}
    return {q: fold_of[key(q)] for q in sorted(set(qids))}


def fold_datasets(dataset: Dataset, split: str, folds: Mapping[str, int]) -> list[Dataset]:
    """For each fold ``f``, ``dataset`` with ``split``'s judgements restricted to the queries of the
    other folds: fold-teacher ``f``'s training data, which never holds a query of fold ``f``."""
    qrels = dataset.qrels_for(split)
    k = max(folds.values()) + 1
    return [dataset.with_split(split, {q: docs for q, docs in qrels.items() if folds.get(q, -1) != f})
            for f in range(k)]


class FoldTeachers:
    """A teacher made of fold-teachers: the pair ``(query, doc)`` is scored by ``teachers[fold]``, where
    ``fold`` is the query's fold. Queries are given as text (as ``score`` receives them), so two training
    queries with identical text must share a fold (checked).

    Quacks like a :class:`~dualist.models.CrossEncoder` for :func:`~dualist.training.score_candidates`:
    ``score`` and ``save_pretrained`` (the cache's fingerprint covers every fold-teacher and the folds).
    """

    def __init__(self, teachers: Sequence[object], folds: Mapping[str, int], queries: Mapping[str, str]):
        if len(teachers) != max(folds.values()) + 1:
            raise ValueError(f"{len(teachers)} teachers for {max(folds.values()) + 1} folds")
        self.teachers = list(teachers)
        self.folds = dict(folds)
        by_text: dict[str, int] = {}
        for qid, fold in self.folds.items():
            text = queries[qid]
            if by_text.setdefault(text, fold) != fold:
                raise ValueError(f"training queries with the same text {text[:60]!r} sit in different folds; "
                                 "a fold-teacher would score a query it trained on")
        self._fold_of_text = by_text

    def score(self, queries: list[str], docs: list[str], batch_size: int = 64,
              show_progress: bool | None = None) -> np.ndarray:
        try:
            fold = np.array([self._fold_of_text[q] for q in queries], dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"query {str(err)[:80]} is in no fold: fold-teachers score training queries only") from None
        out = np.empty(len(queries), dtype=np.float32)
        for f, teacher in enumerate(self.teachers):
            rows = np.flatnonzero(fold == f)
            if len(rows):
                out[rows] = teacher.score([queries[i] for i in rows], [docs[i] for i in rows],
                                          batch_size=batch_size, show_progress=show_progress)
        return out

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        for f, teacher in enumerate(self.teachers):
            teacher.save_pretrained(path / f"fold-{f}")
        (path / "folds.json").write_text(json.dumps(self.folds, sort_keys=True))

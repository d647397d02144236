"""Training examples: a query, one positive and N negatives from the candidate run, in batches.

A **training example** is ``(query, positive, negatives)``. With ``positives="all"`` (the default)
every (query, positive) pair of the training qrels is one example, so a query with three relevant
documents is seen three times per epoch, each time with another positive; ``positives="first"``
keeps one example per query, with its highest-graded positive (ties: the one listed first). The
``num_negatives`` negatives come from :func:`dualist.candidates.sample_negatives` over the candidate
run (BM25), never a judged relevant one of any grade (so with ``min_positive_grade=2`` the grade-1
documents are neither positives nor negatives); all examples of a query share that epoch's negatives. Queries
without a positive or without any candidate negative are left out. When a query has fewer
candidates than ``num_negatives``, its negatives are repeated in turn to fill the row, so every
batch is rectangular.

Everything random is a function of ``(seed, epoch)`` through local RNGs: the negatives
(``seed + epoch`` with ``negatives="range"``; ``"top"`` needs none) and the example order (a NumPy
generator seeded with ``[seed, epoch]``). So ``batches(epoch)`` gives the same batches whenever it
is called, which is what lets a resumed run skip exactly the batches it had already trained on.

A :class:`Batch` is the collated form: ``B`` queries and a ``(B, 1 + N)`` grid of documents with the
positive in column 0 — the scores contract of the losses (docs/architecture.md §2) — plus the teacher's scores
of the same grid when distilling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from dualist.data.trec import ranked_positives
from dualist.errors import ConfigError
from dualist.training.config import TrainConfig

__all__ = ["TrainingExample", "Batch", "ExampleSource", "collate", "with_in_batch_negatives",
           "IN_BATCH_MASKED_SCORE"]

logger = logging.getLogger(__name__)

Run = Mapping[str, Mapping[str, float]]

IN_BATCH_MASKED_SCORE = -1e4
"""Score given to an in-batch column that is a positive of the row's query (a false negative).

Finite, so every loss stays finite, and far below any cosine or dot-product score, so its softmax
weight is 0 and it gets no gradient.
"""


class ScoreLookup(Protocol):
    def lookup(self, qid: str, did: str) -> float: ...


@dataclass(frozen=True)
class TrainingExample:
    """One row of the score matrix: a query, its positive (column 0) and its negatives."""

    qid: str
    positive: str
    negatives: tuple[str, ...]


@dataclass
class Batch:
    """A collated micro-batch; ``docs[i][0]`` is query ``i``'s positive.

    Attributes:
        qids, queries: ``B`` query ids and texts.
        doc_ids, docs: ``(B, 1 + N)`` document ids and texts.
        teacher_scores: ``(B, 1 + N)`` float32 teacher scores of the same grid, or None.
        positives: for each query, the ids of *all* its relevant documents (to mask in-batch
            negatives that are in fact relevant to the query).
    """

    qids: list[str]
    queries: list[str]
    doc_ids: list[list[str]]
    docs: list[list[str]]
    teacher_scores: torch.Tensor | None = None
    positives: list[frozenset[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.qids)

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, C)``: queries and candidates per query."""
        return len(self.qids), len(self.doc_ids[0]) if self.doc_ids else 0

    def select(self, rows: range) -> Batch:
        """The batch of ``rows`` only (a process's slice of a global batch under torchrun)."""
        return Batch(qids=self.qids[rows.start:rows.stop], queries=self.queries[rows.start:rows.stop],
                     doc_ids=self.doc_ids[rows.start:rows.stop], docs=self.docs[rows.start:rows.stop],
                     teacher_scores=None if self.teacher_scores is None else self.teacher_scores[rows.start:rows.stop],
                     positives=self.positives[rows.start:rows.stop])

    def unique_docs(self) -> tuple[list[str], torch.Tensor]:
        """The distinct documents of the batch and a ``(B, C)`` index into them.

        Encode ``texts`` once, then ``embeddings[index]`` is the ``(B, C, d)`` grid: a document that
        is a candidate of several queries (common with BM25 negatives) is embedded only once.
        """
        position: dict[str, int] = {}
        texts: list[str] = []
        index = []
        for ids, row in zip(self.doc_ids, self.docs):
            for did, text in zip(ids, row):
                if did not in position:
                    position[did] = len(texts)
                    texts.append(text)
                index.append(position[did])
        return texts, torch.tensor(index, dtype=torch.long).view(self.shape)


def collate(examples: list[TrainingExample], dataset: Any, *, teacher_scores: ScoreLookup | None = None,
            qrels: Mapping[str, Mapping[str, int]] | None = None) -> Batch:
    """Turn examples into a :class:`Batch` (texts from ``dataset``, scores from ``teacher_scores``)."""
    doc_ids = [[ex.positive, *ex.negatives] for ex in examples]
    scores = None
    if teacher_scores is not None:
        scores = torch.tensor([[teacher_scores.lookup(ex.qid, did) for did in row]
                               for ex, row in zip(examples, doc_ids)], dtype=torch.float32)
    positives = [frozenset(d for d, rel in qrels.get(ex.qid, {}).items() if rel > 0) | {ex.positive}
                 if qrels is not None else frozenset({ex.positive}) for ex in examples]
    return Batch(qids=[ex.qid for ex in examples], queries=[dataset.queries[ex.qid] for ex in examples],
                 doc_ids=doc_ids, docs=[[dataset.doc_text(d) for d in row] for row in doc_ids],
                 teacher_scores=scores, positives=positives)


class ExampleSource:
    """The training examples of one split, re-sampled and re-shuffled per epoch from ``(seed, epoch)``.

    >>> from dualist.data import Dataset
    >>> ds = Dataset("toy", None, corpus={d: {"title": "", "text": d} for d in ["a", "b", "c", "d"]},
    ...              queries={"q1": "one", "q2": "two"},
    ...              qrels={"train": {"q1": {"a": 1}, "q2": {"b": 1, "c": 2}}})
    >>> run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"d": 2.0, "b": 1.0, "a": 0.5}}
    >>> src = ExampleSource(ds, "train", run, TrainConfig(batch_size=2, num_negatives=2, negatives="top"))
    >>> [(e.qid, e.positive, e.negatives) for e in src.examples(0)]
    [('q2', 'b', ('d', 'a')), ('q2', 'c', ('d', 'a')), ('q1', 'a', ('b', 'c'))]
    >>> src.num_batches, [b.shape for b in src.batches(0)]
    (2, [(2, 3), (1, 3)])
    """

    def __init__(self, dataset: Any, split: str, run: Run, config: TrainConfig, *,
                 teacher_scores: ScoreLookup | None = None):
        self.dataset = dataset
        self.split = split
        self.run = run
        self.config = config
        self.teacher_scores = teacher_scores
        self.qrels = dataset.qrels_for(split)
        self._positives = self._ordered_positives()
        self._cache: tuple[int, list[TrainingExample]] | None = None
        self._num_examples = len(self.examples(0))
        if self._num_examples == 0:
            raise ConfigError(
                f"no training examples in split {split!r}: {len(self._positives)} queries have a positive, "
                f"but none of them has a non-relevant candidate in the run ({len(run)} queries); "
                "check that the candidate run was made for this split")

    def _ordered_positives(self) -> dict[str, list[str]]:
        """Query -> its relevant documents, highest grade first (ties in qrels order), for known texts."""
        out = {}
        for qid in sorted(self.qrels):
            if qid not in self.dataset.queries:
                continue
            ranked = ranked_positives(self.qrels[qid], self.dataset.corpus,
                                      min_grade=self.config.min_positive_grade)
            if ranked:
                keep = 1 if self.config.positives == "first" else self.config.max_positives or len(ranked)
                out[qid] = ranked[:keep]
        return out

    def negatives(self, epoch: int) -> dict[str, list[str]]:
        """Each query's ``num_negatives`` negatives for ``epoch`` (fewer when the run is short)."""
        from dualist.candidates import sample_negatives

        cfg = self.config
        run = {q: self.run[q] for q in self._positives if q in self.run}
        return sample_negatives(run, self.qrels, cfg.num_negatives, strategy=cfg.negatives,
                                rank_range=(cfg.neg_rank_min, cfg.neg_rank_max),
                                seed=cfg.seed + epoch if cfg.negatives == "range" else cfg.seed)

    def examples(self, epoch: int) -> list[TrainingExample]:
        """The shuffled examples of ``epoch``: the same list every time for the same epoch."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = self.config.num_negatives
        negatives = self.negatives(epoch)
        examples = []
        for qid, positives in self._positives.items():
            negs = [d for d in negatives.get(qid, []) if d in self.dataset.corpus]
            if not negs:
                continue
            negs = [negs[i % len(negs)] for i in range(n)]  # short candidate lists: repeat to fill
            examples.extend(TrainingExample(qid, pos, tuple(negs)) for pos in positives)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(examples))
        shuffled = [examples[i] for i in order]
        self._cache = (epoch, shuffled)
        return shuffled

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def num_batches(self) -> int:
        """Micro-batches per epoch (the last one may be smaller)."""
        return -(-self._num_examples // self.config.batch_size)

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The micro-batches of ``epoch``, collated lazily."""
        examples = self.examples(epoch)
        if len(examples) != self._num_examples:  # the set of usable queries cannot change by epoch
            raise RuntimeError(f"epoch {epoch} has {len(examples)} examples, epoch 0 had {self._num_examples}")
        size = self.config.batch_size
        for start in range(0, len(examples), size):
            yield collate(examples[start:start + size], self.dataset, teacher_scores=self.teacher_scores,
                          qrels=self.qrels)


def with_in_batch_negatives(scores: torch.Tensor, batch: Batch, rows: range | None = None) -> torch.Tensor:
    """Add the other queries' documents as extra negative columns of the score matrix.

    Args:
        scores: ``(R, B, C)``: ``scores[k, j, c]`` is query ``rows[k]`` against document ``c`` of query ``j``.
        batch: the whole batch, for the document ids and each query's relevant documents.
        rows: the batch rows ``scores`` holds (a process's slice under torchrun); all ``B`` by default.

    Returns:
        ``(R, C + (B - 1) * C)``: row ``k`` holds its own ``C`` candidates first (positive still in
        column 0), then the ``C`` candidates of every other query in batch order. A column that is
        relevant to the row's query (two examples of one query, or a shared positive) is set to
        :data:`IN_BATCH_MASKED_SCORE`, so it is not trained as a negative.

    >>> b = Batch(qids=["q1", "q2"], queries=["", ""], doc_ids=[["a", "x"], ["b", "a"]], docs=[[], []],
    ...           positives=[frozenset({"a"}), frozenset({"b"})])
    >>> s = torch.arange(8.0).view(2, 2, 2)
    >>> with_in_batch_negatives(s, b)
    tensor([[ 0.0000e+00,  1.0000e+00,  2.0000e+00, -1.0000e+04],
            [ 6.0000e+00,  7.0000e+00,  4.0000e+00,  5.0000e+00]])
    >>> with_in_batch_negatives(s[1:], b, rows=range(1, 2))  # the second row alone: the same values
    tensor([[6., 7., 4., 5.]])
    """
    rows = range(len(batch)) if rows is None else rows
    R, B, C = scores.shape
    if B != len(batch) or R != len(rows):
        raise ValueError(f"expected scores of shape ({len(rows)}, {len(batch)}, C), got {tuple(scores.shape)}")
    at = torch.arange(R)
    own_col = torch.tensor(list(rows), dtype=torch.long)
    own = scores[at, own_col]  # (R, C)
    others = torch.ones(R, B, dtype=torch.bool)
    others[at, own_col] = False
    extra = scores[others.to(scores.device)].view(R, (B - 1) * C)  # row k: queries j != rows[k], in order
    relevant = torch.tensor([[did in batch.positives[i] for j in range(B) if j != i for did in batch.doc_ids[j]]
                             for i in rows], dtype=torch.bool, device=scores.device).view(R, (B - 1) * C)
    extra = extra.masked_fill(relevant, IN_BATCH_MASKED_SCORE)
    return torch.cat([own, extra], dim=1)

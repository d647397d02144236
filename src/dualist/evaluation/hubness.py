"""Hubness of a retrieval run: how few documents fill how many top-k lists.

A dense retriever suffers from hubness when a few documents sit near every query in embedding space
and so appear in most queries' top-k lists, crowding out the relevant ones. Re-ranking a fixed
candidate list hides it; searching the whole corpus does not. Three figures describe it (after
Radovanović et al., JMLR 2010, who define the k-occurrence ``N_k(d)``: the number of top-k lists
document ``d`` appears in):

- ``distinct``: how many different documents appear across all top-k lists (more is healthier);
- ``max_occurrence``: the largest ``N_k(d)``, with the document ``top_doc`` that reaches it;
- ``skewness``: the sample skewness of ``N_k`` over the corpus (every document, 0 for those in no list),
  ``mean((N - mean N)^3) / std(N)^3``; a hub-ridden run is strongly right-skewed.

>>> run = {"q1": {"a": 3, "b": 2}, "q2": {"a": 5, "c": 1}, "q3": {"a": 1, "b": 0}}
>>> h = hubness(run, k=2, corpus_size=5)       # N_2 over the corpus: a 3, b 2, c 1, and two docs 0
>>> h.distinct, h.max_occurrence, h.top_doc
(3, 3, 'a')
>>> round(h.skewness, 4)                        # mean 1.2: mean cubed deviation 0.576 / std 1.1662^3
0.3632
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

import numpy as np

from dualist.evaluation.metrics import rank_documents

__all__ = ["Hubness", "hubness"]


@dataclasses.dataclass(frozen=True)
class Hubness:
    """Hubness figures of a run's top-k lists (see the module docstring)."""

    k: int
    queries: int
    distinct: int
    max_occurrence: int
    top_doc: str | None
    skewness: float

    def to_dict(self) -> dict[str, float | int | str | None]:
        return dataclasses.asdict(self)


def hubness(run: Mapping[str, Mapping[str, float]], k: int = 10, *, corpus_size: int | None = None) -> Hubness:
    """The hubness figures of ``run``'s top-``k`` lists (ranked as trec_eval ranks them).

    ``corpus_size`` counts the documents that are in no list as zero occurrences in the skewness;
    without it only the documents that appear somewhere are counted.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts: Counter[str] = Counter()
    for docs in run.values():
        counts.update(rank_documents(docs)[:k])
    occurrences = np.array(sorted(counts.values()), dtype=np.float64)
    if corpus_size is not None:
        if corpus_size < len(counts):
            raise ValueError(f"corpus_size={corpus_size} is below the {len(counts)} distinct documents in the run")
        occurrences = np.concatenate([np.zeros(corpus_size - len(counts)), occurrences])
    top_doc, top = min(counts.items(), key=lambda item: (-item[1], item[0])) if counts else (None, 0)
    std = occurrences.std() if len(occurrences) else 0.0
    skew = float(((occurrences - occurrences.mean()) ** 3).mean() / std ** 3) if std > 0 else 0.0
    return Hubness(k=k, queries=len(run), distinct=len(counts), max_occurrence=int(top), top_doc=top_doc,
                   skewness=skew)

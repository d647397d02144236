"""The fixed, seeded query samples that a profile's caps select (they bind on datasets larger than SciFact)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from dualist.data import Dataset, ranked_positives, stable_sample
from dualist.repro.profiles import Profile

__all__ = ["Samples"]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Samples:
    """Which training queries are scored and trained on, how many positives each, which dev queries select.

    ``train_ids`` / ``select_ids`` are None, and ``max_positives`` 0, where the cap removes nothing;
    they then add nothing to any fingerprint either, so a dataset under the caps keeps the outputs it
    had before the caps existed.
    """

    train_run: Run  # candidates of the training queries scored and trained on
    train_ids: tuple[str, ...] | None
    select_ids: tuple[str, ...] | None
    max_positives: int  # positives per training query, scored and trained on (0: all)
    min_grade: int = 1  # the grade a training positive needs (2 on graded NFCorpus qrels)
    seed: int = 13  # the base seed the samples (and the teacher folds) are drawn with
    mined: bool = False  # train_run holds mined candidates, not BM25's

    @classmethod
    def of(cls, dataset: Dataset, runs: dict[str, Run], prof: Profile, seed: int, *, min_grade: int = 1) -> Samples:
        """The samples; with ``min_grade`` > 1 only the training queries with a positive of that grade."""
        qrels = dataset.qrels_for("train")
        usable = [q for q in runs["train"] if q in dataset.queries_for("train")
                  and (min_grade <= 1 or ranked_positives(qrels[q], dataset.corpus, min_grade=min_grade))]
        train_ids = _sample(usable, prof.score_queries, seed)
        if train_ids is None and len(usable) < len(runs["train"]):
            train_ids = tuple(sorted(usable))
        select_ids = _sample([q for q in runs["dev"] if q in dataset.queries_for("dev")], prof.select_queries, seed)
        train_run = runs["train"] if train_ids is None else {q: runs["train"][q] for q in train_ids}
        cap = prof.score_positives
        binds = cap > 0 and any(len(ranked_positives(qrels.get(q, {}), dataset.corpus, min_grade=min_grade)) > cap
                                for q in train_run)
        max_positives = cap if binds else 0
        if train_ids is not None or select_ids is not None or max_positives:
            logger.info("capped samples: %s training queries scored and trained on, %s positives each, %s dev "
                        "queries for checkpoint selection", len(train_ids) if train_ids else "all",
                        f"at most {max_positives}" if max_positives else "all",
                        len(select_ids) if select_ids else "all")
        return cls(train_run, train_ids, select_ids, max_positives, min_grade, seed)


def _sample(ids: list[str], n: int, seed: int) -> tuple[str, ...] | None:
    """A fixed, seeded sample of ``n`` of ``ids`` (sorted), or None when ``n`` removes nothing (or is 0)."""
    if n <= 0 or n >= len(ids):
        return None
    return tuple(stable_sample(random.Random(seed), sorted(ids), n))

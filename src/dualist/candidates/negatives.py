"""Hard negatives for training, picked from a candidate run (typically BM25 top-100).

>>> run = {"q1": {"d1": 9.0, "d2": 8.0, "d3": 7.0, "d4": 7.0, "d5": 1.0}}
>>> qrels = {"q1": {"d2": 1, "d5": 0}}
>>> sample_negatives(run, qrels, 2)                       # d2 is a positive; d4 beats d3 on the tie
{'q1': ['d1', 'd4']}
>>> sample_negatives(run, qrels, 2, strategy="range", rank_range=(3, 5), seed=1)
{'q1': ['d3', 'd5']}
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Collection, Mapping
from typing import Literal

from dualist.data.splits import stable_sample
from dualist.data.trec import rank_docs
from dualist.errors import ConfigError

__all__ = ["sample_negatives"]

logger = logging.getLogger(__name__)


def _query_rng(seed: int, qid: str) -> random.Random:
    # Not hash(): that is salted per process. A digest makes each query's draws depend only on
    # (seed, qid), so results do not change with the order or the subset of queries.
    digest = hashlib.sha256(f"{seed}\x00{qid}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_negatives(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], n: int, *,
                     strategy: Literal["top", "range"] = "top", rank_range: tuple[int, int] = (1, 100),
                     seed: int = 0,
                     exclude: Mapping[str, Collection[str]] | Collection[str] | None = None,
                     ) -> dict[str, list[str]]:
    """Pick up to ``n`` negative documents per query of ``run``.

    The rule:

    1. Rank the query's documents in ``run`` by score, descending, ties broken by document id in
       trec_eval order (descending; :func:`dualist.data.rank_docs`). Ranks are 1-based and refer to
       this full ranking.
    2. Drop the positives (``qrels[qid][doc] > 0``) and the ``exclude``d documents. Documents
       judged non-relevant (grade ``<= 0``) stay: they are negatives by judgement.
    3. ``strategy="top"``: keep the first ``n`` remaining documents (``rank_range`` is not used).
       ``strategy="range"``: draw ``n`` without replacement, uniformly, from the remaining documents
       whose rank lies in ``rank_range`` (inclusive, both ends), returned in rank order.
    4. When fewer than ``n`` documents remain, all of them are returned (possibly none): callers
       that need exactly ``n`` must pad or skip such queries.

    Draws use a generator seeded from ``(seed, qid)`` through a digest (not Python's salted
    ``hash``), so the result for a query is the same whatever other queries are passed and in
    whatever order, in every process.

    Args:
        run: query id -> doc id -> score (the candidates).
        qrels: query id -> doc id -> grade; queries absent from it have no positives.
        n: how many negatives per query (``>= 0``).
        exclude: doc ids never to return, either per query (a mapping ``qid -> ids``) or for every
            query (any other collection of ids).

    Returns:
        query id -> negatives, for every query of ``run``, in ``run``'s order.
    """
    if strategy not in ("top", "range"):
        raise ConfigError(f"strategy must be 'top' or 'range', got {strategy!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lo, hi = rank_range
    if strategy == "range" and not 1 <= lo <= hi:
        raise ValueError(f"rank_range must be (first, last) with 1 <= first <= last, got {rank_range}")
    per_query = isinstance(exclude, Mapping)
    always = frozenset() if exclude is None or per_query else frozenset(exclude)

    out: dict[str, list[str]] = {}
    short = 0
    for qid, scores in run.items():
        banned = {d for d, rel in qrels.get(qid, {}).items() if rel > 0}
        banned.update(always)
        if per_query:
            banned.update(exclude.get(qid, ()))  # type: ignore[union-attr]
        ranking = rank_docs(scores)
        if strategy == "top":
            picked = []
            for did, _ in ranking:
                if len(picked) == n:
                    break
                if did not in banned:
                    picked.append(did)
        else:
            pool = [did for did, _ in ranking[lo - 1:hi] if did not in banned]
            picked = stable_sample(_query_rng(seed, qid), pool, n)
        short += len(picked) < n
        out[qid] = picked
    if short:
        logger.info("%d of %d queries have fewer than %d negatives available", short, len(out), n)
    return out

"""Fixed, seeded splits of query sets.

SciFact ships only ``train`` and ``test`` judgements, but model selection needs a ``dev`` split that
is neither (docs/architecture.md §4: tune on dev, report on test). dualist therefore carves a fixed slice of
train queries as dev with :func:`carve_dev`; NFCorpus, which has its own dev split, is used as is.

The slice depends only on the *set* of query ids, the size and the seed: ids are sorted first and
ranked by draws from ``random.Random(seed).random()``, the one part of :mod:`random` that Python
guarantees to reproduce across versions. So the same seed gives the same dev queries everywhere.

>>> qrels = {f"q{i}": {f"d{i}": 1} for i in range(10)}
>>> train, dev = carve_dev(qrels, fraction=0.2, seed=13)
>>> len(train), len(dev), sorted(dev) == sorted(carve_dev(dict(reversed(qrels.items())), 0.2)[1])
(8, 2, True)
>>> set(train).isdisjoint(dev)
True
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["carve_dev", "stable_sample"]

T = TypeVar("T")


def stable_sample(rng: random.Random, items: Sequence[T], n: int) -> list[T]:
    """``n`` items drawn without replacement, in their original order, using only ``rng.random()``.

    One draw per item, then the ``n`` smallest draws win: unlike ``rng.sample`` this relies only on
    the generator's ``random()`` stream, which Python keeps identical across versions.

    >>> stable_sample(random.Random(0), ["a", "b", "c", "d"], 2)
    ['c', 'd']
    """
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []
    keys = [rng.random() for _ in items]
    chosen = sorted(sorted(range(len(items)), key=keys.__getitem__)[:n])
    return [items[i] for i in chosen]


def carve_dev(qrels: Mapping[str, Mapping[str, int]], fraction: float | None = 0.1, *, n: int | None = None,
              seed: int = 13) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Split ``qrels`` by query into ``(train, dev)``: a fixed, seeded set of queries goes to dev.

    Args:
        qrels: query id -> doc id -> relevance (typically a dataset's ``train`` split).
        fraction: share of queries for dev, rounded, at least 1; ignored when ``n`` is given.
        n: exact number of dev queries.
        seed: the seed; the result depends only on the query ids, the size and the seed.

    Both outputs keep the input's query order and are new dicts (the input is not modified).
    At least one query always stays in train.
    """
    qids = sorted(qrels)
    total = len(qids)
    if n is None:
        if fraction is None or not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
        n = max(1, round(fraction * total))
    if total < 2:
        raise ValueError(f"need at least 2 judged queries to carve a dev split, got {total}")
    if not 0 < n < total:
        raise ValueError(f"n must be between 1 and {total - 1} (the number of queries minus one), got {n}")
    dev_ids = set(stable_sample(random.Random(seed), qids, n))
    train = {q: dict(docs) for q, docs in qrels.items() if q not in dev_ids}
    dev = {q: dict(docs) for q, docs in qrels.items() if q in dev_ids}
    return train, dev

"""Unlabelled training queries made from the corpus: one sentence of a document's text per query.

Distillation can teach from queries nobody judged: the teacher scores their candidates, and a student
learns its ordering of them, which labels could never give (GPL, Wang et al. 2022, does this with
generated queries; the inverse cloze task, Lee et al. 2019, with a sentence of the document). Without a
query generator at hand, a sentence of a document's own text is the query here, and that document is
its one "positive": the place where the sentence certainly holds, so the one-hot terms of a loss have
something to pull up, while the teacher's scores say how far every other candidate is relevant too.

The sentences depend only on the corpus, ``n`` and the seed: documents are drawn with
:func:`~dualist.data.splits.stable_sample` over the sorted ids of those with an eligible sentence, and
each document's sentence with a generator seeded by the seed and its id. No judgement of any split is
read, so nothing of dev or test leaks in.

>>> corpus = {"d1": {"title": "T", "text": "Short one. The protein binds the receptor in mice. Ends here."},
...           "d2": {"title": "U", "text": "Too short."}}
>>> queries, qrels = sentence_queries(corpus, 5, seed=13, min_words=5)
>>> queries
{'pseudo-d1-1': 'The protein binds the receptor in mice.'}
>>> qrels
{'pseudo-d1-1': {'d1': 1}}
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from dualist.data.splits import stable_sample

__all__ = ["PSEUDO_PREFIX", "sentences", "sentence_queries"]

PSEUDO_PREFIX = "pseudo-"  # query ids are pseudo-<doc id>-<sentence index>

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by white space and a capital, digit or bracket.

    >>> sentences("We found X. 3 of 5 mice died! Why? e.g. not this")
    ['We found X.', '3 of 5 mice died!', 'Why? e.g. not this']
    """
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def sentence_queries(corpus: Mapping[str, Mapping[str, str]], n: int, *, seed: int = 13, min_words: int = 6,
                     max_words: int = 40, grade: int = 1) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``(queries, qrels)``: up to ``n`` queries, each one sentence of ``min_words`` to ``max_words`` words
    from a different document's text (its title is not used), judged relevant to that document with
    ``grade`` (the grade training positives need, e.g. 2 on NFCorpus's graded qrels).

    Fewer than ``n`` where fewer documents have such a sentence; ``n <= 0`` gives none.
    """
    if grade < 1:
        raise ValueError(f"grade must be >= 1 (a positive), got {grade}")
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    eligible: dict[str, list[tuple[int, str]]] = {}
    for did in sorted(corpus):
        found = [(i, s) for i, s in enumerate(sentences(corpus[did].get("text", "")))
                 if min_words <= len(s.split()) <= max_words]
        if found:
            eligible[did] = found
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for did in stable_sample(random.Random(seed), list(eligible), max(n, 0)):
        i, text = eligible[did][int(random.Random(f"{seed}:{did}").random() * len(eligible[did]))]
        qid = f"{PSEUDO_PREFIX}{did}-{i}"
        queries[qid] = text
        qrels[qid] = {did: grade}
    return queries, qrels

"""The in-memory BEIR dataset: a corpus, queries and relevance judgements split by split.

Plain dicts keep it cheap for 5k to 1M documents and make every field usable without dualist.

>>> ds = Dataset("toy", None,
...              corpus={"d1": {"title": "Cats", "text": "purr."}, "d2": {"title": "", "text": "Dogs bark."}},
...              queries={"q1": "cats?", "q2": "dogs?"},
...              qrels={"test": {"q2": {"d2": 1}}})
>>> ds
Dataset(name='toy', docs=2, queries=2, splits={'test': 1})
>>> ds.doc_text("d1"), ds.doc_text("d2")
('Cats purr.', 'Dogs bark.')
>>> ds.queries_for("test")
{'q2': 'dogs?'}
>>> ds.with_split("train", {"q1": {"d1": 1}}).splits
['test', 'train']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dualist.errors import DataError

__all__ = ["Dataset", "DataWarning", "doc_text"]

Qrels = dict[str, dict[str, int]]


class DataWarning(UserWarning):
    """Suspicious but usable input data (empty documents, judgements for unknown ids...).

    Escalate to errors with ``warnings.simplefilter("error", DataWarning)`` or ``strict=True``.
    """


def doc_text(doc: Mapping[str, str]) -> str:
    """The text every model sees for a document: ``"title text"``, the title left out when empty.

    >>> doc_text({"title": " A title ", "text": "Body. "})
    'A title Body.'
    >>> doc_text({"title": "", "text": "Body only"})
    'Body only'
    """
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    if not title:
        return text
    if not text:
        return title
    return f"{title} {text}"


@dataclass(eq=True)
class Dataset:
    """A BEIR-style dataset held in plain dicts.

    Attributes:
        name: short name (the folder name when loaded from disk).
        path: the folder it was read from, or ``None`` when built in memory.
        corpus: doc id -> ``{"title": ..., "text": ...}``, in file order.
        queries: query id -> text (all queries of the file, judged or not).
        qrels: split -> query id -> doc id -> graded relevance (``> 0`` means relevant).
    """

    name: str
    path: Path | None
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, Qrels] = field(default_factory=dict)

    def __repr__(self) -> str:  # the default one would print the whole corpus
        splits = {s: len(self.qrels[s]) for s in self.splits}
        return (f"Dataset(name={self.name!r}, docs={len(self.corpus)}, queries={len(self.queries)}, "
                f"splits={splits})")

    @property
    def splits(self) -> list[str]:
        """Names of the splits that have judgements, sorted."""
        return sorted(self.qrels)

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus (file) order."""
        return list(self.corpus)

    def qrels_for(self, split: str) -> Qrels:
        """The judgements of ``split`` (query id -> doc id -> relevance); a clear error if it is absent."""
        try:
            return self.qrels[split]
        except KeyError:
            where = f" in {self.path}" if self.path is not None else ""
            raise DataError(f"dataset {self.name!r} has no split {split!r}{where}; it has: "
                            f"{', '.join(self.splits) or '(none)'}",
                            hint="SciFact has no dev split: carve one from train with --dev-fraction 0.1 "
                                 "(dualist.data.carve_dev)" if split == "dev" else None) from None

    def queries_for(self, split: str) -> dict[str, str]:
        """Query id -> text for the queries judged in ``split``, sorted by id.

        Judged queries missing from :attr:`queries` are left out (the loader already reports them).
        """
        queries = self.queries
        return {q: queries[q] for q in sorted(self.qrels_for(split)) if q in queries}

    def doc_text(self, did: str) -> str:
        """``"title text"`` of document ``did`` (see :func:`doc_text`)."""
        return doc_text(self.corpus[did])

    def with_split(self, name: str, qrels: Mapping[str, Mapping[str, int]]) -> Dataset:
        """A copy with split ``name`` set to ``qrels`` (added, or replaced if it exists).

        The copy shares the corpus and queries dicts with this dataset (no copying of large data);
        only the mapping of splits is new.
        """
        new_qrels = dict(self.qrels)
        new_qrels[name] = {q: dict(docs) for q, docs in qrels.items()}
        return dataclasses.replace(self, qrels=new_qrels)

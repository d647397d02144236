"""TREC runs and qrels: the plain-text formats every IR tool reads.

* A **run** is ``qid Q0 docid rank score tag`` per line; in memory ``{qid: {docid: score}}``.
* **Qrels** are TREC ``qid 0 docid rel`` or BEIR ``query-id<TAB>corpus-id<TAB>score`` (header line
  optional); in memory ``{qid: {docid: rel}}``.

Rankings follow trec_eval: score descending, **ties broken by document id descending** (plain
string comparison), so the ranks written here are the ranks every evaluator computes.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
>>> write_trec_run({"q1": {"d1": 0.5, "d2": 1.5, "d3": 0.5}}, p)
>>> print(p.read_text(), end="")
q1 Q0 d2 1 1.5 dualist
q1 Q0 d3 2 0.5 dualist
q1 Q0 d1 3 0.5 dualist
>>> read_trec_run(p)
{'q1': {'d2': 1.5, 'd3': 0.5, 'd1': 0.5}}
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Container, Iterator, Mapping
from pathlib import Path
from typing import Literal

from dualist._io import atomic_write
from dualist.data._lines import iter_lines
from dualist.errors import DataError

__all__ = ["read_trec_run", "write_trec_run", "read_qrels", "write_qrels", "rank_docs", "ranked_positives"]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

_SPACE = re.compile(r"\s")
_BEIR_HEADER = ("query-id", "corpus-id", "score")


def rank_docs(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc id, score)`` pairs in trec_eval order: score descending, ties by doc id descending.

    >>> rank_docs({"a": 1.0, "b": 2.0, "c": 1.0})
    [('b', 2.0), ('c', 1.0), ('a', 1.0)]
    """
    items = sorted(scores.items(), key=lambda kv: kv[0], reverse=True)
    items.sort(key=lambda kv: kv[1], reverse=True)  # stable: equal scores keep the id order
    return items


def ranked_positives(grades: Mapping[str, int], known: Container[str] | None = None, *,
                     min_grade: int = 1) -> list[str]:
    """A query's relevant documents (grade >= ``min_grade``), highest grade first, ties in qrels order.

    ``known`` keeps only the documents it contains (e.g. the corpus). Training takes the first of
    these as a query's positive, and teacher scoring scores a prefix of the same list, so the two
    always agree on which documents come first.

    >>> ranked_positives({"a": 1, "b": 2, "c": 0, "d": 1})
    ['b', 'a', 'd']
    >>> ranked_positives({"a": 1, "b": 2}, known={"a"})
    ['a']
    >>> ranked_positives({"a": 1, "b": 2, "c": 0, "d": 2}, min_grade=2)
    ['b', 'd']
    """
    floor = max(1, min_grade)
    judged = [(d, g) for d, g in grades.items() if g >= floor and (known is None or d in known)]
    return [d for d, _ in sorted(judged, key=lambda pair: -pair[1])]  # stable: ties keep qrels order


def _check_id(value: str, what: str, path: Path) -> None:
    if not value or _SPACE.search(value):
        raise DataError(f"cannot write {what} {value!r}: ids must be non-empty and contain no whitespace",
                        path=path, hint="the TREC formats are whitespace-separated; rename the id")


# --------------------------------------------------------------------------- runs
def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "dualist",
                   max_rank: int | None = None) -> None:
    """Write ``run`` as a 6-column TREC run, atomically; ``max_rank`` keeps only the top of each query.

    Queries keep their order in ``run``; documents are ranked by :func:`rank_docs`. Scores are
    written with full precision (``repr``), so reading the file back gives the same floats.
    """
    path = Path(path)
    _check_id(tag, "run tag", path)
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be >= 1 or None, got {max_rank}")
    with atomic_write(path) as fh:
        for qid, docs in run.items():
            _check_id(qid, "query id", path)
            ranked = rank_docs(docs)
            if max_rank is not None:
                ranked = ranked[:max_rank]
            lines = []
            for rank, (did, score) in enumerate(ranked, 1):
                score = float(score)
                if math.isnan(score):
                    raise DataError(f"score of document {did!r} for query {qid!r} is NaN", path=path,
                                    hint="a NaN has no rank; drop the document or fix the model")
                _check_id(did, "document id", path)
                lines.append(f"{qid} Q0 {did} {rank} {score!r} {tag}\n")
            fh.writelines(lines)


def read_trec_run(path: str | Path) -> Run:
    """Read a 6-column TREC run into ``{qid: {docid: score}}`` (the rank column is not used).

    Errors name the file and line: wrong column count, a score that is not a number, a document
    listed twice for the same query.
    """
    path = _existing(path, "run")
    run: Run = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"expected 6 whitespace-separated columns, found {len(parts)}", path=path,
                            line=lineno, hint="a TREC run line is: qid Q0 docid rank score tag")
        qid, _, did, _, score_s, _ = parts
        try:
            score = float(score_s)
        except ValueError:
            score = math.nan
        if math.isnan(score):
            raise DataError(f"score {score_s!r} is not a number", path=path, line=lineno,
                            hint="column 5 of a TREC run is the score")
        docs = run.setdefault(qid, {})
        if did in docs:
            raise DataError(f"document {did!r} appears twice for query {qid!r}", path=path, line=lineno,
                            hint="a run lists each document at most once per query")
        docs[did] = score
    return run


# --------------------------------------------------------------------------- qrels
def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found", path=path,
                        hint="check the path" if not path.exists() else f"{path} is a directory, not a file")
    return path


def iter_qrels(path: Path, fmt: Literal["auto", "trec", "beir"] = "auto") -> Iterator[tuple[int, str, str, int]]:
    """Yield ``(line, qid, docid, rel)`` from a TREC or BEIR qrels file, validating every row."""
    ncols = {"trec": 4, "beir": 3}.get(fmt)
    first = True
    for lineno, line in iter_lines(path):
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if first:
            first = False
            if len(parts) == 3 and tuple(p.lower() for p in parts) == _BEIR_HEADER and fmt != "trec":
                ncols = 3
                continue
            if ncols is None:
                ncols = len(parts) if len(parts) in (3, 4) else None
                if ncols is None:
                    raise DataError(f"expected 3 (BEIR) or 4 (TREC) columns, found {len(parts)}",
                                    path=path, line=lineno,
                                    hint="BEIR: query-id<TAB>corpus-id<TAB>score; TREC: qid 0 docid rel")
        if len(parts) != ncols:
            hint = ("BEIR qrels rows are: query-id<TAB>corpus-id<TAB>score" if ncols == 3
                    else "TREC qrels rows are: qid 0 docid rel")
            raise DataError(f"expected {ncols} columns, found {len(parts)}", path=path, line=lineno, hint=hint)
        qid, did, rel_s = (parts[0], parts[1], parts[2]) if ncols == 3 else (parts[0], parts[2], parts[3])
        try:
            rel = int(rel_s)
        except ValueError:
            raise DataError(f"relevance {rel_s!r} is not an integer", path=path, line=lineno,
                            hint="graded relevance must be a whole number (0 = not relevant)") from None
        if not qid or not did:
            raise DataError("empty query or document id", path=path, line=lineno)
        yield lineno, qid, did, rel


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC (``qid 0 docid rel``) or BEIR (``query-id corpus-id score``, header optional) qrels.

    The format is told from the first line. A (query, document) pair judged twice keeps the last
    grade (logged as a warning).
    """
    path = _existing(path, "qrels")
    qrels: Qrels = {}
    dups = 0
    for _, qid, did, rel in iter_qrels(path):
        docs = qrels.setdefault(qid, {})
        dups += did in docs
        docs[did] = rel
    if dups:
        logger.warning("%s: %d (query, document) pairs judged more than once; kept the last grade", path, dups)
    return qrels


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | Path,
                format: Literal["trec", "beir"] = "trec") -> None:  # noqa: A002 - the natural name
    """Write qrels as TREC (``qid 0 docid rel``) or BEIR (header + tab-separated) text, atomically.

    Queries and documents keep their order in ``qrels``, so a file read and written back is unchanged.
    """
    if format not in ("trec", "beir"):
        raise ValueError(f"format must be 'trec' or 'beir', got {format!r}")
    path = Path(path)
    with atomic_write(path) as fh:
        if format == "beir":
            fh.write("\t".join(_BEIR_HEADER) + "\n")
        for qid, docs in qrels.items():
            _check_id(qid, "query id", path)
            for did, rel in docs.items():
                _check_id(did, "document id", path)
                if format == "trec":
                    fh.write(f"{qid} 0 {did} {int(rel)}\n")
                else:
                    fh.write(f"{qid}\t{did}\t{int(rel)}\n")

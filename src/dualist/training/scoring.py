"""The teacher score cache: cross-encoder scores of (query, candidate) pairs, computed once, on disk.

Distillation needs the teacher's score for every (query, document) pair a student batch can hold:
each training query's top-``depth`` candidates plus its positives. Scoring them is the slow part of
distillation, so :func:`score_candidates` does it once and keeps the result as a Parquet file with
columns ``qid, did, score``:

- **resumable**: pairs are scored in shards of ``shard_size`` written to ``<out>.parts/``; a restart
  skips the shards already there, and the merged file replaces ``<out>`` atomically at the end;
- **sharded**: under ``torchrun`` each process scores its contiguous range of the shards and rank 0
  merges them; across machines, ``shard=(i, n)`` (``--shard i/n``) scores range ``i`` of ``n`` and the run
  that finds every shard on disk merges them. The shards are the same whatever the number of
  processes, so the merged file is the one a single process writes;
- **checked**: the file's Parquet metadata (key ``dualist``) records what it was made from — the
  teacher's fingerprint (:func:`dualist._io.fingerprint_files` over the files ``save_pretrained``
  writes), the candidate run's fingerprint, ``depth``, the positives — and a cache made from other
  inputs raises :class:`~dualist.errors.StaleArtifactError` instead of silently training on it.

:class:`TeacherScores` is the loaded cache: ``lookup(qid, did)``, ``as_dict()``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dualist._io import fingerprint_files, fingerprint_obj, progress, read_json, write_json
from dualist.data.trec import rank_docs, ranked_positives
from dualist.distributed import barrier, init_process_group, shard_range, world
from dualist.errors import DualistError, StaleArtifactError
from dualist.training.checkpoints import file_umask

__all__ = ["TeacherScores", "MissingScoreError", "score_candidates", "combine_scores", "candidate_pairs",
           "teacher_fingerprint"]

logger = logging.getLogger(__name__)

META_KEY = b"dualist"
# what each fingerprint entry means, for the stale-cache message
_WHAT = {"teacher": "teacher model", "candidates": "candidate run", "depth": "depth",
         "positives": "positives (qrels of the split)", "split": "split"}


class MissingScoreError(DualistError, KeyError):
    """A (query, document) pair that the teacher score cache does not hold."""

    def __str__(self) -> str:  # KeyError's str() would print the message as a quoted repr
        return str(self.args[0])


class TeacherScores:
    """Teacher scores of (query, document) pairs, usually loaded from a :func:`score_candidates` file.

    Build one from a dict for tests or custom pipelines:

    >>> ts = TeacherScores({"q1": {"d1": 2.5, "d2": -1.0}})
    >>> ts.lookup("q1", "d1"), len(ts), ("q1", "d2") in ts
    (2.5, 2, True)
    >>> ts.lookup("q1", "d9")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dualist.training.scoring.MissingScoreError: no teacher score for query 'q1' and document 'd9'...
    """

    def __init__(self, scores: Mapping[str, Mapping[str, float]], *, meta: dict[str, Any] | None = None,
                 path: str | Path | None = None):
        self._scores = {q: {d: float(s) for d, s in docs.items()} for q, docs in scores.items()}
        self.meta = dict(meta or {})
        self.path = Path(path) if path is not None else None

    @property
    def fingerprint(self) -> str:
        """One hash of the inputs the scores were made from (of the scores themselves when unknown)."""
        inputs = {k: self.meta.get(k) for k in _WHAT} if self.meta else self._scores
        if self.meta.get("bm25_weight"):  # a teacher + BM25 ensemble (dualist.training.ensemble)
            inputs = {**inputs, "bm25_weight": self.meta["bm25_weight"]}
        return fingerprint_obj(inputs)

    @classmethod
    def load(cls, path: str | Path) -> TeacherScores:
        """Read a cache written by :func:`score_candidates`."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"teacher scores {path} do not exist; make them with "
                                    "`dualist score-teacher` (dualist.training.score_candidates)")
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else {}
        scores: dict[str, dict[str, float]] = {}
        for q, d, s in zip(table.column("qid").to_pylist(), table.column("did").to_pylist(),
                           table.column("score").to_pylist()):
            scores.setdefault(q, {})[d] = s
        return cls(scores, meta=meta, path=path)

    def lookup(self, qid: str, did: str) -> float:
        """The teacher's score of document ``did`` for query ``qid``; :class:`MissingScoreError` if absent."""
        try:
            return self._scores[qid][did]
        except KeyError:
            raise MissingScoreError(self._missing_message(qid, did)) from None

    def _missing_message(self, qid: str, did: str) -> str:
        where = f" in {self.path}" if self.path else ""
        if qid not in self._scores:
            why = "that query was not scored at all (was the cache made for another split or candidate run?)"
        else:
            depth = self.meta.get("depth")
            held = f"its top-{depth} candidates" if depth else "its candidates"
            plus = " plus its positives" if self.meta.get("positives") else ""
            why = (f"the cache holds {len(self._scores[qid])} documents for that query ({held}{plus}); "
                   "re-score with a larger depth, or sample negatives only from the ranks that were scored")
        return f"no teacher score for query {qid!r} and document {did!r}{where}: {why}"

    def as_dict(self) -> dict[str, dict[str, float]]:
        """A copy of the scores as a run: ``{qid: {did: score}}``."""
        return {q: dict(docs) for q, docs in self._scores.items()}

    def __len__(self) -> int:
        return sum(len(docs) for docs in self._scores.values())

    def __contains__(self, pair: object) -> bool:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return False
        qid, did = pair
        return did in self._scores.get(qid, {})

    def __repr__(self) -> str:
        return f"TeacherScores(queries={len(self._scores)}, pairs={len(self)}, path={self.path})"


def candidate_pairs(dataset: Any, split: str, run: Mapping[str, Mapping[str, float]], *,
                    depth: int | None = None, include_positives: bool = True,
                    max_positives: int | None = None) -> list[tuple[str, str]]:
    """The (qid, did) pairs to score: each query's top-``depth`` candidates, then its positives.

    Positives come highest grade first (:func:`dualist.data.ranked_positives`, the order training
    takes them in); ``max_positives`` keeps the first ones only, which is all a student trained with
    the same ``TrainConfig.max_positives`` (or ``positives="first"`` for 1) reads, and saves scoring
    work on datasets with many judged documents per query.

    Queries are those of ``split`` that the run has, sorted; candidates are ranked in trec_eval order
    (:func:`dualist.data.rank_docs`, as :func:`dualist.candidates.sample_negatives` ranks them, so
    "top-``depth``" here and "ranks 1..depth" there are the same documents). Each pair appears once.
    """
    queries = dataset.queries_for(split)
    positives = _positives(dataset, split, max_positives) if include_positives else {}
    pairs = []
    for qid in sorted(q for q in run if q in queries):
        ranked = rank_docs(run[qid])
        docs = [d for d, _ in (ranked if depth is None else ranked[:depth])]
        docs += positives.get(qid, [])
        seen = set()
        for d in docs:
            if d not in seen and d in dataset.corpus:
                seen.add(d)
                pairs.append((qid, d))
    return pairs


def _positives(dataset: Any, split: str, max_positives: int | None) -> dict[str, list[str]]:
    """Each query's positives to score, best grade first, at most ``max_positives`` (None: all)."""
    if max_positives is not None and max_positives < 1:
        raise ValueError(f"max_positives must be at least 1 (or None for all), got {max_positives}")
    out = {}
    for qid, grades in dataset.qrels_for(split).items():
        ranked = ranked_positives(grades, dataset.corpus)
        out[qid] = ranked if max_positives is None else ranked[:max_positives]
    return out


def teacher_fingerprint(teacher: Any) -> str:
    """Hash of the files ``teacher.save_pretrained`` writes: the same weights give the same hash."""
    with tempfile.TemporaryDirectory(prefix="dualist-teacher-") as tmp:
        teacher.save_pretrained(tmp)
        return fingerprint_files([tmp])


def score_candidates(teacher: Any, dataset: Any, split: str, run: Mapping[str, Mapping[str, float]],
                     out_path: str | Path, *, depth: int | None = None, batch_size: int = 64,
                     include_positives: bool = True, show_progress: bool | None = None,
                     shard_size: int = 2048, force: bool = False,
                     teacher_path: str | Path | None = None, max_positives: int | None = None,
                     shard: tuple[int, int] | None = None) -> TeacherScores | None:
    """Score every candidate pair of ``split`` with the cross-encoder ``teacher``; cache as Parquet.

    Args:
        teacher: a :class:`~dualist.models.CrossEncoder` (``score`` and ``save_pretrained``).
        run: the candidates, ``{qid: {did: score}}`` (e.g. BM25 top-100 of the training queries).
        out_path: the Parquet file; an up-to-date one is loaded instead of re-scored.
        depth: score each query's top-``depth`` candidates (None: all of them).
        include_positives: also score each query's relevant documents (the students' column 0).
        max_positives: score only each query's first ``max_positives`` relevant documents, highest
            grade first (None: all of them); see :func:`candidate_pairs`.
        shard_size: pairs per resumable shard under ``<out_path>.parts/``.
        force: replace a cache made from other inputs instead of raising.
        teacher_path: where the teacher was loaded from; recorded for readers (the fingerprint is
            always computed from the model itself, so a folder and a loaded model agree).
        shard: ``(i, n)``: score only range ``i`` of ``n`` of the resumable shards, e.g. on one of ``n``
            machines sharing ``out_path``'s folder. The call that finds all shards done merges them and
            returns the scores; the others return None. Default: the whole run in one process, or
            under torchrun this process's range, with rank 0 merging and every process returning.

    Raises:
        StaleArtifactError: ``out_path`` was made with another teacher, candidate run, depth, split or
            positives, and ``force`` is False.
    """
    import pyarrow as pa

    out_path = Path(out_path)
    pairs = candidate_pairs(dataset, split, run, depth=depth, include_positives=include_positives,
                            max_positives=max_positives)
    split_queries = dataset.queries_for(split)
    ranked_run = {q: [d for d, _ in rank_docs(run[q])] for q in sorted(run) if q in split_queries}
    qrels = dataset.qrels_for(split)
    positives = {q: sorted(d for d, r in qrels[q].items() if r > 0) for q in sorted(qrels)}
    if max_positives is not None:  # a cap that removes nothing keeps the uncapped fingerprint (and its cache)
        capped = _positives(dataset, split, max_positives)
        if capped != _positives(dataset, split, None):
            positives = {q: sorted(docs) for q, docs in sorted(capped.items())}
    meta = {
        "teacher": teacher_fingerprint(teacher),
        "candidates": fingerprint_obj(ranked_run),
        "depth": depth,
        "positives": fingerprint_obj(positives) if include_positives else None,
        "split": split,
        "pairs": len(pairs),
        "teacher_path": str(teacher_path) if teacher_path is not None else None,
    }

    # -- an existing cache: use it when it matches, refuse it when it does not
    if out_path.exists():
        cached = TeacherScores.load(out_path)
        changed = [k for k in _WHAT if cached.meta.get(k) != meta[k]]
        if not changed:
            logger.info("teacher scores up to date: %s (%d pairs)", out_path, len(cached))
            return cached
        diff = "; ".join(f"{_WHAT[k]}: {cached.meta.get(k)!r} in the file, {meta[k]!r} now" for k in changed)
        if not force:
            raise StaleArtifactError(
                f"{out_path} holds teacher scores made from other inputs ({diff}). Delete the file, or pass "
                "--force (force=True) to score again.")
        logger.warning("re-scoring %s (%s)", out_path, diff)

    # -- score shard by shard; a shard on disk is finished work
    current = init_process_group() if shard is None else world()
    together = shard is None and current.distributed  # torchrun: the processes wait for each other
    index, count = shard if shard is not None else (current.rank, current.size)
    parts = out_path.with_name(out_path.name + ".parts")
    parts_meta = {k: meta[k] for k in (*_WHAT, "pairs")} | {"shard_size": shard_size}
    if current.is_main or not together:
        if parts.exists() and (not (parts / "inputs.json").exists()
                               or read_json(parts / "inputs.json") != parts_meta):
            logger.info("discarding partial scores in %s: they were made from other inputs", parts)
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        write_json(parts / "inputs.json", parts_meta)
    if together:
        barrier()
    shards = [pairs[i:i + shard_size] for i in range(0, len(pairs), shard_size)]
    shard_paths = [parts / f"shard-{k:05d}.parquet" for k in range(len(shards))]
    mine = shard_range(len(shards), index, count)
    done = sum(len(shards[k]) for k in mine if shard_paths[k].exists())
    disable = None if show_progress is None else not show_progress
    with progress(total=sum(len(shards[k]) for k in mine), initial=done, desc="teacher scores", unit="pair",
                  disable=disable if current.is_main or not together else True) as bar:
        for k in mine:
            shard_pairs, shard_path = shards[k], shard_paths[k]
            if shard_path.exists():
                continue
            queries = [dataset.queries[q] for q, _ in shard_pairs]
            docs = [dataset.doc_text(d) for _, d in shard_pairs]
            scores = [float(s) for s in teacher.score(queries, docs, batch_size=batch_size, show_progress=False)]
            if len(scores) != len(shard_pairs):
                raise RuntimeError(f"teacher.score returned {len(scores)} scores for {len(shard_pairs)} pairs")
            table = pa.table({"qid": [q for q, _ in shard_pairs], "did": [d for _, d in shard_pairs],
                              "score": pa.array(scores, type=pa.float32())})
            _write_parquet(table, shard_path)
            bar.update(len(shard_pairs))
    if together:
        barrier()
        if current.is_main:
            _merge(shard_paths, meta, out_path, parts)
        barrier()
        return TeacherScores.load(out_path)
    missing = [p for p in shard_paths if not p.exists()]
    if missing:
        logger.info("shard %d/%d of %s scored; %d of %d shards remain (the run that completes them merges)",
                    index, count, out_path, len(missing), len(shard_paths))
        return None
    _merge(shard_paths, meta, out_path, parts)
    return TeacherScores.load(out_path)


def combine_scores(paths: Sequence[str | Path], out_path: str | Path, *, split: str) -> TeacherScores:
    """One cache of every pair in the caches at ``paths`` (e.g. a split's scores and those of the queries
    added to it), for training on ``split``.

    Its fingerprint is made from theirs, so a student trained on it is retrained when any part changes.
    The parts may come from different teachers (cross-fitted fold-teachers for the judged queries, the
    teacher for queries none of them saw); ``teacher`` is then the fingerprint of their list. A pair held
    by two caches keeps the first one's score.
    """
    import pyarrow as pa

    parts = [TeacherScores.load(p) for p in paths]
    teachers = [part.meta.get("teacher") for part in parts]
    depths = {part.meta.get("depth") for part in parts}
    meta = {"teacher": teachers[0] if len(set(teachers)) == 1 else fingerprint_obj(teachers),
            "candidates": fingerprint_obj([p.meta.get("candidates") for p in parts]),
            "depth": depths.pop() if len(depths) == 1 else None,
            "positives": fingerprint_obj([p.meta.get("positives") for p in parts]), "split": split,
            "parts": [str(p) for p in paths]}
    combined: dict[str, dict[str, float]] = {}
    for part in parts:
        for q, docs in part.as_dict().items():
            held = combined.setdefault(q, {})
            for d, score in docs.items():
                held.setdefault(d, score)
    rows = [(q, d, score) for q, docs in combined.items() for d, score in docs.items()]
    meta["pairs"] = len(rows)
    table = pa.table({"qid": [r[0] for r in rows], "did": [r[1] for r in rows],
                      "score": pa.array([r[2] for r in rows], type=pa.float32())})
    _write_parquet(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), Path(out_path))
    logger.info("wrote %s: %d teacher scores from %d caches", out_path, len(rows), len(parts))
    return TeacherScores.load(out_path)


def _merge(shard_paths: list[Path], meta: dict[str, Any], out_path: Path, parts: Path) -> None:
    """Merge the shards into one file, with what it was made from in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("qid", pa.string()), ("did", pa.string()), ("score", pa.float32())])
    tables = [pq.read_table(p) for p in shard_paths]
    merged = pa.concat_tables(tables) if tables else schema.empty_table()
    merged = merged.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    _write_parquet(merged, out_path)
    shutil.rmtree(parts)
    logger.info("wrote %s: %d teacher scores", out_path, merged.num_rows)


def _write_parquet(table: Any, path: Path) -> None:
    """Write to a temporary sibling and rename: a Parquet file on disk is always complete."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o666 & ~file_umask())  # mkstemp makes it private; the cache should not be
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

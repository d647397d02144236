"""The candidates stage: BM25 top-K per query of a split, cached as a TREC run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dualist._io import fingerprint_obj
from dualist.config import opt
from dualist.data import Dataset
from dualist.stages import markers
from dualist.stages.inputs import dataset_fingerprint, split_queries

__all__ = ["CandidatesConfig", "candidates_stage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidatesConfig:
    split: str = opt("test", "which qrels split's queries to retrieve for")
    k: int = opt(100, "candidates per query")
    # None: the retriever's default (Pyserini's k1=0.9, b=0.4), left out of the fingerprint, as
    # `dualist repro` has always run it; a value given (the CLI gives both) is counted.
    k1: float | None = opt(None, "BM25 k1 (None: Pyserini's 0.9)")
    b: float | None = opt(None, "BM25 b (None: Pyserini's 0.4)")

    def bm25_params(self) -> dict[str, float]:
        return {name: value for name, value in (("k1", self.k1), ("b", self.b)) if value is not None}


def candidates_stage(dataset: Dataset, config: CandidatesConfig, out: str | Path, *, force: bool = False) -> Path:
    """BM25 top-``k`` for the queries of ``config.split``, written to ``out`` as a TREC run; returns ``out``.

    Skipped when ``out`` is up to date. Read the run with :func:`dualist.data.read_trec_run`: a query
    BM25 finds nothing for is absent (a TREC run has no line for it), on the first call and on a
    resumed one alike.
    """
    from dualist.candidates import bm25_run

    out = Path(out)
    split_queries(dataset, config.split)  # a split without queries is an error, not an empty run marked done
    params = config.bm25_params()
    fp = fingerprint_obj(["bm25", dataset_fingerprint(dataset, config.split), config.k, params])
    if not force and markers.is_done(out, fp):
        logger.info("candidates up to date: %s", out)
        return out
    markers.clear_done(out)
    t0 = time.time()
    bm25_run(dataset, config.split, k=config.k, out_path=out, **params)
    markers.mark_done(out, fp, stage="candidates", split=config.split, k=config.k, params=params,
                      seconds=time.time() - t0)
    return out

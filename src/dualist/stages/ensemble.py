"""The BM25-weight stage: choose, on dev, how much BM25 joins the teacher's distillation targets.

:mod:`dualist.training.ensemble` defines the teacher + BM25 ensemble; this stage re-ranks the dev
split's top-``depth`` candidates with the teacher, scores the same pairs with BM25, and keeps the
weight of :data:`~dualist.training.ensemble.BM25_WEIGHTS` whose ensemble has the best dev nDCG@10
(0, the teacher alone, when BM25 does not help). The result is a JSON file::

    {"weight": 0.5, "metric": "ndcg@10", "dev": {"0.0": 0.679, "0.1": 0.690, ...},
     "split": "dev", "depth": 20, "queries": 81}

whose ``weight`` is what ``train-student --teacher-bm25-weight`` takes (``dualist repro`` passes it on
when its profile's ``teacher_bm25`` is on).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dualist._io import fingerprint_files, fingerprint_obj, read_json, write_json
from dualist.data import Dataset
from dualist.stages import markers
from dualist.stages.inputs import dataset_fingerprint, split_queries

__all__ = ["BM25WeightConfig", "bm25_weight_stage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25WeightConfig:
    """The teacher, the dev candidates it re-ranks, and how many of them per query."""

    teacher: Path                               # the teacher's model folder
    candidates: Path                            # TREC run of the dev split's candidates
    split: str = "dev"
    depth: int = 30                             # each query's top-``depth`` candidates are re-ranked
    select_queries: tuple[str, ...] | None = None  # the dev queries to use (None: all of the split's)
    batch_size: int = 64


def bm25_weight_stage(dataset: Dataset, config: BM25WeightConfig, out: str | Path, *, force: bool = False) -> Path:
    """Write the dev choice of the BM25 weight to the JSON file ``out`` (skipped when up to date); returns ``out``."""
    from dualist.candidates import BM25Retriever
    from dualist.data import read_trec_run
    from dualist.data.trec import rank_docs
    from dualist.errors import ConfigError
    from dualist.evaluation import evaluate
    from dualist.models import CrossEncoder
    from dualist.training.ensemble import choose_bm25_weight

    out = Path(out)
    if config.depth < 1:
        raise ConfigError(f"the BM25 weight's dev depth must be >= 1, got {config.depth}")
    teacher = Path(config.teacher)
    fp = fingerprint_obj(["bm25-weight", dataset_fingerprint(dataset, config.split), fingerprint_files(
        [config.candidates, *sorted(teacher.rglob("*.safetensors"))]), config.depth,
        sorted(config.select_queries) if config.select_queries is not None else None])
    if not force and markers.is_done(out, fp):
        logger.info("BM25 weight up to date: %s (%s)", out, read_json(out)["weight"])
        return out
    queries = split_queries(dataset, config.split)
    qrels = dataset.qrels_for(config.split)
    if config.select_queries is not None:
        unknown = sorted(set(config.select_queries) - set(queries))
        if unknown:
            raise ConfigError(f"{len(unknown)} selected queries are not judged queries of split {config.split!r}, "
                              f"e.g. {unknown[:3]}")
        queries = {q: queries[q] for q in sorted(config.select_queries)}
    run = read_trec_run(config.candidates)
    pairs = {q: [d for d, _ in rank_docs(run[q])[:config.depth]] for q in queries if run.get(q)}
    if not pairs:
        raise ConfigError(f"the candidate run {config.candidates} holds none of split {config.split!r}'s queries; "
                          "pass that split's candidates (dualist candidates --split dev)")
    markers.clear_done(out)
    t0 = time.time()
    flat = [(q, d) for q, docs in pairs.items() for d in docs]
    scores = CrossEncoder.from_pretrained(teacher).score([queries[q] for q, _ in flat],
                                                         [dataset.doc_text(d) for _, d in flat],
                                                         batch_size=config.batch_size)
    teacher_run: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(flat, scores.tolist(), strict=True):
        teacher_run.setdefault(q, {})[d] = s
    bm25 = BM25Retriever().index(dataset).score_pairs(queries, pairs)
    judged = {q: qrels[q] for q in pairs if q in qrels}

    def ndcg(fused):
        return evaluate(judged, fused, ["ndcg@10"]).mean["ndcg@10"]

    weight, figures = choose_bm25_weight(teacher_run, bm25, ndcg)
    result = {"weight": weight, "metric": "ndcg@10", "dev": {str(w): round(v, 6) for w, v in figures.items()},
              "split": config.split, "depth": config.depth, "queries": len(pairs)}
    write_json(out, result)
    markers.mark_done(out, fp, stage="bm25-weight", weight=weight, seconds=time.time() - t0)
    logger.info("BM25 weight %g chosen on %d %s queries: teacher alone %.4f, ensemble %.4f", weight, len(pairs),
                config.split, figures[0.0], figures[weight])
    return out

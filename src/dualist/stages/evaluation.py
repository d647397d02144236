"""The evaluation stage, and the uncached helpers the CLI's rerank / search / evaluate commands use.

The stage evaluates one model the way the paper's table does: re-rank mode on the test split (the
candidates' top ``rerank_depth``), on dev and on a fixed sample of training queries (the train-vs-test
gap), and, for a dual-encoder, retrieval mode over the whole corpus and hybrid retrieval (its
retrieval run fused with the BM25 test candidates, :data:`HYBRID`). BM25 is evaluated in its own order.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualist._io import fingerprint_obj, read_json, write_json
from dualist.data import Dataset
from dualist.stages import markers
from dualist.stages.inputs import dataset_fingerprint, model_fingerprint, model_kind, split_queries

if TYPE_CHECKING:
    from dualist.evaluation import EvalResult
    from dualist.index import BaseIndex
    from dualist.evaluation.memo import RerankMemo
    from dualist.models import CrossEncoder, DualEncoder, DualEncoderConfig, PrefixCache

__all__ = ["EvaluationConfig", "evaluation_stage", "RERANK_METRICS", "RETRIEVAL_METRICS", "HYBRID", "run_rerank",
           "run_retrieve", "run_hybrid", "run_evaluate"]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
RERANK_METRICS = ["mrr@10", "ndcg@10"]
RETRIEVAL_METRICS = ["ndcg@10", "mrr@10", "recall@100"]
HYBRID: dict[str, Any] = {"method": "rrf", "depth": 100, "k": 100, "rrf_k": 60}
"""The hybrid evaluation of a dual-encoder: each query's BM25 top ``depth`` (the test candidates) and the
DE's retrieval top ``depth`` (its retrieval run, which keeps 100), reciprocal-rank fused, best ``k`` kept."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Which model to evaluate, on which candidates, how deep.

    ``model`` is a saved model folder, a :class:`~dualist.models.DualEncoderConfig` (an untrained
    dual-encoder: the zero-shot start) or None (BM25: the candidates in their own order). ``name``
    names the result and its runs, and counts in the fingerprint.
    """

    name: str
    model: Path | DualEncoderConfig | None
    test_candidates: Path
    dev_candidates: Path
    train_candidates: Path
    rerank_depth: int = 100
    dev_depth: int = 30
    gap_queries: int = 100             # training queries re-ranked for the train-vs-test gap
    batch_size: int = 64
    runs_dir: Path | None = None       # where the model's test runs go (None: not written)


def evaluation_stage(dataset: Dataset, config: EvaluationConfig, out: str | Path, *,
                     prefix_cache: PrefixCache | None = None, rerank_memo: RerankMemo | None = None) -> Path:
    """Evaluate one model into the JSON file ``out`` (skipped when up to date); returns ``out``.

    ``out`` holds, per section (``rerank_test``, ``rerank_dev``, ``rerank_train``; ``retrieval_test`` and
    ``retrieval_dev`` for dual-encoders and BM25, ``hybrid_test`` for dual-encoders), the mean and per-query
    metrics, the hubness of the test retrieval run (``hubness_test``, see
    :mod:`dualist.evaluation.hubness`; none for a cross-encoder), and the test re-rank scores
    (``rerank_test_scores``) for the diagnostics. ``prefix_cache`` lets dual-encoders that froze the
    same bottom layers share them, and ``rerank_memo`` (:class:`~dualist.evaluation.memo.RerankMemo`)
    gives the dev re-ranking a run made before by the same weights, e.g. in the training that chose
    the checkpoint (speed settings: results equal within float rounding). With the memo, a model whose
    class, settings and weights equal those of one evaluated before with the same settings (a student
    that kept its start: the zero-shot DE) takes that evaluation under its own name, run files included.
    """
    out = Path(out)
    settings = _settings(dataset, config)
    fp = _fingerprint(config, settings)
    done = markers.is_done(out, fp)
    if done and (rerank_memo is None or config.model is None
                 or (isinstance(config.model, Path) and model_kind(config.model) != "dual_encoder")):
        return out  # (only a dual-encoder is worth loading to find its twins: a student that kept its start)
    model = _load(config.model, prefix_cache)
    same = None
    if rerank_memo is not None and model is not None:
        # a model with the weights of one evaluated before with these settings (a student that kept its
        # start is the zero-shot DE) takes that evaluation: the same figures, under its own name
        inputs = [str(p) for p in (config.test_candidates, config.dev_candidates, config.train_candidates)]
        same = f"{rerank_memo.model_key(model)}:{fingerprint_obj([*settings, inputs])}"
        if done:
            rerank_memo.evaluations.setdefault(same, (out, config.name))
            return out
    markers.clear_done(out)
    earlier = rerank_memo.evaluations.get(same) if same is not None else None
    if earlier is not None and earlier[0].exists():
        logger.info("%s has the weights of %s, evaluated before with these settings: its evaluation is reused",
                    config.name, earlier[1])
        res = {**read_json(earlier[0]), "key": config.name}
        _copy_runs(config.runs_dir, earlier[1], config.name)
    else:
        res = {"key": config.name, **(_evaluate_bm25(dataset, config) if model is None
                                     else _evaluate_model(dataset, config, model, rerank_memo))}
    write_json(out, res)
    markers.mark_done(out, fp)
    if same is not None:
        rerank_memo.evaluations.setdefault(same, (out, config.name))
    return out


def _settings(dataset: Dataset, config: EvaluationConfig) -> list[Any]:
    """What an evaluation depends on besides the model and its name."""
    base = [dataset_fingerprint(dataset, "test"), dataset_fingerprint(dataset, "dev"), config.rerank_depth,
            config.dev_depth, config.gap_queries, RERANK_METRICS, RETRIEVAL_METRICS, "hubness@10"]
    if config.model is None:
        return [*base, "retrieval_dev"]
    if not isinstance(config.model, Path) or model_kind(config.model) == "dual_encoder":
        # only dual-encoders have these sections: a teacher's evaluation stays done
        base.append({"hybrid": HYBRID, "retrieval_dev": RETRIEVAL_METRICS})
    return base


def _fingerprint(config: EvaluationConfig, settings: list[Any]) -> str:
    """The evaluation file's fingerprint: its name, the model and ``settings`` (:func:`_settings`)."""
    if config.model is None:
        return fingerprint_obj([config.name, *settings])
    model = model_fingerprint(config.model) if isinstance(config.model, Path) else config.model
    return fingerprint_obj([config.name, model, *settings])


def _copy_runs(runs_dir: Path | None, source: str, name: str) -> None:
    """The run files of evaluation ``source`` again under ``name``, with the tags the evaluation itself
    writes: the name for re-rank and retrieval runs, the fusion for the hybrid run (the scores read
    back are the floats written, so the files differ from the source's in their tags alone)."""
    from dualist.data import read_trec_run, write_trec_run

    if runs_dir is None:
        return
    for kind, tag in (("rerank", name), ("retrieval", name), ("hybrid", f"hybrid-{HYBRID['method']}")):
        src = runs_dir / f"test.{source}.{kind}.trec"
        if src.exists():
            write_trec_run(read_trec_run(src), runs_dir / f"test.{name}.{kind}.trec", tag=tag)


def _load(model: Path | DualEncoderConfig | None,
          prefix_cache: PrefixCache | None) -> DualEncoder | CrossEncoder | None:
    from dualist.models import DualEncoder
    from dualist.stages.inputs import load_model

    if model is None:
        return None
    loaded = load_model(model) if isinstance(model, Path) else DualEncoder(model)
    if isinstance(loaded, DualEncoder) and prefix_cache is not None:
        loaded.cache_prefix(prefix_cache.num_layers, prefix_cache)
    return loaded.eval()


def gap_queries(dataset: Dataset, n: int, seed: int = 0) -> dict[str, str]:
    """A fixed, seeded sample of ``n`` training queries (id -> text), sorted by id."""
    qids = sorted(dataset.queries_for("train"))
    random.Random(seed).shuffle(qids)
    return {q: dataset.queries[q] for q in sorted(qids[:n])}


def _evaluate_bm25(dataset: Dataset, config: EvaluationConfig) -> dict[str, Any]:
    from dualist.data import read_trec_run
    from dualist.evaluation import evaluate, top_k
    from dualist.evaluation.hubness import hubness

    test, dev, train = (read_trec_run(p) for p in (config.test_candidates, config.dev_candidates,
                                                     config.train_candidates))
    gap_q = gap_queries(dataset, config.gap_queries)
    train_qrels = {q: dataset.qrels_for("train")[q] for q in gap_q}
    return {
        "rerank_test": evaluate(dataset.qrels_for("test"), top_k(test, config.rerank_depth), RERANK_METRICS).to_dict(),
        "retrieval_test": evaluate(dataset.qrels_for("test"), test, RETRIEVAL_METRICS).to_dict(),
        "hubness_test": hubness(test, k=10, corpus_size=len(dataset.corpus)).to_dict(),
        "rerank_dev": evaluate(dataset.qrels_for("dev"), top_k(dev, config.dev_depth), RERANK_METRICS).to_dict(),
        "retrieval_dev": evaluate(dataset.qrels_for("dev"), dev, RETRIEVAL_METRICS).to_dict(),
        "rerank_train": evaluate(train_qrels, top_k({q: train[q] for q in gap_q if q in train}, config.rerank_depth),
                                 RERANK_METRICS).to_dict(),
    }


def _evaluate_model(dataset: Dataset, config: EvaluationConfig, model: DualEncoder | CrossEncoder,
                    memo: RerankMemo | None = None) -> dict[str, Any]:
    from dualist.data import read_trec_run, write_trec_run
    from dualist.evaluation import encode_corpus, evaluate, rerank, retrieve
    from dualist.evaluation.hubness import hubness
    from dualist.models import DualEncoder

    is_de = isinstance(model, DualEncoder)
    bs = config.batch_size
    doc_emb = encode_corpus(model, dataset, batch_size=bs) if is_de else None
    res: dict[str, Any] = {}
    test_cands = read_trec_run(config.test_candidates)
    test_run = rerank(model, dataset, dataset.queries_for("test"), test_cands,
                      depth=config.rerank_depth, batch_size=bs, doc_embeddings=doc_emb)
    if config.runs_dir is not None:
        write_trec_run(test_run, config.runs_dir / f"test.{config.name}.rerank.trec", tag=config.name)
    res["rerank_test"] = evaluate(dataset.qrels_for("test"), test_run, RERANK_METRICS).to_dict()
    res["rerank_test_scores"] = test_run
    dev_queries, dev_cands = dataset.queries_for("dev"), read_trec_run(config.dev_candidates)
    if memo is not None:
        dev_run = memo.rerank(model, dataset, dev_queries, dev_cands, depth=config.dev_depth, batch_size=bs,
                              doc_embeddings=doc_emb)
    else:
        dev_run = rerank(model, dataset, dev_queries, dev_cands, depth=config.dev_depth, batch_size=bs,
                         doc_embeddings=doc_emb)
    res["rerank_dev"] = evaluate(dataset.qrels_for("dev"), dev_run, RERANK_METRICS).to_dict()
    gap_q = gap_queries(dataset, config.gap_queries)
    train_run = rerank(model, dataset, gap_q, read_trec_run(config.train_candidates), depth=config.rerank_depth,
                       batch_size=bs, doc_embeddings=doc_emb)
    res["rerank_train"] = evaluate({q: dataset.qrels_for("train")[q] for q in gap_q}, train_run,
                                   RERANK_METRICS).to_dict()
    if is_de:
        ret = retrieve(model, dataset, dataset.queries_for("test"), k=100, batch_size=bs, doc_embeddings=doc_emb)
        if config.runs_dir is not None:
            write_trec_run(ret, config.runs_dir / f"test.{config.name}.retrieval.trec", tag=config.name)
        res["retrieval_test"] = evaluate(dataset.qrels_for("test"), ret, RETRIEVAL_METRICS).to_dict()
        res["hubness_test"] = hubness(ret, k=10, corpus_size=len(dataset.corpus)).to_dict()
        # BM25's side is the test candidate run and the dense side the retrieval run just made: no new search
        out = config.runs_dir / f"test.{config.name}.hybrid.trec" if config.runs_dir is not None else None
        hyb = run_hybrid(model, dataset, "test", bm25_run=test_cands, dense_run=ret, out=out, **HYBRID)
        res["hybrid_test"] = evaluate(dataset.qrels_for("test"), hyb, RETRIEVAL_METRICS).to_dict()
        # dev retrieval: whether a checkpoint chosen by dev re-ranking also holds in full-corpus search
        dev_ret = retrieve(model, dataset, dev_queries, k=100, batch_size=bs, doc_embeddings=doc_emb)
        res["retrieval_dev"] = evaluate(dataset.qrels_for("dev"), dev_ret, RETRIEVAL_METRICS).to_dict()
    return res


def read_evaluation(path: str | Path) -> dict[str, Any]:
    """What :func:`evaluation_stage` wrote."""
    return read_json(path)


# --------------------------------------------------------------------------- uncached helpers (CLI)
def run_rerank(model: DualEncoder | CrossEncoder, dataset: Dataset, split: str, candidates: Run, *, depth: int = 100,
               batch_size: int = 64, out: str | Path | None = None, doc_embeddings: Any = None) -> Run:
    """Re-score the top-``depth`` candidates of ``split`` with ``model``; optionally write the run."""
    from dualist.data import write_trec_run
    from dualist.evaluation import rerank

    run = rerank(model, dataset, split_queries(dataset, split), candidates, depth=depth, batch_size=batch_size,
                 doc_embeddings=doc_embeddings)
    if out is not None:
        write_trec_run(run, out, tag="rerank")
    return run


def run_retrieve(model: DualEncoder, dataset: Dataset, split: str, *, k: int = 100, index: BaseIndex | None = None,
                 batch_size: int = 64, out: str | Path | None = None, doc_embeddings: Any = None) -> Run:
    """Full-corpus retrieval for the queries of ``split``; optionally write the run."""
    from dualist.data import write_trec_run
    from dualist.evaluation import retrieve

    run = retrieve(model, dataset, split_queries(dataset, split), k=k, index=index, batch_size=batch_size,
                   doc_embeddings=doc_embeddings)
    if out is not None:
        write_trec_run(run, out, tag="retrieval")
    return run


def run_hybrid(model: DualEncoder, dataset: Dataset, split: str, *, k: int = 100, method: str = "rrf",
               depth: int = 100, index: BaseIndex | None = None, bm25_run: Run | None = None,
               dense_run: Run | None = None, batch_size: int = 64, out: str | Path | None = None,
               doc_embeddings: Any = None, **fusion: Any) -> Run:
    """Hybrid (BM25 + dense, fused) retrieval for the queries of ``split``; optionally write the run.

    Pass the BM25 candidate run and/or the dense retrieval run already computed to reuse them.
    """
    from dualist.data import write_trec_run
    from dualist.evaluation.modes import hybrid

    run = hybrid(model, dataset, split_queries(dataset, split), k=k, method=method, depth=depth, index=index,
                 bm25_run=bm25_run, dense_run=dense_run, batch_size=batch_size, doc_embeddings=doc_embeddings,
                 **fusion)
    if out is not None:
        write_trec_run(run, out, tag=f"hybrid-{method}")
    return run


def run_evaluate(qrels: dict[str, dict[str, int]], run: Run, metrics: list[str], *, out: str | Path | None = None,
                 ignore_identical_ids: bool = False, info: dict[str, Any] | None = None) -> EvalResult:
    """Evaluate ``run`` and write ``{"mean":…, "per_query":…}`` JSON when ``out`` is given."""
    from dualist.evaluation import evaluate

    res = evaluate(qrels, run, metrics, ignore_identical_ids=ignore_identical_ids)
    if out is not None:
        write_json(out, {**(info or {}), **res.to_dict()})
    return res

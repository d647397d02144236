"""Stage functions shared by the command line and ``dualist repro``.

Each stage reads its inputs from files or objects, writes its outputs to files and a ``.done.json``
marker holding the fingerprint of everything the output depends on (inputs, settings, version). A
stage whose marker matches is skipped, so an interrupted or repeated run only redoes what changed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from dualist._io import fingerprint_files, fingerprint_obj, read_json, write_json

__all__ = [
    "load_dataset",
    "dataset_fingerprint",
    "load_model",
    "model_kind",
    "clear_done",
    "is_done",
    "mark_done",
    "marker_path",
    "run_candidates",
    "run_rerank",
    "run_retrieve",
    "run_evaluate",
    "dev_eval_fn",
    "split_queries",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- resume markers
def marker_path(out: str | Path) -> Path:
    """The ``.done.json`` marker of an output file or directory."""
    out = Path(out)
    return out / ".done.json" if out.is_dir() or not out.suffix else out.with_name(out.name + ".done.json")


def is_done(out: str | Path, fingerprint: str) -> bool:
    """True when ``out`` exists and its marker carries ``fingerprint``."""
    out, m = Path(out), marker_path(out)
    if not (out.exists() and m.exists()):
        return False
    try:
        return read_json(m).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def clear_done(out: str | Path) -> None:
    """Remove the marker of ``out``: call it before a stage starts rewriting ``out``.

    Otherwise a run with other settings that replaced the outputs and was killed before writing its
    own marker would leave the old marker behind, and switching the settings back would take the
    replaced (or deleted) outputs for finished work.
    """
    marker_path(out).unlink(missing_ok=True)


def mark_done(out: str | Path, fingerprint: str, **info: Any) -> None:
    from dualist import __version__

    write_json(marker_path(out), {"fingerprint": fingerprint, "dualist_version": __version__,
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})


# --------------------------------------------------------------------------- data and models
def load_dataset(data: str | Path, *, dev_fraction: float | None = None, seed: int = 13,
                 strict: bool = False, train_qrels: str | Path | None = None) -> Any:
    """Load a BEIR dataset; when it has no ``dev`` split and ``dev_fraction`` is set, carve one.

    ``train_qrels``: a qrels file (BEIR TSV or TREC) that replaces the ``train`` split's judgements,
    e.g. NFCorpus's graded ``extra/train.graded-2-1-0.tsv`` (BEIR ships its train qrels with every
    grade set to 1). Its queries must be queries of the dataset.

    The carved dev queries are removed from ``train`` (a fixed, seeded slice, DESIGN.md §4).
    """
    from dualist.data import carve_dev, load_beir, read_qrels
    from dualist.errors import DataError

    ds = load_beir(data, strict=strict)
    if train_qrels:
        qrels = read_qrels(train_qrels)
        unknown = sorted(q for q in qrels if q not in ds.queries)
        if unknown:
            raise DataError(f"{len(unknown)} of its {len(qrels)} queries are not in the dataset's queries.jsonl "
                            f"(e.g. {unknown[:3]})", path=Path(train_qrels),
                            hint="pass the training qrels of this dataset")
        held_out = sorted(set(qrels) & {q for s in ds.splits if s != "train" for q in ds.qrels_for(s)})
        if held_out:
            raise DataError(f"{len(held_out)} of its queries belong to another split (e.g. {held_out[:3]}); "
                            "training on them would leak evaluation queries", path=Path(train_qrels),
                            hint="pass a file of training queries only")
        ds.qrels["train"] = {q: dict(docs) for q, docs in qrels.items()}
        ds.train_qrels_file = Path(train_qrels).name  # type: ignore[attr-defined]
        logger.info("training qrels from %s: %d queries, %d judged pairs", train_qrels, len(qrels),
                    sum(len(d) for d in qrels.values()))
    if dev_fraction and "dev" not in ds.splits and "train" in ds.splits:
        train, dev = carve_dev(ds.qrels_for("train"), fraction=dev_fraction, seed=seed)
        ds.qrels["train"] = train
        ds.qrels["dev"] = dev
        ds.carved_dev = {"fraction": dev_fraction, "seed": seed}  # type: ignore[attr-defined]
        logger.info("carved a dev split of %d queries from train (fraction %.2f, seed %d)",
                    len(dev), dev_fraction, seed)
    return ds


def graded_train_qrels(data: str | Path) -> Path | None:
    """A dataset's graded training qrels where it ships them beside BEIR's (``extra/train.graded*.tsv``,
    as NFCorpus's original 2/1/0 judgements), else None."""
    folder = Path(data) / "extra"
    found = sorted(folder.glob("train.graded*.tsv")) if folder.is_dir() else []
    return found[0] if found else None


def dataset_fingerprint(dataset: Any, split: str | None = None) -> str:
    """Fingerprint of the dataset files (and of the split's query ids, which carving may change)."""
    base = getattr(dataset, "_fingerprint", None)
    if base is None:
        path = getattr(dataset, "path", None)
        if path is not None and Path(path).exists():
            base = fingerprint_files([Path(path) / "corpus.jsonl", Path(path) / "queries.jsonl"])
        else:
            base = fingerprint_obj(sorted(dataset.corpus)[:1000] + sorted(dataset.queries)[:1000])
        try:
            dataset._fingerprint = base
        except AttributeError:  # frozen dataclass: just recompute next time
            pass
    if split is None:
        return base
    return fingerprint_obj([base, split, dataset.qrels_for(split)])


def model_kind(path: str | Path) -> str:
    """``"cross_encoder"`` or ``"dual_encoder"``, read from the model folder's ``dualist.json``."""
    from dualist._io import read_meta
    from dualist.errors import ConfigError

    meta = read_meta(path) or {}
    cls = str(meta.get("model_class", ""))
    if cls == "CrossEncoder":
        return "cross_encoder"
    if cls == "DualEncoder":
        return "dual_encoder"
    hint = ""
    if (Path(path) / "model" / "dualist.json").exists():
        hint = f"; the trained model is in {Path(path) / 'model'}"
    raise ConfigError(f"{path}: not a dualist model folder (no dualist.json naming a CrossEncoder or DualEncoder);"
                      f" pass the model/ folder written by 'dualist train-teacher' or 'dualist train-student'{hint}")


def load_model(path: str | Path, precision: str = "fp32", **overrides: Any) -> Any:
    """Load a saved :class:`~dualist.models.CrossEncoder` or :class:`~dualist.models.DualEncoder`.

    A ``path`` that is no folder is a backbone spec (an alias such as ``minilm-l6``, or a Hugging Face
    id): it loads as a zero-shot :class:`~dualist.models.DualEncoder` with default settings.
    ``precision`` other than ``"fp32"`` returns the model's inference copy ``quantized(precision)``
    (``int8``, ``bf16``, ``onnx-fp32``, ``onnx-int8``).
    """
    from dualist.models import CrossEncoder, DualEncoder

    if not Path(path).is_dir():
        logger.info("%s is no model folder: loading it as a zero-shot dual-encoder", path)
        model = DualEncoder(model=str(path), **overrides)
        return model if precision == "fp32" else model.quantized(precision)
    cls = CrossEncoder if model_kind(path) == "cross_encoder" else DualEncoder
    model = cls.from_pretrained(path, **overrides)
    return model if precision == "fp32" else model.quantized(precision)


def split_queries(dataset: Any, split: str) -> dict[str, str]:
    """The queries of ``split``; an error, not an empty run marked done, when it has none."""
    from dualist.errors import DataError

    queries = dataset.queries_for(split)
    if not queries:
        raise DataError(f"split {split!r} has no queries with a text in queries.jsonl",
                        path=getattr(dataset, "path", None),
                        hint="its qrels point at query ids that queries.jsonl does not hold; check both files")
    return queries


# --------------------------------------------------------------------------- stages
def run_candidates(dataset: Any, split: str, out: str | Path, *, k: int = 100, force: bool = False,
                   **bm25_params: Any) -> dict[str, dict[str, float]]:
    """BM25 top-``k`` for the queries of ``split``, written as a TREC run (skipped when up to date).

    Returns what the file holds, the same on the first call and on a resumed one: a query BM25 finds
    nothing for is absent (a TREC run has no line for it) and scores are as written.
    """
    from dualist.candidates import BM25Retriever
    from dualist.data import read_trec_run, write_trec_run

    out = Path(out)
    fp = fingerprint_obj(["bm25", dataset_fingerprint(dataset, split), k, bm25_params])
    if not force and is_done(out, fp):
        logger.info("candidates up to date: %s", out)
        return read_trec_run(out)
    clear_done(out)
    t0 = time.time()
    retriever = BM25Retriever(**bm25_params)
    retriever.index(dataset.corpus)
    run = retriever.search(split_queries(dataset, split), k=k)
    write_trec_run(run, out, tag="bm25")
    mark_done(out, fp, stage="candidates", split=split, k=k, params=bm25_params, seconds=time.time() - t0)
    return read_trec_run(out)


def run_mining(dataset: Any, split: str, out: str | Path, *, model: Any, teacher: str | Path | None = None,
               k: int = 100, margin: float = 0.0, batch_size: int = 64, force: bool = False
               ) -> dict[str, dict[str, float]]:
    """Dense hard negatives for the queries of ``split`` (:func:`dualist.candidates.mining.mine_negatives`),
    written as a TREC run usable wherever BM25 candidates are (skipped when up to date).

    ``model`` is a dual-encoder folder, a model spec (e.g. ``minilm-l6`` for the zero-shot start) or a
    :class:`~dualist.models.DualEncoderConfig`; ``teacher`` an optional cross-encoder folder that removes
    likely unjudged positives.
    """
    from dualist.candidates.mining import mine_negatives
    from dualist.data import read_trec_run, write_trec_run
    from dualist.models import CrossEncoder, DualEncoder

    out = Path(out)
    parts = [Path(p) for p in (model, teacher) if isinstance(p, (str, Path)) and p and Path(p).is_dir()]
    fp = fingerprint_obj(["mine", dataset_fingerprint(dataset, split), model, str(teacher), k, margin,
                          fingerprint_files(sorted(f for p in parts for f in p.rglob("*.safetensors")))])
    if not force and is_done(out, fp):
        logger.info("mined candidates up to date: %s", out)
        return read_trec_run(out)
    clear_done(out)
    t0 = time.time()
    if isinstance(model, (str, Path)):
        de = DualEncoder.from_pretrained(model) if Path(model).is_dir() else DualEncoder(model=str(model))
    else:
        de = DualEncoder(model)
    ce = CrossEncoder.from_pretrained(teacher) if teacher else None
    run, report = mine_negatives(de, dataset, split, k=k, teacher=ce, margin=margin, batch_size=batch_size)
    write_trec_run(run, out, tag="mined")
    mark_done(out, fp, stage="mine", split=split, k=k, margin=margin, report=dataclasses.asdict(report),
              seconds=time.time() - t0)
    return read_trec_run(out)


def run_rerank(model: Any, dataset: Any, split: str, candidates: dict[str, dict[str, float]], *,
               depth: int = 100, batch_size: int = 64, out: str | Path | None = None,
               doc_embeddings: Any = None) -> dict[str, dict[str, float]]:
    """Re-score the top-``depth`` candidates of ``split`` with ``model``; optionally write the run."""
    from dualist.data import write_trec_run
    from dualist.evaluation.modes import rerank

    run = rerank(model, dataset, split_queries(dataset, split), candidates, depth=depth, batch_size=batch_size,
                 doc_embeddings=doc_embeddings)
    if out is not None:
        write_trec_run(run, out, tag="rerank")
    return run


def run_retrieve(model: Any, dataset: Any, split: str, *, k: int = 100, index: Any = None,
                 batch_size: int = 64, out: str | Path | None = None,
                 doc_embeddings: Any = None) -> dict[str, dict[str, float]]:
    """Full-corpus retrieval for the queries of ``split``; optionally write the run."""
    from dualist.data import write_trec_run
    from dualist.evaluation.modes import retrieve

    run = retrieve(model, dataset, split_queries(dataset, split), k=k, index=index, batch_size=batch_size,
                   doc_embeddings=doc_embeddings)
    if out is not None:
        write_trec_run(run, out, tag="retrieval")
    return run


def run_hybrid(model: Any, dataset: Any, split: str, *, k: int = 100, method: str = "rrf", depth: int = 100,
               index: Any = None, bm25_run: dict[str, dict[str, float]] | None = None,
               dense_run: dict[str, dict[str, float]] | None = None, batch_size: int = 64,
               out: str | Path | None = None, doc_embeddings: Any = None, **fusion: Any) -> dict[str, dict[str, float]]:
    """Hybrid (BM25 + dense, fused) retrieval for the queries of ``split``; optionally write the run.

    Pass the BM25 candidate run and/or the dense retrieval run already computed to reuse them.
    """
    from dualist.data import write_trec_run
    from dualist.evaluation.modes import hybrid

    run = hybrid(model, dataset, dataset.queries_for(split), k=k, method=method, depth=depth, index=index,
                 bm25_run=bm25_run, dense_run=dense_run, batch_size=batch_size, doc_embeddings=doc_embeddings,
                 **fusion)
    if out is not None:
        write_trec_run(run, out, tag=f"hybrid-{method}")
    return run


def run_evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: list[str], *,
                 out: str | Path | None = None, ignore_identical_ids: bool = False,
                 info: dict[str, Any] | None = None) -> Any:
    """Evaluate ``run`` and write ``{"mean":…, "per_query":…}`` JSON when ``out`` is given."""
    from dualist.evaluation import evaluate

    res = evaluate(qrels, run, metrics, ignore_identical_ids=ignore_identical_ids)
    if out is not None:
        write_json(out, {**(info or {}), **res.to_dict()})
    return res


def dev_eval_fn(dataset: Any, split: str, candidates: dict[str, dict[str, float]], *, depth: int = 100,
                metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"), batch_size: int = 64,
                query_ids: Collection[str] | None = None) -> Callable[[Any], dict[str, float]]:
    """An ``eval_fn(model) -> {metric: value}`` that re-ranks ``split``'s candidates (for best-checkpoint choice).

    ``query_ids`` restricts it to those queries of ``split`` (e.g. a fixed sample of a large dev set).
    """
    from dualist.evaluation import evaluate
    from dualist.evaluation.modes import rerank

    queries = dataset.queries_for(split)
    qrels = dataset.qrels_for(split)
    if query_ids is not None:
        from dualist.errors import ConfigError

        unknown = sorted(set(query_ids) - set(queries))
        if unknown:
            raise ConfigError(f"dev_eval_fn: {len(unknown)} query id(s) are not judged queries of split {split!r}, "
                              f"e.g. {unknown[:3]}")
        queries = {q: queries[q] for q in sorted(query_ids)}
        qrels = {q: qrels[q] for q in queries}

    def eval_fn(model: Any) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            run = rerank(model, dataset, queries, candidates, depth=depth, batch_size=batch_size,
                         show_progress=False)
        finally:
            model.train(was_training)
        return dict(evaluate(qrels, run, list(metrics)).mean)

    return eval_fn

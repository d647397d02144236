"""The ``dualist`` command line: thin wrappers over the library, one subcommand per stage.

Every subcommand takes ``--config FILE.yaml`` plus flags (flags win), explains itself in ``--help``
and writes its resolved config next to its outputs (``config.yaml`` in an output folder, or
``<file>.config.yaml`` beside an output file), ready to be passed back with ``--config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from dualist.config import add_config_args, config_from_args, load_yaml, opt, to_dict
from dualist.errors import ConfigError, DualistError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("dualist")

METRICS_DEFAULT = ["ndcg@10", "mrr@10", "recall@100"]

Precision = Literal["fp32", "int8", "bf16", "onnx-fp32", "onnx-int8"]
PRECISION_HELP = ("inference precision of the model(s): fp32 (torch), int8 or bf16 (torch copies), onnx-fp32 "
                  "(ONNX Runtime, the fp32 scores) or onnx-int8 (ONNX Runtime, int8 weights); the onnx ones need "
                  "pip install 'dualist[onnx]'; check ranking quality before relying on a reduced one")


# --------------------------------------------------------------------------- argument dataclasses
@dataclass
class DataArgs:
    data: str = opt("", "BEIR folder path, or a BEIR dataset name (downloaded into the cache when online)")
    strict: bool = opt(False, "treat qrels rows that point at unknown queries/documents as errors")
    dev_fraction: float = opt(0.0, "carve this fraction of train queries as dev when the data has no dev "
                                    "split (0 = never)")


@dataclass
class CandidatesArgs:
    split: str = opt("test", "which qrels split's queries to retrieve for")
    k: int = opt(100, "candidates per query")
    k1: float = opt(0.9, "BM25 k1 (Pyserini default)")
    b: float = opt(0.4, "BM25 b (Pyserini default)")
    out: str = opt("", "output TREC run file, e.g. runs/test.bm25.trec")


@dataclass
class TeacherArgs:
    split: str = opt("train", "training split")
    candidates: str = opt("", "TREC run of BM25 candidates for the training queries (negatives come from it)")
    dev_split: str = opt("", "split to evaluate on each epoch and pick the best checkpoint (empty = none)")
    dev_candidates: str = opt("", "TREC run for the dev split (re-ranked for model selection)")
    dev_depth: int = opt(100, "re-rank depth for dev evaluation")
    out: str = opt("", "output folder, e.g. models/teacher")
    resume: bool = opt(False, "continue from the last checkpoint in --out")


@dataclass
class ScoreArgs:
    teacher: str = opt("", "teacher model folder (from 'dualist train-teacher')")
    split: str = opt("train", "split whose candidates to score")
    candidates: str = opt("", "TREC run of candidates to score")
    depth: int = opt(100, "score each query's top-DEPTH candidates (plus its positives)")
    max_positives: int = opt(0, "score at most this many judged positives per query, best grade first (0 = all); "
                                "train the student with the same --max-positives (or --positives first for 1)")
    batch_size: int = opt(64, "pairs per forward pass")
    out: str = opt("", "output Parquet file, e.g. scores/train.teacher.parquet")


@dataclass
class StudentArgs:
    split: str = opt("train", "training split")
    candidates: str = opt("", "TREC run of BM25 candidates for the training queries (negatives come from it)")
    loss: Literal["onehot", "mse", "margin_mse", "kl", "rankdistil", "m3se"] = opt(
        "m3se", "training loss: one-hot softmax CE, or distillation from the teacher scores")
    loss_args: list[str] = opt([], "loss keyword arguments as key=value pairs, e.g. temperature=2")
    teacher_scores: str = opt("", "teacher score cache (from 'dualist score-teacher'); needed by distillation losses")
    dev_split: str = opt("", "split to evaluate on each epoch and pick the best checkpoint (empty = none)")
    dev_candidates: str = opt("", "TREC run for the dev split (re-ranked for model selection)")
    dev_depth: int = opt(100, "re-rank depth for dev evaluation")
    out: str = opt("", "output folder, e.g. models/student-m3se")
    resume: bool = opt(False, "continue from the last checkpoint in --out")


@dataclass
class IndexArgs:
    model: str = opt("", "dual-encoder folder (from 'dualist train-student') or a model spec")
    backend: Literal["exact", "faiss", "milvus"] = opt("exact", "exact inner product (numpy), a FAISS index, or Milvus")
    factory: str = opt("Flat", "FAISS index factory string when --backend faiss (Flat, HNSW32, IVF256,PQ32...)")
    batch_size: int = opt(64, "documents per forward pass")
    precision: Precision = opt("fp32", PRECISION_HELP)
    out: str = opt("", "output index folder")
    milvus_uri: str = opt("", "--backend milvus: a server URI (http://host:19530); empty = milvus-lite in the "
                              "index folder")
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT"] = opt("HNSW", "--backend milvus: FLAT (exact), HNSW or IVF_FLAT")
    quantization: Literal["none", "int8", "binary"] = opt("none", "--backend milvus: vector quantization, "
                                                                  "re-scored exactly (binary needs a server)")
    collection: str = opt("dualist", "--backend milvus: collection name")


@dataclass
class SearchArgs:
    model: str = opt("", "dual-encoder folder used to embed the queries")
    index: str = opt("", "index folder from 'dualist index' (empty = embed the corpus now, exact search)")
    split: str = opt("test", "split whose queries to search")
    k: int = opt(100, "results per query")
    rerank_with: str = opt("", "cross-encoder folder to re-rank the top results with (two-stage search)")
    rerank_depth: int = opt(100, "how many retrieved results the cross-encoder re-scores")
    batch_size: int = opt(64, "texts per forward pass")
    precision: Precision = opt("fp32", PRECISION_HELP)
    out: str = opt("", "output TREC run file")
    mode: Literal["dense", "bm25", "hybrid"] = opt("dense", "dense index search, BM25, or both fused (hybrid)")
    fusion: Literal["rrf", "sum"] = opt("rrf", "hybrid fusion: reciprocal rank fusion or min-max normalized score "
                                               "sum")
    fusion_depth: int = opt(100, "hybrid: hits taken from BM25 and from the dense search before fusion")


@dataclass
class RerankArgs:
    model: str = opt("", "cross-encoder or dual-encoder folder that re-scores the candidates")
    split: str = opt("test", "split whose queries to re-rank")
    candidates: str = opt("", "TREC run to re-rank (e.g. BM25 top-100)")
    depth: int = opt(100, "re-rank each query's top-DEPTH candidates")
    precision: Precision = opt("fp32", PRECISION_HELP)
    batch_size: int = opt(64, "texts per forward pass")
    out: str = opt("", "output TREC run file")


@dataclass
class EvaluateArgs:
    run: str = opt("", "TREC run file to evaluate")
    qrels: str = opt("", "qrels file (TREC or BEIR tsv); or give --data and --split")
    split: str = opt("test", "qrels split of --data to evaluate against")
    metrics: list[str] = opt(METRICS_DEFAULT, "comma-separated metrics, e.g. ndcg@10,mrr@10,recall@100,map")
    ignore_identical_ids: bool = opt(False, "drop results whose doc id equals the query id (ArguAna, Quora)")
    out: str = opt("", "write mean and per-query values as JSON here (empty = print only)")


@dataclass
class PushArgs:
    model: str = opt("", "saved model folder to upload (its README.md model card is refreshed first)")
    repo_id: str = opt("", "Hub repository, e.g. my-org/scifact-m3se-student")
    private: bool = opt(False, "create the repository as private")
    token: str = opt("", "Hub token (empty = the one huggingface_hub finds: HF_TOKEN or the saved login)")


@dataclass
class CardArgs:
    model: str = opt("", "saved model folder whose README.md model card to (re)write")
    results: str = opt("", "results JSON from 'dualist evaluate --out' to record (its mean figures)")
    split: str = opt("test", "which split the --results figures are on")
    name: str = opt("", "title of the card (empty = keep)")


# --------------------------------------------------------------------------- helpers
def _need(value: str, flag: str, what: str) -> str:
    if not value:
        raise ConfigError(f"{flag} is required: {what}")
    return value


def _write_resolved(out: str | Path, sections: dict[str, Any]) -> Path:
    """Write the resolved config beside an output (folder: config.yaml; file: <file>.config.yaml)."""
    out = Path(out)
    path = out / "config.yaml" if (out.is_dir() or not out.suffix) else out.with_name(out.name + ".config.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in sections.items()}
    flat: dict[str, Any] = {}
    for key, value in clean.items():
        if key in ("args", "data"):
            flat.update(value)
        else:
            flat[key] = value
    from dualist import __version__

    flat["dualist_version"] = __version__
    path.write_text(yaml.safe_dump(flat, sort_keys=False), encoding="utf-8")
    return path


def _dataset(d: DataArgs) -> Any:
    from dualist.stages import load_dataset

    return load_dataset(_need(d.data, "--data", "a BEIR folder or dataset name"), strict=d.strict,
                        dev_fraction=d.dev_fraction or None)


def _read_run(path: str, flag: str) -> dict[str, dict[str, float]]:
    from dualist.data import read_trec_run

    return read_trec_run(_need(path, flag, "a TREC run file"))


def _parse_loss_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--loss-args: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


# --------------------------------------------------------------------------- subcommands
def cmd_candidates(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.stages import run_candidates

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(CandidatesArgs, ns, cfg)
    out = _need(a.out, "--out", "the TREC run file to write")
    ds = _dataset(d)
    run = run_candidates(ds, a.split, out, k=a.k, k1=a.k1, b=a.b)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(run)} queries, top-{a.k} BM25")


def cmd_train_teacher(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.models import CrossEncoderConfig
    from dualist.stages import dev_eval_fn
    from dualist.training import TrainConfig, train_teacher

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(TeacherArgs, ns, cfg)
    m = config_from_args(CrossEncoderConfig, ns, cfg, section="model")
    t = config_from_args(TrainConfig, ns, cfg, section="train")
    out = Path(_need(a.out, "--out", "the folder to write the teacher to"))
    ds = _dataset(d)
    cands = _read_run(a.candidates, "--candidates")
    eval_fn = None
    if a.dev_split:
        eval_fn = dev_eval_fn(ds, a.dev_split, _read_run(a.dev_candidates, "--dev-candidates"),
                              depth=a.dev_depth)
    out.mkdir(parents=True, exist_ok=True)
    _write_resolved(out, {"data": d, "args": a, "model": m, "train": t})
    path = train_teacher(ds, a.split, cands, m, t, out, eval_fn=eval_fn, resume=a.resume)
    print(f"teacher saved to {path}")


def cmd_score_teacher(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.models import CrossEncoder
    from dualist.training import score_candidates

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(ScoreArgs, ns, cfg)
    out = _need(a.out, "--out", "the Parquet file to write")
    ds = _dataset(d)
    teacher = CrossEncoder.from_pretrained(_need(a.teacher, "--teacher", "the teacher model folder"))
    scores = score_candidates(teacher, ds, a.split, _read_run(a.candidates, "--candidates"), out,
                              depth=a.depth, batch_size=a.batch_size, teacher_path=a.teacher,
                              max_positives=a.max_positives or None)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(scores)} teacher scores")


def cmd_train_student(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.models import DualEncoderConfig
    from dualist.stages import dev_eval_fn
    from dualist.training import TeacherScores, TrainConfig, train_student

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(StudentArgs, ns, cfg)
    m = config_from_args(DualEncoderConfig, ns, cfg, section="model")
    t = config_from_args(TrainConfig, ns, cfg, section="train")
    out = Path(_need(a.out, "--out", "the folder to write the student to"))
    ds = _dataset(d)
    cands = _read_run(a.candidates, "--candidates")
    teacher_scores = TeacherScores.load(a.teacher_scores) if a.teacher_scores else None
    eval_fn = None
    if a.dev_split:
        eval_fn = dev_eval_fn(ds, a.dev_split, _read_run(a.dev_candidates, "--dev-candidates"),
                              depth=a.dev_depth)
    out.mkdir(parents=True, exist_ok=True)
    _write_resolved(out, {"data": d, "args": a, "model": m, "train": t})
    path = train_student(ds, a.split, cands, m, t, out, loss=a.loss, loss_kwargs=_parse_loss_args(a.loss_args),
                         teacher_scores=teacher_scores, eval_fn=eval_fn, resume=a.resume)
    print(f"student ({a.loss}) saved to {path}")


def cmd_index(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.evaluation.modes import _search_space, encode_corpus, index_corpus
    from dualist.index import ExactIndexWriter, FaissIndex
    from dualist.stages import load_model

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(IndexArgs, ns, cfg)
    out = _need(a.out, "--out", "the index folder to write")
    ds = _dataset(d)
    model = load_model(_need(a.model, "--model", "a dual-encoder folder"), precision=a.precision)
    if a.backend == "exact":  # streamed to disk slice by slice: memory stays bounded on any corpus
        with ExactIndexWriter(out) as writer:
            index_corpus(model, ds, writer, batch_size=a.batch_size)
        ids = ds.corpus
    elif a.backend == "milvus":
        from dualist.index import MilvusIndex

        index = MilvusIndex(a.milvus_uri or None, collection=a.collection, index_type=a.milvus_index,
                            quantization=a.quantization)
        index_corpus(model, ds, index, batch_size=a.batch_size)
        index.save(out)
        ids = ds.corpus
    else:
        ids, emb = encode_corpus(model, ds, batch_size=a.batch_size)
        index = FaissIndex(factory=a.factory)
        index.add(ids, _search_space(model, emb))
        index.save(out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"indexed {len(ids)} documents into {out} ({a.backend})")


def cmd_search(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import write_trec_run
    from dualist.index import load_index
    from dualist.stages import load_model, run_hybrid, run_rerank, run_retrieve

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(SearchArgs, ns, cfg)
    out = _need(a.out, "--out", "the TREC run file to write")
    ds = _dataset(d)
    if a.mode == "bm25":
        from dualist.candidates import BM25Retriever

        run = BM25Retriever().index(ds.corpus).search(ds.queries_for(a.split), k=a.k)
    else:
        model = load_model(_need(a.model, "--model", "a dual-encoder folder"), precision=a.precision)
        index = load_index(a.index) if a.index else None
        if a.mode == "hybrid":
            run = run_hybrid(model, ds, a.split, k=a.k, method=a.fusion, depth=a.fusion_depth, index=index,
                             batch_size=a.batch_size)
        else:
            run = run_retrieve(model, ds, a.split, k=a.k, index=index, batch_size=a.batch_size)
    if a.rerank_with:
        ce = load_model(a.rerank_with, precision=a.precision)
        run = run_rerank(ce, ds, a.split, run, depth=a.rerank_depth, batch_size=a.batch_size)
    write_trec_run(run, out, tag="dualist")
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(run)} queries")


def cmd_rerank(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.stages import load_model, run_rerank

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(RerankArgs, ns, cfg)
    out = _need(a.out, "--out", "the TREC run file to write")
    ds = _dataset(d)
    model = load_model(_need(a.model, "--model", "a model folder"), precision=a.precision)
    run = run_rerank(model, ds, a.split, _read_run(a.candidates, "--candidates"), depth=a.depth,
                     batch_size=a.batch_size, out=out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(run)} queries re-ranked to depth {a.depth}")


def cmd_evaluate(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import read_qrels
    from dualist.stages import run_evaluate

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(EvaluateArgs, ns, cfg)
    if a.qrels:
        qrels = read_qrels(a.qrels)
    else:
        qrels = _dataset(d).qrels_for(a.split)
    run = _read_run(a.run, "--run")
    res = run_evaluate(qrels, run, a.metrics, out=a.out or None, ignore_identical_ids=a.ignore_identical_ids,
                       info={"run": a.run, "qrels": a.qrels or f"{d.data}:{a.split}"})
    print(res.to_table() if hasattr(res, "to_table") else res)
    if a.out:
        _write_resolved(a.out, {"data": d, "args": a})


def cmd_serve(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.serving import ServeConfig, serve

    serve(config_from_args(ServeConfig, ns, cfg))


def cmd_push(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.models.hub import push_to_hub

    a = config_from_args(PushArgs, ns, cfg)
    url = push_to_hub(_need(a.model, "--model", "the model folder to upload"),
                      _need(a.repo_id, "--repo-id", "the Hub repository (user-or-org/name)"),
                      private=a.private, token=a.token or None)
    print(f"pushed {a.model} to {url}")


def cmd_card(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist._io import read_json
    from dualist.models.card import write_model_card

    a = config_from_args(CardArgs, ns, cfg)
    folder = _need(a.model, "--model", "the model folder")
    results = None
    if a.results:
        mean = read_json(a.results).get("mean")
        if not isinstance(mean, dict):
            raise ConfigError(f"{a.results}: no 'mean' figures (write it with 'dualist evaluate --out')")
        results = {a.split: mean}
    path = write_model_card(folder, results=results, name=a.name or None)
    print(f"wrote {path}")


def cmd_repro(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.repro import ReproArgs, run_repro

    a = config_from_args(ReproArgs, ns, cfg)
    run_repro(a)


# --------------------------------------------------------------------------- parser
def _subcommands() -> list[tuple[str, Any, str, list[tuple[type, str | None, str]]]]:
    """(name, handler, help, [(config class, yaml section, title)]) for each subcommand."""
    from dualist.models import CrossEncoderConfig, DualEncoderConfig
    from dualist.repro import ReproArgs
    from dualist.serving import ServeConfig
    from dualist.training import TrainConfig

    return [
        ("candidates", cmd_candidates, "BM25 top-K candidates for a split, written as a TREC run",
         [(DataArgs, None, "data"), (CandidatesArgs, None, "candidates")]),
        ("train-teacher", cmd_train_teacher,
         "train the cross-encoder teacher (listwise softmax CE over positive + BM25 negatives)",
         [(DataArgs, None, "data"), (TeacherArgs, None, "teacher"), (CrossEncoderConfig, "model", "model"),
          (TrainConfig, "train", "training")]),
        ("score-teacher", cmd_score_teacher, "score candidate pairs with the teacher into a cached Parquet file",
         [(DataArgs, None, "data"), (ScoreArgs, None, "scoring")]),
        ("train-student", cmd_train_student,
         "train a dual-encoder student, one-hot or distilled from teacher scores (--loss)",
         [(DataArgs, None, "data"), (StudentArgs, None, "student"), (DualEncoderConfig, "model", "model"),
          (TrainConfig, "train", "training")]),
        ("index", cmd_index, "embed the corpus with a dual-encoder and save a search index",
         [(DataArgs, None, "data"), (IndexArgs, None, "index")]),
        ("search", cmd_search, "retrieve from the full corpus with a dual-encoder (optionally re-rank with a "
                               "cross-encoder)",
         [(DataArgs, None, "data"), (SearchArgs, None, "search")]),
        ("rerank", cmd_rerank, "re-score a candidate run (e.g. BM25 top-100) with any dualist model",
         [(DataArgs, None, "data"), (RerankArgs, None, "rerank")]),
        ("evaluate", cmd_evaluate, "evaluate a TREC run (trec_eval semantics: nDCG, MRR, recall, MAP...)",
         [(DataArgs, None, "data"), (EvaluateArgs, None, "evaluation")]),
        ("serve", cmd_serve, "serve a dual-encoder and an index over HTTP (FastAPI + uvicorn): search, rerank, "
                             "encode, health, metrics; needs pip install 'dualist[serve]'",
         [(ServeConfig, None, "serving")]),
        ("card", cmd_card, "(re)write a model folder's README.md model card, optionally adding evaluation figures",
         [(CardArgs, None, "model card")]),
        ("push", cmd_push, "upload a model folder (with its model card) to the Hugging Face Hub",
         [(PushArgs, None, "push")]),
        ("repro", cmd_repro, "reproduce the paper's comparison on a BEIR dataset, with diagnostics and a report",
         [(ReproArgs, None, "reproduction")]),
    ]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    from dualist import __version__

    parser = argparse.ArgumentParser(
        prog="dualist",
        description="Train dual-encoder retrievers that rank like cross-encoders "
                    "(Menon et al., ICML 2022). Each subcommand is one stage; see 'dualist SUBCOMMAND --help'.",
        epilog="Typical flow: candidates -> train-teacher -> score-teacher -> train-student -> "
               "rerank/search -> evaluate; or all of it with 'dualist repro --dataset scifact'.")
    parser.add_argument("--version", action="version", version=f"dualist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    handlers = {}
    for name, handler, help_text, groups in _subcommands():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter
                           if False else argparse.HelpFormatter)
        p.add_argument("--config", metavar="FILE.yaml", help="YAML file of settings; flags given here win")
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
        seen: set[str] = set()
        for cls, _section, title in groups:
            names = {f.name for f in dataclasses.fields(cls)}
            add_config_args(p, cls, title=title, exclude=tuple(names & seen))
            seen |= names
        handlers[name] = handler
    return parser, handlers


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "matplotlib", "bm25s"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if quiet:
        os.environ["DUALIST_NO_PROGRESS"] = "1"


def main(argv: list[str] | None = None) -> int:
    # Applications configure: keep transformers' per-load progress bars and init reports out of the
    # way (our own bars and logging say what happens); a user's explicit setting wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser, handlers = build_parser()
    ns = parser.parse_args(argv)
    if not ns.command:
        parser.print_help()
        return 2
    _setup_logging(ns.verbose, ns.quiet)
    t0 = time.time()
    try:
        cfg = load_yaml(ns.config) if ns.config else {}
        handlers[ns.command](ns, cfg)
    except DualistError as exc:
        print(f"dualist {ns.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dualist {ns.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    logger.info("%s finished in %.1fs", ns.command, time.time() - t0)
    return 0

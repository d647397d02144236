"""The ``dualist`` command line: thin wrappers over the library, one subcommand per stage.

Every subcommand takes ``--config FILE.yaml`` plus flags (flags win), explains itself in ``--help``
and writes its resolved config next to its outputs (``config.yaml`` in an output folder, or
``<file>.config.yaml`` beside an output file), ready to be passed back with ``--config``.

The handlers only parse, check what enters, build a stage config and call :mod:`dualist.stages` (or
the library for the uncached commands: index, search, rerank, evaluate). Most of this module's length
is the argument dataclasses, one per subcommand, whose fields are the ``--help`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from dualist import _checks as check
from dualist.config import add_config_args, config_from_args, load_yaml, opt, to_dict
from dualist.errors import ConfigError, DataError, DualistError
from dualist.losses import LossName
from dualist.models.precision import Precision, resolve_precision

if TYPE_CHECKING:
    from dualist.data import Dataset

__all__ = ["main", "build_parser"]

logger = logging.getLogger("dualist")

A = TypeVar("A")
T = TypeVar("T", bound="TrainingArgs")

# Subcommands that keep finished work when interrupted and continue it when rerun.
RESUMABLE = ("train-teacher", "score-teacher", "train-student", "repro")
METRICS_DEFAULT = ["ndcg@10", "mrr@10", "recall@100"]

RESUME_HELP = ("continue the run in --out from its last checkpoint when there is one (the default; a run made "
               "with other settings is refused, never deleted); --no-resume starts over and deletes that run's "
               "checkpoints and models")
PRECISION_HELP = ("inference precision of the model(s): fp32 (torch, as trained); int8 (the fastest int8 copy "
                  "installed: onnx-int8 where the onnx extra is, torch-int8 otherwise; the log says which); "
                  "torch-int8 or bf16 (torch copies; bf16 is fast only on CPUs with native bf16); onnx-fp32 "
                  "(ONNX Runtime, the fp32 scores) or onnx-int8 (ONNX Runtime, int8 weights); the onnx ones need "
                  "pip install 'dualist[onnx]'; check ranking quality before relying on a reduced one")


SHARD_HELP = ("i/n: do only shard i of n of the work (0-based, e.g. 0/2 and 1/2 on two machines sharing the output "
              "folder); the run that finds every shard done merges them into the output a single run writes. "
              "Under torchrun each process takes its shard by itself")


# --------------------------------------------------------------------------- argument dataclasses
@dataclass
class DataArgs:
    data: str = opt("", "BEIR folder path, or a BEIR dataset name (downloaded into the cache when online)")
    strict: bool = opt(False, "treat qrels rows that point at unknown queries/documents as errors")
    dev_fraction: float = opt(0.0, "carve this fraction of train queries as dev when the data has no dev "
                                    "split (0 = never)")
    train_qrels: str = opt("", "qrels file (BEIR TSV or TREC) to use as the training split's judgements instead of "
                               "qrels/train.tsv, e.g. NFCorpus's graded extra/train.graded-2-1-0.tsv")

    def __post_init__(self) -> None:
        check.fraction(self.dev_fraction, "dev_fraction")


@dataclass
class CandidatesArgs:
    split: str = opt("test", "which qrels split's queries to retrieve for")
    k: int = opt(100, "candidates per query")
    k1: float = opt(0.9, "BM25 k1 (Pyserini default)")
    b: float = opt(0.4, "BM25 b (Pyserini default)")
    out: str = opt("", "output TREC run file, e.g. runs/test.bm25.trec")

    def __post_init__(self) -> None:
        check.at_least(self, 1, "k")
        check.at_least(self, 0, "k1")
        check.fraction(self.b, "b", closed=True)


@dataclass
class MineArgs:
    split: str = opt("train", "split whose queries to mine negatives for")
    model: str = opt("minilm-l6", "dual-encoder that retrieves from the whole corpus: a student folder or a model spec "
                                  "(default: the zero-shot start)")
    teacher: str = opt("", "cross-encoder folder that drops mined documents it scores like a judged positive "
                           "(empty = no denoising)")
    k: int = opt(100, "mined candidates kept per query (judged documents never count)")
    margin: float = opt(0.0, "drop a mined document when teacher(q, d) >= the query's lowest positive score - MARGIN")
    batch_size: int = opt(64, "texts per forward pass")
    out: str = opt("", "output TREC run file, e.g. runs/train.mined.trec (use it as --candidates)")


@dataclass
class TrainingArgs:
    """What the teacher and student subcommands share: the training split, its candidates, model selection."""

    split: str = opt("train", "training split")
    candidates: str = opt("", "TREC run of BM25 candidates for the training queries (negatives come from it)")
    dev_split: str = opt("", "split to evaluate on each epoch and pick the best checkpoint (empty = none)")
    dev_candidates: str = opt("", "TREC run for the dev split (re-ranked for model selection)")
    dev_depth: int = opt(100, "re-rank depth for dev evaluation")
    out: str = opt("", "output folder, e.g. models/teacher or models/student-m3se")
    resume: bool = opt(True, RESUME_HELP)

    def __post_init__(self) -> None:
        check.at_least(self, 1, "dev_depth")


@dataclass
class TeacherArgs(TrainingArgs):
    pass


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
    force: bool = opt(False, "replace a --out cache made from another teacher, candidate run, depth or split "
                             "(without it, such a cache is an error)", fingerprint=False)
    shard: str = opt("", SHARD_HELP)

    def __post_init__(self) -> None:
        check.at_least(self, 1, "depth", "batch_size")
        check.at_least(self, 0, "max_positives")


@dataclass
class BM25WeightArgs:
    teacher: str = opt("", "teacher model folder (from 'dualist train-teacher')")
    split: str = opt("dev", "split whose candidates the teacher re-ranks to choose the weight (never test)")
    candidates: str = opt("", "TREC run of that split's candidates, e.g. runs/dev.bm25.trec")
    depth: int = opt(30, "re-rank each query's top-DEPTH candidates")
    batch_size: int = opt(64, "pairs per forward pass")
    out: str = opt("", "output JSON file, e.g. scores/bm25_weight.json")

    def __post_init__(self) -> None:
        check.at_least(self, 1, "depth", "batch_size")


@dataclass
class StudentArgs(TrainingArgs):
    loss: LossName = opt(
        "m3se", "training loss: one-hot softmax CE, or distillation from the teacher scores")
    loss_args: list[str] = opt([], "loss keyword arguments as key=value pairs, e.g. temperature=2")
    teacher_scores: str = opt("", "teacher score cache (from 'dualist score-teacher'); needed by distillation losses")


@dataclass
class IndexArgs:
    model: str = opt("", "dual-encoder folder (from 'dualist train-student') or a model spec")
    backend: Literal["exact", "faiss", "milvus"] = opt("exact", "exact inner product (numpy), a FAISS index, or Milvus")
    factory: str = opt("Flat", "FAISS index factory string when --backend faiss (Flat, HNSW32, IVF256,PQ32...)")
    batch_size: int = opt(64, "documents per forward pass")
    precision: Precision = opt("fp32", PRECISION_HELP)
    nprobe: int = opt(0, "IVF lists visited per query, saved as the index's default (0 = FAISS's default, 1)")
    ef_search: int = opt(0, "HNSW search beam width, saved as the index's default (0 = FAISS's default, 16)")
    out: str = opt("", "output index folder")
    milvus_uri: str = opt("", "--backend milvus: a server URI (http://host:19530); empty = milvus-lite in the "
                              "index folder; a server's token comes from DUALIST_MILVUS_TOKEN")
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT"] = opt("HNSW", "--backend milvus: FLAT (exact), HNSW or IVF_FLAT")
    quantization: Literal["none", "int8", "binary"] = opt("none", "--backend milvus: vector quantization, "
                                                                  "re-scored exactly (binary needs a server)")
    collection: str = opt("dualist", "--backend milvus: collection name")
    shard: str = opt("", SHARD_HELP)

    def __post_init__(self) -> None:
        check.at_least(self, 1, "batch_size")
        check.at_least(self, 0, "nprobe", "ef_search")


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
    nprobe: int = opt(0, "FAISS IVF lists visited per query; raise it when results come back short "
                         "(0 = the index's own setting)")
    ef_search: int = opt(0, "FAISS HNSW search beam width (0 = the index's own setting)")
    out: str = opt("", "output TREC run file")
    mode: Literal["dense", "bm25", "hybrid"] = opt("dense", "dense index search, BM25, or both fused (hybrid)")
    fusion: Literal["rrf", "sum"] = opt("rrf", "hybrid fusion: reciprocal rank fusion or min-max normalized score "
                                               "sum")
    fusion_depth: int = opt(100, "hybrid: hits taken from BM25 and from the dense search before fusion")

    def __post_init__(self) -> None:
        check.at_least(self, 1, "k", "rerank_depth", "batch_size")
        check.at_least(self, 0, "nprobe", "ef_search")


@dataclass
class RerankArgs:
    model: str = opt("", "cross-encoder or dual-encoder folder that re-scores the candidates")
    split: str = opt("test", "split whose queries to re-rank")
    candidates: str = opt("", "TREC run to re-rank (e.g. BM25 top-100)")
    depth: int = opt(100, "re-rank each query's top-DEPTH candidates")
    precision: Precision = opt("fp32", PRECISION_HELP)
    batch_size: int = opt(64, "texts per forward pass")
    out: str = opt("", "output TREC run file")

    def __post_init__(self) -> None:
        check.at_least(self, 1, "depth", "batch_size")


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


def _dataset(d: DataArgs) -> Dataset:
    from dualist.stages import load_dataset, resolve_dataset

    data = resolve_dataset(_need(d.data, "--data", "a BEIR folder or dataset name"))  # $DUALIST_DATA_ROOT/<name>
    train_qrels = check.input_file(d.train_qrels, "--train-qrels", "a qrels file") if d.train_qrels else None
    return load_dataset(data, strict=d.strict, dev_fraction=d.dev_fraction or None, train_qrels=train_qrels)


def _read_run(path: str, flag: str, dataset: Any = None, split: str | None = None) -> dict[str, dict[str, float]]:
    """A TREC run; with ``dataset`` and ``split``, one that holds some of that split's queries."""
    from dualist.data import read_trec_run

    run = read_trec_run(check.input_file(_need(path, flag, "a TREC run file"), flag, "a TREC run file"))
    if not run:
        raise DataError(f"{flag}: the run holds no results", path=path, hint="is it the right file?")
    if dataset is not None and split is not None and not set(run) & set(dataset.queries_for(split)):
        raise DataError(f"{flag}: none of the run's {len(run)} queries is a query of split {split!r}", path=path,
                        hint=f"was it made for another split or dataset? ('dualist candidates --split {split}')")
    return run


def _parse_loss_args(items: list[str], loss: str) -> dict[str, Any]:
    """``key=value`` pairs, checked against the loss's keyword arguments now, before any work."""
    from dualist.losses import build_loss

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--loss-args: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    try:
        build_loss(loss, **out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--loss-args: {exc}") from None
    return out


def _teacher_scores(path: str) -> Any:
    from dualist.training import TeacherScores

    what = "a teacher score cache (Parquet) written by 'dualist score-teacher'"
    check.input_file(path, "--teacher-scores", what)
    try:
        return TeacherScores.load(path)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"--teacher-scores: not a Parquet file of teacher scores ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})", path=path,
                        hint=f"pass {what}") from None


def _model(spec: str, flag: str, what: str, precision: str = "fp32") -> Any:
    """A dualist model folder, or a backbone spec (alias, hub id) as a zero-shot dual-encoder."""
    from dualist.stages import load_model

    spec = _need(spec, flag, what)
    p = Path(spec)
    if p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        check.input_dir(spec, flag, what)
    return load_model(spec, precision=precision)


def _probes(ds: Any, split: str, cands: dict[str, dict[str, float]], t: Any) -> list[Any]:
    """The score-evolution probe of ``probes.jsonl`` (at the start, every --probe-every steps, at the end):
    one training query's scores of its positives and hardest BM25 negatives, as 'dualist repro' records."""
    from dualist.diagnostics import pick_probe_query, select_probe_docs
    from dualist.stages import training_probe

    qrels = ds.qrels_for(split)
    try:
        qid = pick_probe_query(qrels, cands)
    except DualistError:
        logger.info("no training query suits a score-evolution probe; probes.jsonl is not written")
        return []
    docs, labels = select_probe_docs(qid, qrels, cands, seed=t.seed)
    return [training_probe(ds, qid, list(docs), list(labels))]


def _search_params(index: Any, nprobe: int, ef_search: int) -> None:
    """--nprobe / --ef-search on a loaded index (0 keeps what the index was saved with)."""
    if not (nprobe or ef_search):
        return
    if getattr(index, "type_name", "") != "faiss":
        raise ConfigError("--nprobe and --ef-search apply to FAISS indexes only; this --index is exact")
    index.set_search_params(nprobe=nprobe or None, ef_search=ef_search or None)


@contextlib.contextmanager
def _resolved_config_kept(out: Path, sections: dict[str, Any]) -> Any:
    """Write the resolved config beside a trainer's outputs once it ran (finished or interrupted), never
    when it refused to start, so a refused rerun leaves the earlier run's config.yaml in place."""
    try:
        yield
    except DualistError:
        raise
    except BaseException:
        if out.is_dir():
            _write_resolved(out, sections)
        raise
    _write_resolved(out, sections)


# --------------------------------------------------------------------------- subcommands
def _command_inputs(ns: argparse.Namespace, cfg: dict, args_cls: type[A], what: str, *, folder: bool = False,
                    checks: Any = None) -> tuple[DataArgs, A, Path, Dataset]:
    """The opening the subcommands share: their data and own arguments, their checked --out (a file, or
    with ``folder`` a folder), then ``checks(args)`` (what can fail before any loading), then the dataset."""
    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(args_cls, ns, cfg)
    out = _need(a.out, "--out", what)  # type: ignore[attr-defined]
    out_path = check.output_dir(out) if folder else check.output_file(out)
    if checks is not None:
        checks(a)
    return d, a, out_path, _dataset(d)


def _training_inputs(ns: argparse.Namespace, cfg: dict, args_cls: type[T], model_cls: type, what: str, *,
                     checks: Any = None) -> tuple[DataArgs, T, dict[str, Any], Path, Dataset, dict[str, Any]]:
    """What the teacher and student subcommands share: their arguments, the fields of their stage config
    (model, training, split, candidates, model selection, resume), their --out, the dataset, and the
    sections of their resolved config (written once the trainer ran, see :func:`_resolved_config_kept`).
    The candidate runs are checked here: they exist and hold queries of their split."""
    from dualist.training import TrainConfig

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(args_cls, ns, cfg)
    m = config_from_args(model_cls, ns, cfg, section="model")
    t = config_from_args(TrainConfig, ns, cfg, section="train")
    out = check.output_dir(_need(a.out, "--out", what))
    if checks is not None:
        checks(a)
    ds = _dataset(d)
    _read_run(a.candidates, "--candidates", ds, a.split)
    dev = None
    if a.dev_split:
        _read_run(a.dev_candidates, "--dev-candidates", ds, a.dev_split)
        dev = Path(a.dev_candidates)
    fields = {"model": m, "train": t, "split": a.split, "dev_split": a.dev_split, "dev_candidates": dev,
              "candidates": Path(a.candidates), "dev_depth": a.dev_depth, "resume": a.resume}
    return d, a, fields, out, ds, {"data": d, "args": a, "model": m, "train": t}


def cmd_candidates(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import read_trec_run
    from dualist.stages import CandidatesConfig, candidates_stage

    d, a, out, ds = _command_inputs(ns, cfg, CandidatesArgs, "the TREC run file to write")
    candidates_stage(ds, CandidatesConfig(split=a.split, k=a.k, k1=a.k1, b=a.b), out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(read_trec_run(out))} queries, top-{a.k} BM25")


def cmd_mine(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import read_trec_run
    from dualist.stages import MineConfig, mine_stage

    def checks(a: MineArgs) -> None:
        if a.k < 1:
            raise ConfigError(f"--k must be >= 1, got {a.k}")

    d, a, out, ds = _command_inputs(ns, cfg, MineArgs, "the TREC run file to write", checks=checks)
    mine_stage(ds, MineConfig(model=a.model, split=a.split, teacher=Path(a.teacher) if a.teacher else None, k=a.k,
                              margin=a.margin, batch_size=a.batch_size), out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(read_trec_run(out))} queries, dense top-{a.k} without judged documents"
          + (", denoised by the teacher" if a.teacher else ""))


def cmd_train_teacher(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.models import CrossEncoderConfig
    from dualist.stages import TeacherConfig, teacher_stage

    _, a, fields, out, ds, resolved = _training_inputs(ns, cfg, TeacherArgs, CrossEncoderConfig,
                                                       "the folder to write the teacher to")
    probes = _probes(ds, a.split, _read_run(a.candidates, "--candidates"), fields["train"])
    with _resolved_config_kept(out, resolved):
        path = teacher_stage(ds, TeacherConfig(**fields), out, probes=probes)
    print(f"teacher saved to {path}")


def _teacher_folder(value: str) -> str:
    """The checked ``--teacher`` of the commands that read a trained teacher."""
    what = "the teacher model folder (models/teacher/model from 'dualist train-teacher')"
    return check.input_dir(_need(value, "--teacher", what), "--teacher", what)


def cmd_score_teacher(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.distributed import parse_shard, world
    from dualist.stages import ScoresConfig, scores_stage
    from dualist.training import TeacherScores

    d, a, out, ds = _command_inputs(ns, cfg, ScoreArgs, "the Parquet file to write")
    _read_run(a.candidates, "--candidates", ds, a.split)
    teacher = _teacher_folder(a.teacher)
    config = ScoresConfig(teacher=Path(teacher), candidates=Path(a.candidates), split=a.split, depth=a.depth,
                          max_positives=a.max_positives or None, batch_size=a.batch_size, force=a.force,
                          shard=parse_shard(a.shard) if a.shard else None)
    done = scores_stage(ds, config, out)
    if done is None or not world().is_main:
        print(f"scored shard {a.shard or world().rank} of {out}" + ("; other shards remain" if done is None else ""))
        return
    _write_resolved(out, {"data": d, "args": a})
    scores = TeacherScores.load(out)
    print(f"wrote {out}: {len(scores)} teacher scores")
    from dualist.diagnostics import label_agreement  # how far the targets a student learns agree with its labels

    print(label_agreement(scores.as_dict(), ds.qrels_for(a.split)).summary())


def cmd_bm25_weight(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist._io import read_json
    from dualist.stages import BM25WeightConfig, bm25_weight_stage

    def checks(a: BM25WeightArgs) -> None:
        if a.split == "test":
            raise ConfigError("--split test would choose the weight on the split results are reported on; use dev "
                              "(a dataset without one: --dev-fraction 0.1 carves it from train)")

    d, a, out, ds = _command_inputs(ns, cfg, BM25WeightArgs, "the JSON file to write", checks=checks)
    _read_run(a.candidates, "--candidates", ds, a.split)
    teacher = _teacher_folder(a.teacher)
    bm25_weight_stage(ds, BM25WeightConfig(teacher=Path(teacher), candidates=Path(a.candidates), split=a.split,
                                           depth=a.depth, batch_size=a.batch_size), out)
    _write_resolved(out, {"data": d, "args": a})
    result = read_json(out)
    for w, v in result["dev"].items():
        print(f"  BM25 weight {float(w):<4g} {result['split']} {result['metric']} {v:.4f}")
    print(f"wrote {out}: BM25 weight {result['weight']:g}; pass it on with "
          f"'dualist train-student --teacher-bm25-weight {result['weight']:g}'")


def cmd_train_student(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.losses import requires_teacher
    from dualist.models import DualEncoderConfig
    from dualist.stages import StudentConfig, student_stage

    loss_kwargs: dict[str, Any] = {}

    def checks(a: StudentArgs) -> None:
        loss_kwargs.update(_parse_loss_args(a.loss_args, a.loss))
        if requires_teacher(a.loss) and not a.teacher_scores:
            raise ConfigError(f"--loss {a.loss} distills the teacher's scores: pass --teacher-scores (a cache from "
                              "'dualist score-teacher'), or train without a teacher with --loss onehot")

    _, a, fields, out, ds, resolved = _training_inputs(ns, cfg, StudentArgs, DualEncoderConfig,
                                                       "the folder to write the student to", checks=checks)
    if a.teacher_scores:
        _teacher_scores(a.teacher_scores)  # a readable cache, checked before any training
    config = StudentConfig(**fields, loss=a.loss, loss_kwargs=loss_kwargs,
                           teacher_scores=Path(a.teacher_scores) if a.teacher_scores else None)
    probes = _probes(ds, a.split, _read_run(a.candidates, "--candidates"), fields["train"])
    with _resolved_config_kept(out, resolved):
        path = student_stage(ds, config, out, probes=probes)
    print(f"student ({a.loss}) saved to {path}")


def cmd_index(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist._io import fingerprint_files
    from dualist.distributed import parse_shard, world
    from dualist.evaluation.modes import search_space, encode_corpus, index_corpus
    from dualist.index import ExactIndex, ExactIndexWriter, FaissIndex
    from dualist.index.shards import encode_sharded, remove_shards
    from dualist.stages import dataset_fingerprint

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(IndexArgs, ns, cfg)
    out = check.output_dir(_need(a.out, "--out", "the index folder to write"))
    if a.backend == "exact" and (a.nprobe or a.ef_search):
        raise ConfigError("--nprobe and --ef-search apply to --backend faiss only")
    if a.backend != "milvus" and (a.milvus_uri or a.quantization != "none"):
        raise ConfigError("--milvus-uri and --quantization apply to --backend milvus only")
    # made before encoding, so a missing faiss or pymilvus fails at once, not after the corpus
    if a.backend == "milvus":
        from dualist.index import MilvusIndex

        index = MilvusIndex(a.milvus_uri or None, collection=a.collection, index_type=a.milvus_index,
                            quantization=a.quantization)
    else:
        index = ExactIndex() if a.backend == "exact" else FaissIndex(factory=a.factory, nprobe=a.nprobe or None,
                                                                      ef_search=a.ef_search or None)
    ds = _dataset(d)
    model = _model(a.model, "--model", "a dual-encoder folder or a model name (minilm-l6)", a.precision)
    if a.shard or world().size > 1:  # one slice of the corpus per process or --shard, merged by the last
        if a.backend == "milvus":
            raise ConfigError("--backend milvus indexes from one process: drop --shard / torchrun, or index "
                              "exact/faiss shards")
        model_inputs = fingerprint_files([a.model]) if Path(a.model).exists() else a.model
        encoded = encode_sharded(model, ds, out, shard=parse_shard(a.shard) if a.shard else None,
                                 inputs=[model_inputs, dataset_fingerprint(ds), resolve_precision(a.precision)], batch_size=a.batch_size)
        if encoded is None:  # another shard (or rank 0) writes the index
            print(f"embedded shard {a.shard or world().rank} of {out}")
            return
        ids, emb = encoded
        index.add(ids, search_space(model, emb))
        index.save(out)
        remove_shards(out)
    elif a.backend == "exact":  # streamed to disk slice by slice: memory stays bounded on any corpus
        with ExactIndexWriter(out) as writer:
            index_corpus(model, ds, writer, batch_size=a.batch_size)
        ids = ds.corpus
    elif a.backend == "milvus":  # inserted slice by slice into the collection
        index_corpus(model, ds, index, batch_size=a.batch_size)
        index.save(out)
        ids = ds.corpus
    else:  # FAISS trains (IVF, PQ) on the whole corpus at its first add
        ids, emb = encode_corpus(model, ds, batch_size=a.batch_size)
        index.add(ids, search_space(model, emb))
        index.save(out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"indexed {len(ids)} documents into {out} ({a.backend})")


def cmd_search(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import write_trec_run
    from dualist.index import load_index
    from dualist.stages import run_hybrid, run_rerank, run_retrieve

    def checks(a: SearchArgs) -> None:
        if a.index:
            check.input_dir(a.index, "--index", "an index folder from 'dualist index'")
        elif a.nprobe or a.ef_search:
            raise ConfigError("--nprobe and --ef-search set how a FAISS --index is searched; give --index")

    d, a, out, ds = _command_inputs(ns, cfg, SearchArgs, "the TREC run file to write", checks=checks)
    index = None
    if a.index:
        index = load_index(a.index)
        _search_params(index, a.nprobe, a.ef_search)
    if a.mode == "bm25":
        from dualist.candidates import BM25Retriever

        run = BM25Retriever().index(ds.corpus).search(ds.queries_for(a.split), k=a.k)
    else:
        model = _model(a.model, "--model", "a dual-encoder folder or a model name (minilm-l6)", a.precision)
        if a.mode == "hybrid":
            run = run_hybrid(model, ds, a.split, k=a.k, method=a.fusion, depth=a.fusion_depth, index=index,
                             batch_size=a.batch_size)
        else:
            run = run_retrieve(model, ds, a.split, k=a.k, index=index, batch_size=a.batch_size)
    if a.rerank_with:
        ce = _model(a.rerank_with, "--rerank-with", "a cross-encoder folder", a.precision)
        run = run_rerank(ce, ds, a.split, run, depth=a.rerank_depth, batch_size=a.batch_size)
    write_trec_run(run, out, tag="dualist")
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(run)} queries")


def cmd_rerank(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.stages import run_rerank

    d, a, out, ds = _command_inputs(ns, cfg, RerankArgs, "the TREC run file to write")
    cands = _read_run(a.candidates, "--candidates", ds, a.split)
    model = _model(a.model, "--model", "a model folder or a model name (minilm-l6)", a.precision)
    run = run_rerank(model, ds, a.split, cands, depth=a.depth, batch_size=a.batch_size, out=out)
    _write_resolved(out, {"data": d, "args": a})
    print(f"wrote {out}: {len(run)} queries re-ranked to depth {a.depth}")


def cmd_evaluate(ns: argparse.Namespace, cfg: dict) -> None:
    from dualist.data import read_qrels
    from dualist.stages import run_evaluate

    from dualist.evaluation.metrics import parse_metric

    d = config_from_args(DataArgs, ns, cfg)
    a = config_from_args(EvaluateArgs, ns, cfg)
    for name in a.metrics:
        parse_metric(name)
    if a.out:
        check.output_file(a.out)
    if a.qrels:
        qrels = read_qrels(check.input_file(a.qrels, "--qrels", "a qrels file (TREC or BEIR tsv)"))
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
    from dualist.repro import ReproArgs, check_matrix, print_table, record_entry, run_repro

    a = config_from_args(ReproArgs, ns, cfg)
    if a.table:
        print(print_table(a.matrix or None))
    elif a.check:
        check_matrix(a)
    else:
        results = run_repro(a)
        if a.record:
            print(f"recorded the figures in {record_entry(results, a.matrix or None, dataset=a.dataset)}")


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
        ("mine", cmd_mine, "hard negatives: a dual-encoder's top-K over the whole corpus, judged documents and "
                           "(with --teacher) likely unjudged positives removed, written as a candidate TREC run",
         [(DataArgs, None, "data"), (MineArgs, None, "mining")]),
        ("train-teacher", cmd_train_teacher,
         "train the cross-encoder teacher (listwise softmax CE over positive + BM25 negatives)",
         [(DataArgs, None, "data"), (TeacherArgs, None, "teacher"), (CrossEncoderConfig, "model", "model"),
          (TrainConfig, "train", "training")]),
        ("score-teacher", cmd_score_teacher, "score candidate pairs with the teacher into a cached Parquet file",
         [(DataArgs, None, "data"), (ScoreArgs, None, "scoring")]),
        ("bm25-weight", cmd_bm25_weight,
         "choose on dev how much BM25 joins the teacher's scores as distillation targets (the teacher + BM25 "
         "ensemble; 0 when BM25 does not help), for train-student --teacher-bm25-weight",
         [(DataArgs, None, "data"), (BM25WeightArgs, None, "BM25 weight")]),
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


def _process_group_up() -> bool:
    if "torch.distributed" not in sys.modules:  # nothing imported it, so nothing started one
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def main(argv: list[str] | None = None) -> int:
    # Applications configure: keep transformers' per-load progress bars and init reports out of the
    # way (our own bars and logging say what happens); a user's explicit setting wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser, handlers = build_parser()
    groups = {name: groups for name, _, _, groups in _subcommands()}
    ns = parser.parse_args(argv)
    if not ns.command:
        parser.print_help()
        return 2
    _setup_logging(ns.verbose, ns.quiet)
    t0 = time.time()
    grouped = _process_group_up()
    try:
        cfg = load_yaml(ns.config) if ns.config else {}
        if cfg:
            check.check_config_keys(cfg, [(cls, section) for cls, section, _ in groups[ns.command]],
                                    where=f"--config {ns.config}")
        handlers[ns.command](ns, cfg)
    except DualistError as exc:
        print(f"dualist {ns.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dualist {ns.command}: interrupted; "
              + ("rerun the same command to resume" if ns.command in RESUMABLE else "rerun the command to start it again"),
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dualist evaluate ... | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    finally:
        if not grouped and _process_group_up():  # torchrun: the command joined the other processes
            import torch.distributed as dist

            dist.destroy_process_group()
    logger.info("%s finished in %.1fs", ns.command, time.time() - t0)
    return 0

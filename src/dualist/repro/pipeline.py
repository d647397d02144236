"""``dualist repro``: the paper's comparison on a BEIR dataset, end to end, with its diagnostics.

Stages (each skipped when its output is up to date, so an interrupted run continues where it
stopped and a changed setting recomputes only what depends on it):

1. BM25 candidates for train / dev / test (a seeded dev slice is carved from train when missing);
2. the cross-attention teacher (listwise softmax CE), best checkpoint chosen on dev;
3. teacher scores for the training candidates (cached, resumable);
4. dual-encoder students from the same starting weights and budget: one-hot and each distillation loss;
5. evaluation of BM25, the zero-shot starting DE, the teacher and every student: re-rank mode
   (BM25 top-K; MRR@10, nDCG@10) and, for dual-encoders, retrieval mode (nDCG@10, Recall@100);
6. diagnostics (train-vs-test gap, score distributions, normalized margins, score evolution);
7. the report: ``report/index.html``, ``report/report.md`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from dualist._io import fingerprint_obj, read_json, write_json
from dualist.config import opt
from dualist.repro.profiles import Profile, get_profile

__all__ = ["ReproArgs", "run_repro", "LOSS_LABELS", "ALL_LOSSES"]

logger = logging.getLogger(__name__)

ALL_LOSSES = ["onehot", "mse", "margin_mse", "kl", "rankdistil", "m3se"]
LOSS_LABELS = {
    "onehot": "DE one-hot",
    "mse": "DE + MSE",
    "margin_mse": "DE + Margin-MSE",
    "kl": "DE + softmax CE (KL)",
    "rankdistil": "DE + RankDistil",
    "m3se": "DE + M3SE",
}
BM25_LABEL, ZERO_SHOT_LABEL, TEACHER_LABEL = "BM25", "DE zero-shot", "CA teacher"
HUB_DISTINCT, HUB_MAX = "top-10 distinct docs", "top-10 max occurrence"  # retrieval hubness (evaluation.hubness)
RERANK_METRICS = ["mrr@10", "ndcg@10"]
RETRIEVAL_METRICS = ["ndcg@10", "mrr@10", "recall@100"]


@dataclass
class ReproArgs:
    dataset: str = opt("scifact", "BEIR folder path, or a dataset name (looked up under --data-root, then "
                                  "downloaded into the cache when online)")
    data_root: str = opt("", "folder holding BEIR datasets by name (default: $DUALIST_DATA_ROOT, if set)")
    profile: Literal["quick", "full"] = opt("quick", "budget: quick (every row and plot at smoke scale; "
                                                     "15 min on SciFact on 2 CPU cores) or full (67 min on SciFact, "
                                                     "about 70 on NFCorpus)")
    out: str = opt("", "work folder (default: repro/<dataset>-<profile>)")
    seeds: int = opt(1, "train every student with this many seeds; >1 reports mean ± std and a paired "
                        "significance test against the one-hot DE")
    losses: list[str] = opt(ALL_LOSSES, "student losses to train (comma-separated)")
    scale: float = opt(1.0, "multiply every step budget (e.g. 4 on a GPU)")
    model: str = opt("minilm-l6", "backbone of teacher and students: alias, Hugging Face id or local path")
    override: list[str] = opt([], "override profile fields as key=value pairs, comma-separated, e.g. "
                                  "teacher_steps=400,student_layers=6 (see dualist.repro.profiles)")
    device: str = opt("auto", "cpu, cuda, or auto")
    seed: int = opt(13, "base seed (dev carving, teacher; student seed i uses seed + i)")
    check: bool = opt(False, "rerun the conditions of the reproduction matrix and print OK/FAIL per row")
    matrix: str = opt("", "reproduction matrix YAML for --check / --table (default: the packaged one)")
    table: bool = opt(False, "print the README results table generated from the matrix, then exit")
    record: bool = opt(False, "after the run, write its figures into the matrix (--matrix, default: the packaged "
                              "one), replacing the entry of the same dataset and profile; the run's minutes go in "
                              "wall_minutes, or in resumed_run_minutes when it continued an earlier work folder")


# --------------------------------------------------------------------------- helpers
class _Timer:
    def __init__(self, resumed: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.resumed = resumed  # the work folder held outputs of an earlier run: not a fresh run's wall time

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("== stage: %s", name)
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - t0
            logger.info("== stage %s took %.1fs", name, time.time() - t0)


def resolve_dataset(name: str, data_root: str = "") -> str:
    """A dataset argument as a path: an existing folder, else ``<data_root>/<name>``, else the name."""
    if Path(name).is_dir():
        return name
    root = data_root or os.environ.get("DUALIST_DATA_ROOT", "")
    if root and (Path(root) / name).is_dir():
        return str(Path(root) / name)
    return name


def _profile(args: ReproArgs) -> Profile:
    from dualist.config import config_from_dict
    from dualist.errors import ConfigError

    prof = get_profile(args.profile)
    if args.override:
        values = dataclasses.asdict(prof)
        for item in args.override:
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in values or key.strip() == "name":
                raise ConfigError(f"--override: expected key=value with key among "
                                  f"{[k for k in values if k != 'name']}, got {item!r}")
            values[key.strip()] = yaml.safe_load(value)
        prof = config_from_dict(Profile, values, where="--override")
    return prof.scaled(args.scale)


def _student_config(prof: Profile, model: str) -> Any:
    from dualist.models import DualEncoderConfig

    return DualEncoderConfig(model=model, num_layers=prof.student_layers, pooling="mean", normalize=True,
                             similarity="dot", temperature=0.05, query_max_length=prof.query_max_length,
                             doc_max_length=prof.doc_max_length)


def _teacher_config(prof: Profile, model: str) -> Any:
    from dualist.models import CrossEncoderConfig

    return CrossEncoderConfig(model=model, num_layers=prof.teacher_layers, max_length=prof.teacher_max_length,
                              pooling=prof.teacher_pooling)


def _probe_fn(dataset: Any, qid: str, doc_ids: list[str], labels: list[int]):
    """A training probe: the model's scores for one fixed query's 5 positives and 5 negatives."""
    from dualist.diagnostics.evolution import make_probe

    return make_probe(dataset, qid, doc_ids, labels)


# --------------------------------------------------------------------------- the pipeline
def run_repro(args: ReproArgs) -> dict[str, Any]:
    """Run (or resume) the reproduction and write the report; returns the results dict."""
    if args.table or args.check:
        from dualist.repro.matrix import check_matrix, print_table

        if args.table:
            print(print_table(args.matrix or None))
            return {}
        return check_matrix(args)

    from dualist import __version__
    from dualist.stages import load_dataset, run_candidates

    unknown = sorted(set(args.losses) - set(ALL_LOSSES))
    if unknown:
        from dualist.errors import ConfigError

        raise ConfigError(f"--losses: unknown {unknown}; choose from {ALL_LOSSES}")
    prof = _profile(args)
    data_path = resolve_dataset(args.dataset, args.data_root)
    from dualist.stages import graded_train_qrels

    graded = graded_train_qrels(data_path) if prof.train_qrels == "auto" and Path(data_path).is_dir() else None
    ds = load_dataset(data_path, dev_fraction=0.1, seed=args.seed, train_qrels=graded)
    min_grade = prof.graded_min_grade if graded is not None else 1
    if graded is not None:
        logger.info("training on the graded qrels %s; positives need grade >= %d", graded.name, min_grade)
    name = Path(data_path).name if Path(data_path).is_dir() else args.dataset
    work = Path(args.out or f"repro/{name}-{prof.name}")
    resumed = work.is_dir() and any(work.iterdir())
    work.mkdir(parents=True, exist_ok=True)
    timer = _Timer(resumed)
    t_start = time.time()
    logger.info("reproduction on %s (%s profile) in %s", name, prof.name, work)

    # 1. candidates
    runs: dict[str, dict[str, dict[str, float]]] = {}
    with timer.stage("bm25 candidates"):
        for split in ("train", "dev", "test"):
            runs[split] = run_candidates(ds, split, work / "runs" / f"{split}.bm25.trec", k=prof.candidates_k)

    samples = _Samples.of(ds, runs, prof, args.seed, min_grade=min_grade)
    # a fixed training query for the score-evolution probes (5 positives, 5 hard negatives), one the
    # students train on
    from dualist.diagnostics import pick_probe_query, select_probe_docs

    probe_qid = pick_probe_query(ds.qrels_for("train"), samples.train_run)
    probe_docs, probe_labels = select_probe_docs(probe_qid, ds.qrels_for("train"), runs["train"])
    probe = _probe_fn(ds, probe_qid, probe_docs, probe_labels)

    # 2. teacher
    with timer.stage("teacher training"):
        teacher_dir = _train_teacher(ds, runs, prof, args, work, probe, samples)
    if prof.mined_negatives:
        with timer.stage("mining"):
            samples = _mined(ds, samples, prof, args, work, teacher_dir)
    fold_dirs = None
    if prof.teacher_folds >= 2:
        with timer.stage("fold teachers"):
            fold_dirs = _train_fold_teachers(ds, runs, prof, args, work, probe, samples)
    # 3. teacher scores
    with timer.stage("teacher scoring"):
        teacher_scores = _score_teacher(ds, samples, prof, work, teacher_dir, fold_dirs)
    # 4. students
    students: dict[tuple[str, int], Path] = {}
    with timer.stage("student training"):
        for s in range(args.seeds):
            for loss in args.losses:
                students[(loss, s)] = _train_student(ds, runs, prof, args, work, loss, args.seed + s,
                                                     teacher_scores if loss != "onehot" else None, probe, samples)
    # 5. evaluation
    with timer.stage("evaluation"):
        evals = _evaluate_all(ds, runs, prof, work, teacher_dir, students, args.model)
    # 6-7. diagnostics and report
    with timer.stage("diagnostics and report"):
        results = _summarize(ds, name, prof, args, work, runs, evals, students, teacher_dir, timer,
                             t_start, __version__, samples)
    logger.info("reproduction finished in %.1f min; report: %s", (time.time() - t_start) / 60,
                work / "report" / "index.html")
    if args.record:
        from dualist.repro.matrix import record_entry

        path = record_entry(results, args.matrix or None, dataset=args.dataset)
        print(f"recorded the figures in {path}")
    return results


@dataclass
class _Samples:
    """The fixed, seeded query samples that the profile's caps select.

    ``train_ids`` / ``select_ids`` are None, and ``max_positives`` 0, where the cap removes nothing;
    they then add nothing to any fingerprint either, so a dataset under the caps keeps the outputs it
    had before the caps existed.
    """

    train_run: dict[str, dict[str, float]]  # candidates of the training queries scored and trained on
    train_ids: list[str] | None
    select_ids: list[str] | None
    max_positives: int  # positives per training query, scored and trained on (0: all)
    min_grade: int = 1  # the grade a training positive needs (2 on graded NFCorpus qrels)
    seed: int = 13  # the base seed the samples (and the teacher folds) are drawn with
    mined: bool = False  # train_run holds mined candidates, not BM25's

    @classmethod
    def of(cls, ds: Any, runs: dict, prof: Profile, seed: int, *, min_grade: int = 1) -> "_Samples":
        from dualist.data import ranked_positives

        qrels = ds.qrels_for("train")
        usable = [q for q in runs["train"] if q in ds.queries_for("train")
                  and (min_grade <= 1 or ranked_positives(qrels[q], ds.corpus, min_grade=min_grade))]
        train_ids = _sample(usable, prof.score_queries, seed)
        if train_ids is None and len(usable) < len(runs["train"]):
            train_ids = sorted(usable)
        select_ids = _sample([q for q in runs["dev"] if q in ds.queries_for("dev")], prof.select_queries, seed)
        train_run = runs["train"] if train_ids is None else {q: runs["train"][q] for q in train_ids}
        cap = prof.score_positives
        binds = cap > 0 and any(len(ranked_positives(qrels.get(q, {}), ds.corpus, min_grade=min_grade)) > cap
                                for q in train_run)
        max_positives = cap if binds else 0
        if train_ids is not None or select_ids is not None or max_positives:
            logger.info("capped samples: %s training queries scored and trained on, %s positives each, %s dev "
                        "queries for checkpoint selection", len(train_ids) if train_ids else "all",
                        f"at most {max_positives}" if max_positives else "all",
                        len(select_ids) if select_ids else "all")
        return cls(train_run, train_ids, select_ids, max_positives, min_grade, seed)

    def fingerprint_parts(self, *, train: bool) -> list[Any]:
        parts: list[Any] = []
        if train and self.train_ids is not None:
            parts.append({"train_queries": self.train_ids})
        if self.min_grade > 1:
            parts.append({"min_positive_grade": self.min_grade})
        if train and self.mined:
            parts.append({"mined_candidates": fingerprint_obj({q: sorted(d) for q, d in sorted(self.train_run.items())})})
        if self.select_ids is not None:
            parts.append({"select_queries": self.select_ids})
        return parts


def _sample(ids: list[str], n: int, seed: int) -> list[str] | None:
    """A fixed, seeded sample of ``n`` of ``ids`` (sorted), or None when ``n`` removes nothing (or is 0)."""
    import random

    from dualist.data import stable_sample

    if n <= 0 or n >= len(ids):
        return None
    return stable_sample(random.Random(seed), sorted(ids), n)


def _finished_model(out: Path, fp: str) -> Path | None:
    """The model a finished training stage saved, or None when the stage must run.

    The marker alone is not enough: a work folder left by an older dualist can carry a valid marker
    beside a model that a killed rerun deleted.
    """
    from dualist.stages import is_done, marker_path

    if not is_done(out, fp):
        return None
    path = out / read_json(marker_path(out))["model_path"]  # relative to out (older markers: absolute)
    if not path.is_dir():
        logger.warning("%s is marked finished but its model %s is missing; training again", out, path)
        return None
    return path


def _start(out: Path, fp: str) -> bool:
    """Note that a stage starts with fingerprint ``fp``; True when a partial run with the same one can resume.

    A partial run made with other settings is not resumed (its checkpoints would be refused): the
    stage starts over, which the trainer does by replacing the old outputs.
    """
    from dualist.stages import clear_done

    clear_done(out)
    started = out / ".started.json"
    same = (out / "checkpoints").exists() and started.exists() and read_json(started).get("fingerprint") == fp
    write_json(started, {"fingerprint": fp})
    return same


def _train_teacher(ds: Any, runs: dict, prof: Profile, args: ReproArgs, work: Path, probe: Any,
                   samples: _Samples, name: str = "teacher") -> Path:
    from dualist.stages import dataset_fingerprint, dev_eval_fn, mark_done
    from dualist.training import TrainConfig, train_teacher

    out = work / "models" / name
    mcfg = _teacher_config(prof, args.model)
    tcfg = TrainConfig(max_steps=prof.teacher_steps, batch_size=prof.teacher_batch_size, lr=prof.teacher_lr,
                       num_negatives=prof.teacher_negatives, negatives="range", neg_rank_min=1,
                       neg_rank_max=prof.candidates_k, seed=args.seed, device=args.device,
                       probe_every=prof.probe_every, select_metric="ndcg@10", eval_every=prof.teacher_eval_every,
                       max_positives=samples.max_positives, lean_activations=prof.lean_activations,
                       min_positive_grade=samples.min_grade, eval_start=prof.eval_start)
    fp = fingerprint_obj(["teacher", dataset_fingerprint(ds, "train"), dataset_fingerprint(ds, "dev"),
                          mcfg, tcfg, prof.dev_depth, *samples.fingerprint_parts(train=False)])
    done = _finished_model(out, fp)
    if done is not None:
        logger.info("teacher up to date: %s", out)
        return done
    resume = _start(out, fp)
    eval_fn = dev_eval_fn(ds, "dev", runs["dev"], depth=prof.dev_depth, batch_size=prof.batch_size_infer,
                          query_ids=samples.select_ids)
    path = train_teacher(ds, "train", runs["train"], mcfg, tcfg, out, eval_fn=eval_fn, probes=[probe],
                         resume=resume)
    mark_done(out, fp, stage="teacher", model_path=os.path.relpath(path, out))
    return Path(path)


def _score_teacher(ds: Any, samples: _Samples, prof: Profile, work: Path, teacher_dir: Path,
                   fold_dirs: list[Path] | None = None) -> Any:
    from dualist.models import CrossEncoder
    from dualist.training import score_candidates

    teacher: Any = CrossEncoder.from_pretrained(teacher_dir)
    if fold_dirs:  # cross-fitted: each training query scored by the fold-teacher that never saw it
        from dualist.training.folds import FoldTeachers

        teacher = FoldTeachers([CrossEncoder.from_pretrained(d) for d in fold_dirs], _folds(ds, prof, samples.seed),
                               ds.queries)
    return score_candidates(teacher, ds, "train", samples.train_run, work / "scores" / "train.teacher.parquet",
                            depth=prof.score_depth, batch_size=prof.batch_size_infer,
                            max_positives=samples.max_positives or None)


def _train_student(ds: Any, runs: dict, prof: Profile, args: ReproArgs, work: Path, loss: str, seed: int,
                   teacher_scores: Any, probe: Any, samples: _Samples) -> Path:
    from dualist.losses import SCORE_MATCHING
    from dualist.stages import dataset_fingerprint, dev_eval_fn, mark_done
    from dualist.training import TrainConfig, train_student

    out = work / "models" / f"student-{loss}-s{seed}"
    mcfg = _student_config(prof, args.model)
    # Negatives come from the ranks the teacher scored, so every distillation loss sees teacher scores
    # for all of its candidates; the one-hot student draws from the same ranks for a fair comparison.
    tcfg = TrainConfig(max_steps=prof.student_steps, batch_size=prof.student_batch_size, lr=prof.student_lr,
                       num_negatives=prof.student_negatives, negatives="range", neg_rank_min=1,
                       neg_rank_max=prof.score_depth, seed=seed, device=args.device,
                       probe_every=prof.probe_every, select_metric="ndcg@10", max_positives=samples.max_positives,
                       freeze_layers=prof.student_freeze_layers, lean_activations=prof.lean_activations,
                       min_positive_grade=samples.min_grade, eval_start=prof.eval_start,
                       eval_every=prof.student_eval_every, in_batch_negatives=prof.in_batch,
                       in_batch_weight=prof.in_batch_weight,
                       teacher_calibration="fit" if prof.calibrate and loss in SCORE_MATCHING else "none")
    scores_fp = getattr(teacher_scores, "fingerprint", None) if teacher_scores is not None else None
    fp = fingerprint_obj(["student", loss, dataset_fingerprint(ds, "train"), dataset_fingerprint(ds, "dev"),
                          mcfg, tcfg, prof.dev_depth, scores_fp, *samples.fingerprint_parts(train=True)])
    done = _finished_model(out, fp)
    if done is not None:
        logger.info("student %s (seed %d) up to date", loss, seed)
        return done
    resume = _start(out, fp)
    eval_fn = dev_eval_fn(ds, "dev", runs["dev"], depth=prof.dev_depth, batch_size=prof.batch_size_infer,
                          query_ids=samples.select_ids)
    path = train_student(ds, "train", samples.train_run, mcfg, tcfg, out, loss=loss, teacher_scores=teacher_scores,
                         eval_fn=eval_fn, probes=[probe], resume=resume)
    mark_done(out, fp, stage="student", loss=loss, seed=seed, model_path=os.path.relpath(path, out))
    return Path(path)


def _mined(ds: Any, samples: _Samples, prof: Profile, args: ReproArgs, work: Path, teacher_dir: Path) -> _Samples:
    """The samples with the training queries' candidates replaced by mined ones (``mined_negatives``):
    the zero-shot DE's top ``score_depth`` over the whole corpus, without judged documents and without
    the ones the teacher scores like a judged positive."""
    from dualist.stages import run_mining

    mined = run_mining(ds, "train", work / "runs" / "train.mined.trec", model=_student_config(prof, args.model),
                       teacher=teacher_dir, k=prof.score_depth, batch_size=prof.batch_size_infer)
    train_run = {q: mined[q] for q in samples.train_run if mined.get(q)}
    logger.info("mined negatives for %d of %d training queries", len(train_run), len(samples.train_run))
    return dataclasses.replace(samples, train_run=train_run, mined=True)


def _folds(ds: Any, prof: Profile, seed: int) -> dict[str, int]:
    from dualist.training.folds import assign_folds

    return assign_folds(list(ds.qrels_for("train")), prof.teacher_folds, seed, texts=ds.queries)


def _train_fold_teachers(ds: Any, runs: dict, prof: Profile, args: ReproArgs, work: Path, probe: Any,
                         samples: _Samples) -> list[Path]:
    """``teacher_folds`` teachers, fold ``f``'s trained on every training query outside fold ``f``."""
    from dualist.training.folds import fold_datasets

    per_fold = fold_datasets(ds, "train", _folds(ds, prof, args.seed))
    return [_train_teacher(fold_ds, runs, prof, args, work, probe, samples, name=f"teacher-fold-{f}")
            for f, fold_ds in enumerate(per_fold)]


def _gap_queries(ds: Any, n: int, seed: int) -> dict[str, str]:
    import random

    qids = sorted(ds.queries_for("train"))
    random.Random(seed).shuffle(qids)
    return {q: ds.queries[q] for q in sorted(qids[:n])}


def _evaluate_model(key: str, model: Any, ds: Any, runs: dict, prof: Profile, work: Path, fp: str,
                    is_de: bool, seed: int) -> dict[str, Any]:
    """Evaluate one model (re-rank test/dev/train-subset; retrieval test for DEs), cached by fingerprint."""
    from dualist.data import write_trec_run
    from dualist.evaluation import evaluate
    from dualist.evaluation.hubness import hubness
    from dualist.evaluation.modes import encode_corpus, rerank, retrieve
    from dualist.stages import clear_done, is_done, mark_done

    out = work / "results" / f"{key}.json"
    if is_done(out, fp):
        return read_json(out)
    clear_done(out)
    res: dict[str, Any] = {"key": key}
    gap_q = _gap_queries(ds, prof.gap_queries, seed)
    if model is None:  # BM25: its own candidate order
        res["rerank_test"] = evaluate(ds.qrels_for("test"), _cut(runs["test"], prof.rerank_depth),
                                      RERANK_METRICS).to_dict()
        res["retrieval_test"] = evaluate(ds.qrels_for("test"), runs["test"], RETRIEVAL_METRICS).to_dict()
        res["hubness_test"] = hubness(runs["test"], k=10, corpus_size=len(ds.corpus)).to_dict()
        res["rerank_dev"] = evaluate(ds.qrels_for("dev"), _cut(runs["dev"], prof.dev_depth),
                                     RERANK_METRICS).to_dict()
        train_qrels = {q: ds.qrels_for("train")[q] for q in gap_q}
        res["rerank_train"] = evaluate(train_qrels, _cut({q: runs["train"][q] for q in gap_q if q in runs["train"]},
                                                         prof.rerank_depth), RERANK_METRICS).to_dict()
        write_json(out, res)
        mark_done(out, fp)
        return res
    model.eval()
    doc_emb = encode_corpus(model, ds, batch_size=prof.batch_size_infer) if is_de else None
    test_run = rerank(model, ds, ds.queries_for("test"), runs["test"], depth=prof.rerank_depth,
                      batch_size=prof.batch_size_infer, doc_embeddings=doc_emb)
    write_trec_run(test_run, work / "runs" / f"test.{key}.rerank.trec", tag=key)
    res["rerank_test"] = evaluate(ds.qrels_for("test"), test_run, RERANK_METRICS).to_dict()
    res["rerank_test_scores"] = test_run
    dev_run = rerank(model, ds, ds.queries_for("dev"), runs["dev"], depth=prof.dev_depth,
                     batch_size=prof.batch_size_infer, doc_embeddings=doc_emb)
    res["rerank_dev"] = evaluate(ds.qrels_for("dev"), dev_run, RERANK_METRICS).to_dict()
    train_run = rerank(model, ds, gap_q, runs["train"], depth=prof.rerank_depth,
                       batch_size=prof.batch_size_infer, doc_embeddings=doc_emb)
    res["rerank_train"] = evaluate({q: ds.qrels_for("train")[q] for q in gap_q}, train_run,
                                   RERANK_METRICS).to_dict()
    if is_de:
        ret = retrieve(model, ds, ds.queries_for("test"), k=100, batch_size=prof.batch_size_infer,
                       doc_embeddings=doc_emb)
        write_trec_run(ret, work / "runs" / f"test.{key}.retrieval.trec", tag=key)
        res["retrieval_test"] = evaluate(ds.qrels_for("test"), ret, RETRIEVAL_METRICS).to_dict()
        res["hubness_test"] = hubness(ret, k=10, corpus_size=len(ds.corpus)).to_dict()
    write_json(out, res)
    mark_done(out, fp)
    return res


def _cut(run: dict, depth: int) -> dict:
    from dualist.evaluation.modes import top_k

    return top_k(run, depth)


def _evaluate_all(ds: Any, runs: dict, prof: Profile, work: Path, teacher_dir: Path,
                  students: dict[tuple[str, int], Path], model: str) -> dict[str, dict[str, Any]]:
    from dualist.models import CrossEncoder, DualEncoder, PrefixCache
    from dualist.stages import dataset_fingerprint, marker_path

    def model_fp(path: Path) -> str:
        m = marker_path(path.parent if path.name in ("model", "best", "final") else path)
        return read_json(m)["fingerprint"] if m.exists() else str(path)

    base = [dataset_fingerprint(ds, "test"), dataset_fingerprint(ds, "dev"), prof.rerank_depth, prof.dev_depth,
            prof.gap_queries, RERANK_METRICS, RETRIEVAL_METRICS]
    evals: dict[str, dict[str, Any]] = {}
    evals["bm25"] = _evaluate_model("bm25", None, ds, runs, prof, work, fingerprint_obj(["bm25", *base]),
                                    False, 0)
    # Students trained with frozen bottom layers share them with their zero-shot start: the corpus goes
    # through those layers once for all of them (a speed setting: results equal within float rounding).
    shared_prefix = PrefixCache(prof.student_freeze_layers) if prof.student_freeze_layers else None

    def dual_encoder(de: DualEncoder) -> DualEncoder:
        if shared_prefix is not None:
            de.cache_prefix(prof.student_freeze_layers, shared_prefix)
        return de

    zcfg = _student_config(prof, model)
    evals["zeroshot"] = _evaluate_model("zeroshot", dual_encoder(DualEncoder(zcfg)), ds, runs, prof, work,
                                        fingerprint_obj(["zeroshot", zcfg, *base]), True, 0)
    evals["teacher"] = _evaluate_model("teacher", CrossEncoder.from_pretrained(teacher_dir), ds, runs, prof, work,
                                       fingerprint_obj(["teacher", model_fp(teacher_dir), *base]), False, 0)
    for (loss, s), path in students.items():
        key = f"{loss}-s{s}"
        evals[key] = _evaluate_model(key, dual_encoder(DualEncoder.from_pretrained(path)), ds, runs, prof, work,
                                     fingerprint_obj([key, model_fp(path), *base]), True, 0)
    return evals


# --------------------------------------------------------------------------- summary and report
def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _per_query_mean(evals: dict, keys: list[str], section: str, metric: str) -> dict[str, float]:
    per = [evals[k][section]["per_query"][metric] for k in keys]
    qids = sorted(set.intersection(*(set(p) for p in per)))
    return {q: float(np.mean([p[q] for p in per])) for q in qids}


def _selection_rows(work: Path, teacher_dir: Path, students: dict, losses: list[str], base_seed: int
                    ) -> list[dict[str, Any]]:
    """Per trained model: the step its checkpoint was chosen at on dev, from its run's dualist.json."""
    from dualist._io import read_meta

    runs = [(TEACHER_LABEL, work / "models" / "teacher")]
    runs += [(f"{LOSS_LABELS[loss]} (seed {base_seed + s})", path.parent)
             for (loss, s), path in sorted(students.items(), key=lambda kv: (losses.index(kv[0][0]), kv[0][1]))]
    rows = []
    for label, folder in runs:
        meta = read_meta(folder) or {}
        rows.append({"model": label, "chosen step": meta.get("best_step"), "steps": meta.get("steps"),
                     "dev nDCG@10": meta.get("best_metric"), "kept start": bool(meta.get("kept_start"))})
    return rows


def _summarize(ds: Any, name: str, prof: Profile, args: ReproArgs, work: Path, runs: dict, evals: dict,
               students: dict, teacher_dir: Path, timer: _Timer, t_start: float, version: str,
               samples: _Samples) -> dict[str, Any]:
    from dualist.diagnostics import normalized_margins, read_probes, score_distributions, score_evolution
    from dualist.evaluation import paired_test
    from dualist.report import (plot_gap, plot_margins, plot_score_distributions, plot_score_evolution,
                                write_report)

    seeds = sorted({s for _, s in students})
    losses = [loss for loss in args.losses]

    def row(label: str, keys: list[str], is_de: bool) -> dict[str, Any]:
        r: dict[str, Any] = {"model": label}
        cols = [("rerank_test", "mrr@10", "re-rank MRR@10"), ("rerank_test", "ndcg@10", "re-rank nDCG@10"),
                ("retrieval_test", "ndcg@10", "retrieval nDCG@10"),
                ("retrieval_test", "recall@100", "retrieval R@100"), ("rerank_dev", "ndcg@10", "dev nDCG@10")]
        for section, metric, col in cols:
            if not all(section in evals[k] for k in keys) or (section == "retrieval_test" and not is_de
                                                               and label != BM25_LABEL):
                r[col] = None
                continue
            mean, std = _mean_std([evals[k][section]["mean"][metric] for k in keys])
            r[col] = mean
            if len(keys) > 1:
                r[col + " std"] = std
        hub = [evals[k]["hubness_test"] for k in keys if "hubness_test" in evals[k]]
        r[HUB_DISTINCT] = float(np.mean([h["distinct"] for h in hub])) if hub else None
        r[HUB_MAX] = float(np.mean([h["max_occurrence"] for h in hub])) if hub else None
        return r

    rows = [row(BM25_LABEL, ["bm25"], False), row(ZERO_SHOT_LABEL, ["zeroshot"], True),
            row(TEACHER_LABEL, ["teacher"], False)]
    for loss in losses:
        rows.append(row(LOSS_LABELS[loss], [f"{loss}-s{s}" for s in seeds], True))
    columns = ["model", "re-rank MRR@10", "re-rank nDCG@10", "retrieval nDCG@10", "retrieval R@100",
               "dev nDCG@10"]
    if len(seeds) > 1:  # mean ± std over seeds: the std sits in the column right after its mean
        columns = ["model"] + [c for col in columns[1:] for c in (col, col + " std")]
    columns += [HUB_DISTINCT, HUB_MAX]

    # significance: each distilled student vs the one-hot DE, per-query re-rank nDCG@10 (mean over seeds)
    significance = {}
    if "onehot" in losses:
        base = _per_query_mean(evals, [f"onehot-s{s}" for s in seeds], "rerank_test", "ndcg@10")
        for loss in losses:
            if loss == "onehot":
                continue
            other = _per_query_mean(evals, [f"{loss}-s{s}" for s in seeds], "rerank_test", "ndcg@10")
            common = sorted(set(other) & set(base))
            other = {q: other[q] for q in common}
            stat, p = paired_test(other, {q: base[q] for q in common}, method="permutation", n_resamples=10000,
                                  seed=0)
            diff = float(np.mean([other[q] - base[q] for q in base if q in other]))
            significance[LOSS_LABELS[loss]] = {"mean_diff": diff, "statistic": float(stat), "p_value": float(p)}

    # the best distilled DE is chosen on dev, never on test
    distilled = [loss for loss in losses if loss != "onehot"]
    best_loss = max(distilled, key=lambda lo: np.mean([evals[f"{lo}-s{s}"]["rerank_dev"]["mean"]["ndcg@10"]
                                                         for s in seeds])) if distilled else None
    diag_models = {TEACHER_LABEL: "teacher"}
    if "onehot" in losses:
        diag_models[LOSS_LABELS["onehot"]] = f"onehot-s{seeds[0]}"
    if best_loss:
        diag_models[LOSS_LABELS[best_loss] + " (best on dev)"] = f"{best_loss}-s{seeds[0]}"

    report_dir = work / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    qrels_test = ds.qrels_for("test")
    margins = {lab: normalized_margins(evals[k]["rerank_test_scores"], qrels_test) for lab, k in diag_models.items()}
    dists = {lab: score_distributions(evals[k]["rerank_test_scores"], qrels_test, standardize="query_minmax")
             for lab, k in diag_models.items()}
    gaps = {lab: {"train": evals[k]["rerank_train"]["mean"]["ndcg@10"],
                  "test": evals[k]["rerank_test"]["mean"]["ndcg@10"]} for lab, k in diag_models.items()}
    evolutions = {}
    for lab, k in diag_models.items():
        mdir = work / "models" / ("teacher" if k == "teacher" else f"student-{k.rsplit('-s', 1)[0]}-s"
                                  f"{args.seed + int(k.rsplit('-s', 1)[1])}")
        probes = mdir / "probes.jsonl"
        if probes.exists():
            evolutions[lab] = score_evolution(read_probes(probes))

    img = {
        "gap": plot_gap(gaps, report_dir / "gap.png", metric="re-rank nDCG@10"),
        "dists": plot_score_distributions(dists, report_dir / "score_distributions.png"),
        "margins": plot_margins(margins, report_dir / "margins.png"),
    }
    if evolutions:
        img["evolution"] = plot_score_evolution(evolutions, report_dir / "score_evolution.png")

    claims = _claims(rows, evals, losses, seeds, significance)
    margin_summary = {lab: {"median": float(np.median(list(m.values()))) if m else math.nan,
                            "mean": float(np.mean(list(m.values()))) if m else math.nan, "n": len(m)}
                      for lab, m in margins.items()}
    settings = {"dataset": name, "profile": dataclasses.asdict(prof), "seeds": args.seeds, "base_seed": args.seed,
                "losses": losses, "device": args.device, "dev split": _dev_note(ds),
                "queries (train/dev/test)": [len(ds.queries_for(s)) for s in ("train", "dev", "test")],
                "training queries scored and trained on": len(samples.train_run),
                "training candidates": "mined (zero-shot DE over the corpus, teacher-denoised)" if samples.mined
                                       else "BM25",
                "positives per training query": samples.max_positives or "all",
                "dev queries for checkpoint selection": (len(samples.select_ids) if samples.select_ids is not None
                                                         else len(ds.queries_for("dev"))),
                "documents": len(ds.corpus),
                "training qrels": getattr(ds, "train_qrels_file", "qrels/train.tsv (BEIR)"),
                "positive grade": f">= {samples.min_grade}",
                "resumed work folder": timer.resumed}
    if args.override:
        settings["override"] = list(args.override)
    timings = dict(timer.seconds)
    timings["total"] = time.time() - t_start
    gap_rows = [{"model": lab, "train nDCG@10": g["train"], "test nDCG@10": g["test"],
                 "gap": g["train"] - g["test"]} for lab, g in gaps.items()]
    margin_rows = [{"model": lab, **{k: v for k, v in ms.items()}} for lab, ms in margin_summary.items()]
    sig_rows = [{"model": lab, "mean diff nDCG@10": v["mean_diff"], "p-value": f"{v['p_value']:.4f}"}
                for lab, v in significance.items()]
    sections = [
        {"title": "Claims checked on this data", "text": "\n\n".join(claims), "image": None, "table": None},
        {"title": "Train-vs-test gap (re-rank nDCG@10)",
         "text": f"Train: {prof.gap_queries} training queries re-ranked like the test queries. A larger gap "
                 "means more overfitting (the paper's explanation of the DE's shortfall).",
         "image": img["gap"], "table": {"rows": gap_rows, "columns": ["model", "train nDCG@10", "test nDCG@10",
                                                                     "gap"]}},
        {"title": "Score distributions (test candidates, per-query min-max scaled)",
         "text": "Positives vs negatives among the re-ranked BM25 candidates.", "image": img["dists"], "table": None},
        {"title": "Normalized margins",
         "text": "(s+ - max_neg s) / (max s - min s) per test query; higher is better, scale-free.",
         "image": img["margins"], "table": {"rows": margin_rows, "columns": ["model", "median", "mean", "n"]}},
    ]
    if "evolution" in img:
        sections.append({"title": f"Score evolution (training query {_probe_query_of(work)})",
                         "text": "Scores of 5 positives (solid) and 5 negatives (dashed) across training steps.",
                         "image": img["evolution"], "table": None})
    selection_rows = _selection_rows(work, teacher_dir, students, losses, args.seed)
    sections.append({"title": "Checkpoint selection on dev",
                     "text": "The step each model was taken at (dev nDCG@10, evaluated at step 0 too). A model "
                             "whose chosen step is 0 never beat its start on dev and is its starting model.",
                     "image": None, "table": {"rows": selection_rows,
                                              "columns": ["model", "chosen step", "steps", "dev nDCG@10",
                                                          "kept start"]}})
    if sig_rows:
        sections.append({"title": "Paired permutation test vs DE one-hot (test re-rank nDCG@10)",
                         "text": f"{len(seeds)} seed(s); per-query values averaged over seeds.",
                         "image": None, "table": {"rows": sig_rows, "columns": ["model", "mean diff nDCG@10",
                                                                                "p-value"]}})
    notes = [prof.notes] if prof.notes else []
    write_report(report_dir, title=f"dualist reproduction: {name} ({prof.name} profile)", table_rows=rows,
                 columns=columns, sections=sections, settings=settings, timings=timings, version=version,
                 notes=notes)
    results = {"dataset": name, "profile": prof.name, "version": version, "rows": rows, "gaps": gaps,
               "margins": margin_summary, "significance": significance, "claims": claims,
               "best_distilled_on_dev": best_loss, "selection": selection_rows, "settings": settings,
               "timings": timings}
    write_json(work / "results.json", results)
    print(_console_table(rows, columns))
    print("\n".join(claims))
    print(f"report: {report_dir / 'index.html'}")
    return results


def _probe_query_of(work: Path) -> str:
    import json

    p = work / "models" / "teacher" / "probes.jsonl"
    if p.exists():
        first = p.read_text().splitlines()[:1]
        if first:
            return str(json.loads(first[0]).get("query_id", "?"))
    return "?"


def _dev_note(ds: Any) -> str:
    carved = getattr(ds, "carved_dev", None)
    return (f"carved from train (fraction {carved['fraction']}, seed {carved['seed']})" if carved
            else "the dataset's own dev split")


def _claims(rows: list[dict], evals: dict, losses: list[str], seeds: list[int], significance: dict) -> list[str]:
    """The paper's three claims, checked on this run's test figures (reported, never tuned for)."""
    by = {r["model"]: r for r in rows}
    out = []
    col = "re-rank nDCG@10"
    t, o = by[TEACHER_LABEL][col], by.get(LOSS_LABELS["onehot"], {}).get(col)
    if o is not None:
        out.append(f"{'SUPPORTED' if t > o else 'NOT SUPPORTED'}: teacher beats one-hot DE in re-rank nDCG@10 "
                   f"({t:.3f} vs {o:.3f}).")
        if "m3se" in losses:
            m = by[LOSS_LABELS["m3se"]][col]
            gap = t - o
            if gap > 0:
                closed = (m - o) / gap
                out.append(f"{'SUPPORTED' if closed >= 0.5 else 'NOT SUPPORTED'}: DE + M3SE closes at least half "
                           f"of the teacher/one-hot gap (closes {round(closed * 100)}%: {m:.3f} vs one-hot {o:.3f}, "
                           f"teacher {t:.3f}).")
            else:
                out.append(f"NOT SUPPORTED: DE + M3SE closes at least half of the teacher/one-hot gap: there is no "
                           f"gap to close, the teacher ({t:.3f}) is not above the one-hot DE ({o:.3f}); "
                           f"M3SE {m:.3f}.")
            sig = significance.get(LOSS_LABELS["m3se"], {})
            if sig:
                beyond = sig["p_value"] < 0.05 and sig["mean_diff"] > 0
                out.append(f"{'SUPPORTED' if beyond else 'NOT SUPPORTED'}: DE + M3SE beats the one-hot DE beyond "
                           f"noise (M3SE - one-hot = {_signed(sig['mean_diff'])}, paired permutation "
                           f"p = {sig['p_value']:.4f}, {len(seeds)} seed(s)).")
    distilled = [r for r in rows if r["model"].startswith("DE + ")]
    if distilled:
        best = max(distilled, key=lambda r: r["dev nDCG@10"] or 0)
        b, z = by[BM25_LABEL]["retrieval nDCG@10"], by[ZERO_SHOT_LABEL]["retrieval nDCG@10"]
        v = best["retrieval nDCG@10"]
        ok = v > b and v > z
        out.append(f"{'SUPPORTED' if ok else 'NOT SUPPORTED'}: the best distilled DE on dev ({best['model']}) beats "
                   f"BM25 and the zero-shot DE in retrieval nDCG@10 ({v:.3f} vs {b:.3f} and {z:.3f}).")
    return out


def _signed(x: float) -> str:
    """``x`` to three decimals with its sign, and a plain ``0.000`` where it rounds to nothing."""
    return "0.000" if round(x, 3) == 0 else f"{x:+.3f}"


def _console_table(rows: list[dict], columns: list[str]) -> str:
    from dualist.report import markdown_table

    return markdown_table(rows, columns)

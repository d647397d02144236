"""The training stages: the cross-encoder teacher, its cached scores, and the dual-encoder students.

Each stage fingerprints what its output depends on, returns the finished output when the fingerprint
matches and resumes a half-made run that had the same fingerprint. What happens to a run made with
other settings is the config's ``resume``: ``None`` (the repro plan) starts over; ``True`` (the CLI's
default) continues the run in ``out`` and so refuses one made with other settings, deleting nothing
(:func:`dualist.training.checkpoints.check_same_run`); ``False`` (``--no-resume``) starts over, even
when ``out`` holds a finished run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualist._io import fingerprint_files, fingerprint_obj
from dualist.data import Dataset
from dualist.stages import markers
from dualist.stages.inputs import dataset_fingerprint

if TYPE_CHECKING:
    from dualist.evaluation import QueryMetrics
    from dualist.evaluation.memo import RerankMemo
    from dualist.models import CrossEncoder, CrossEncoderConfig, DualEncoder, DualEncoderConfig, PrefixCache
    from dualist.training import TrainConfig

__all__ = ["TeacherConfig", "ScoresConfig", "StudentConfig", "teacher_stage", "scores_stage", "student_stage",
           "dev_eval_fn", "training_probe", "Probe"]

logger = logging.getLogger(__name__)

Run = Mapping[str, Mapping[str, float]]
Probe = Callable[["DualEncoder | CrossEncoder", int], dict[str, Any]]


@dataclass(frozen=True)
class TeacherConfig:
    """What the teacher stage trains: a cross-encoder on ``split``'s candidates, chosen on ``dev_split``."""

    model: CrossEncoderConfig
    train: TrainConfig
    candidates: Path                   # TREC run of the training queries (negatives come from it)
    split: str = "train"
    dev_split: str = ""                # "" = no checkpoint selection
    dev_candidates: Path | None = None
    dev_depth: int = 100
    select_queries: tuple[str, ...] | None = None  # dev queries that pick the checkpoint (None: all)
    batch_size: int = 64               # inference batch of the dev evaluations
    resume: bool | None = None         # None: start over when out holds another run; True: refuse it; False:
                                       # always start over (see the module docstring)


@dataclass(frozen=True)
class ScoresConfig:
    """What the teacher-scores stage scores: each query's top-``depth`` candidates (and its positives)."""

    teacher: Path                      # the teacher's model folder
    candidates: Path
    split: str = "train"
    depth: int | None = 100
    max_positives: int | None = None   # best grade first; None = all
    train_queries: tuple[str, ...] | None = None  # score only these queries' candidates (None: all)
    batch_size: int = 64
    force: bool = False                # replace a cache made from other inputs instead of refusing it
    shard: tuple[int, int] | None = None  # (i, n): score only shard i of n (several machines share out)
    fold_teachers: tuple[Path, ...] = ()  # cross-fitted scores: each training query scored by the fold-teacher
    fold_seed: int = 13                # that never saw it (dualist.training.folds), folds dealt with this seed


@dataclass(frozen=True)
class StudentConfig:
    """What the student stage trains: a dual-encoder with ``loss``, distilled from ``teacher_scores``."""

    model: DualEncoderConfig
    train: TrainConfig
    candidates: Path
    loss: str = "m3se"
    loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    teacher_scores: Path | None = None  # needed by the distillation losses, ignored by the others
    split: str = "train"
    dev_split: str = ""
    dev_candidates: Path | None = None
    dev_depth: int = 100
    train_queries: tuple[str, ...] | None = None  # train on these queries' candidates only (None: all)
    select_queries: tuple[str, ...] | None = None
    batch_size: int = 64
    resume: bool | None = None         # as TeacherConfig.resume


# --------------------------------------------------------------------------- stages
def teacher_stage(dataset: Dataset, config: TeacherConfig, out: str | Path, *, probes: Sequence[Probe] = (),
                  rerank_memo: RerankMemo | None = None) -> Path:
    """Train the teacher into ``out`` (skipped when up to date); returns its chosen model folder.

    ``rerank_memo`` keeps its dev re-rankings, so that the evaluation of the chosen checkpoint in the
    same process takes its dev run from there (see :func:`dev_eval_fn`)."""
    from dualist import training
    from dualist.data import read_trec_run

    out = Path(out)
    fp = fingerprint_obj(["teacher", dataset_fingerprint(dataset, config.split), _dev_fingerprint(dataset, config),
                          config.model, config.train, config.dev_depth,
                          *_queries_part("select_queries", config.select_queries),
                          *_foreign_runs(config.candidates, config.dev_candidates)])
    done = markers.finished_model(out, fp) if config.resume is not False else None
    if done is not None:
        logger.info("teacher up to date: %s", out)
        return done
    eval_fn = _eval_fn(dataset, config, rerank_memo)
    path = _train(out, fp, config.resume, lambda resume: training.train_teacher(
        dataset, config.split, read_trec_run(config.candidates), config.model, config.train, out, eval_fn=eval_fn,
        probes=probes, resume=resume))
    markers.mark_done(out, fp, stage="teacher", model_path=os.path.relpath(path, out))
    return Path(path)


def scores_stage(dataset: Dataset, config: ScoresConfig, out: str | Path) -> Path | None:
    """Score the candidate pairs with the teacher into the Parquet cache ``out``; returns ``out``, or None
    when ``config.shard`` scored one shard and others remain.

    The cache checks itself (:func:`dualist.training.score_candidates`): one made from the same teacher,
    candidates, depth and positives is kept, a half-made one resumes shard by shard. With
    ``fold_teachers`` the scores are cross-fitted: each query's pairs are scored by the fold-teacher
    that never trained on it (:class:`dualist.training.folds.FoldTeachers`).
    """
    from dualist.data import read_trec_run
    from dualist.models import CrossEncoder
    from dualist.training import score_candidates

    run = read_trec_run(config.candidates)
    if config.train_queries is not None:
        run = {q: run[q] for q in config.train_queries if q in run}
    teacher: Any = CrossEncoder.from_pretrained(config.teacher)
    if config.fold_teachers:
        from dualist.training.folds import FoldTeachers, assign_folds

        folds = assign_folds(list(dataset.qrels_for(config.split)), len(config.fold_teachers), config.fold_seed,
                             texts=dataset.queries)
        teacher = FoldTeachers([CrossEncoder.from_pretrained(d) for d in config.fold_teachers], folds,
                               dataset.queries)
    scores = score_candidates(teacher, dataset, config.split, run, out, depth=config.depth,
                              batch_size=config.batch_size, max_positives=config.max_positives,
                              teacher_path=config.teacher, force=config.force, shard=config.shard)
    return None if scores is None else Path(out)


def student_stage(dataset: Dataset, config: StudentConfig, out: str | Path, *, probes: Sequence[Probe] = (),
                  prefix_cache: PrefixCache | None = None, rerank_memo: RerankMemo | None = None) -> Path:
    """Train a student into ``out`` (skipped when up to date); returns its chosen model folder.

    Speed settings for several students of one start (the same results): ``prefix_cache`` shares the
    frozen bottom layers' states between students of the same ``freeze_layers`` (see
    :func:`dualist.training.train_student`), ``rerank_memo`` their dev re-rankings of equal weights (their
    common start; see :func:`dev_eval_fn`)."""
    from dualist import training
    from dualist.data import read_trec_run
    from dualist.losses import requires_teacher

    out = Path(out)
    scores = None
    if requires_teacher(config.loss) and config.teacher_scores is not None:
        scores = training.TeacherScores.load(config.teacher_scores)
    fp = fingerprint_obj(["student", config.loss, dataset_fingerprint(dataset, config.split),
                          _dev_fingerprint(dataset, config), config.model, config.train, config.dev_depth,
                          scores.fingerprint if scores is not None else None,
                          *_queries_part("train_queries", config.train_queries),
                          *_queries_part("select_queries", config.select_queries),
                          *([{"loss_kwargs": dict(config.loss_kwargs)}] if config.loss_kwargs else []),
                          *_foreign_runs(config.candidates, config.dev_candidates)])
    done = markers.finished_model(out, fp) if config.resume is not False else None
    if done is not None:
        logger.info("student %s (seed %d) up to date", config.loss, config.train.seed)
        return done
    run = read_trec_run(config.candidates)
    if config.train_queries is not None:
        run = {q: run[q] for q in config.train_queries if q in run}
    eval_fn = _eval_fn(dataset, config, rerank_memo)
    path = _train(out, fp, config.resume, lambda resume: training.train_student(
        dataset, config.split, run, config.model, config.train, out, loss=config.loss,
        loss_kwargs=dict(config.loss_kwargs), teacher_scores=scores, eval_fn=eval_fn, probes=probes, resume=resume,
        prefix_cache=prefix_cache))
    markers.mark_done(out, fp, stage="student", loss=config.loss, seed=config.train.seed,
                      model_path=os.path.relpath(path, out))
    return Path(path)


def _train(out: Path, fp: str, resume: bool | None, train: Callable[[bool], Path]) -> Path:
    """Run ``train(resume)`` in ``out`` under the markers of a training stage (see the module docstring).

    A run the trainer refuses to continue (one made with other settings) leaves ``out`` as it was,
    markers included, so rerunning the earlier settings still finds that run finished.
    """
    from dualist.errors import StaleArtifactError

    out.mkdir(parents=True, exist_ok=True)
    before = markers.snapshot(out)
    same = markers.start(out, fp)
    try:
        return Path(train(same if resume is None else resume))
    except StaleArtifactError:
        markers.restore(out, before)
        raise


def _dev_fingerprint(dataset: Dataset, config: TeacherConfig | StudentConfig) -> str | None:
    return dataset_fingerprint(dataset, config.dev_split) if config.dev_split else None


def _queries_part(name: str, ids: Collection[str] | None) -> list[dict[str, list[str]]]:
    """A query sample's part of a fingerprint; none when nothing was sampled, so uncapped outputs stay valid."""
    return [] if ids is None else [{name: list(ids)}]


def _foreign_runs(*paths: Path | None) -> list[dict[str, str]]:
    """Candidate runs not made by the candidates stage, counted by their content (or, for a mined run,
    by the fingerprint of the mining stage that made it).

    A run the candidates stage made is a function of the dataset and its settings, which the
    fingerprint already counts; a run from elsewhere could change under the same name.
    """
    from dualist._io import read_json

    parts = []
    for p in paths:
        if p is None:
            continue
        m = markers.marker_path(p)
        if not m.exists():
            parts.append({"run": fingerprint_files([p])})
        elif (made := read_json(m)).get("stage") == "mine":
            parts.append({"mined_candidates": str(made.get("fingerprint"))})
    return parts


def _eval_fn(dataset: Dataset, config: TeacherConfig | StudentConfig, memo: RerankMemo | None = None,
             ) -> Callable[[DualEncoder | CrossEncoder], dict[str, float]] | None:
    from dualist.data import read_trec_run
    from dualist.errors import ConfigError

    if not config.dev_split:
        return None
    if config.dev_candidates is None:
        raise ConfigError("a dev split for checkpoint selection needs its candidates (--dev-candidates)")
    return dev_eval_fn(dataset, config.dev_split, read_trec_run(config.dev_candidates), depth=config.dev_depth,
                       batch_size=config.batch_size, query_ids=config.select_queries, memo=memo)


# --------------------------------------------------------------------------- what the trainers call back
def dev_eval_fn(dataset: Dataset, split: str, candidates: Run, *, depth: int = 100,
                metrics: tuple[str, ...] = ("ndcg@10", "mrr@10"), batch_size: int = 64,
                query_ids: Collection[str] | None = None,
                memo: RerankMemo | None = None) -> Callable[[DualEncoder | CrossEncoder], dict[str, float]]:
    """An ``eval_fn(model) -> {metric: value}`` that re-ranks ``split``'s candidates (for best-checkpoint choice).

    The dict it returns is a :class:`~dualist.evaluation.QueryMetrics`: it also carries each query's
    values (``.per_query``), which ``TrainConfig.select_alpha`` tests a checkpoint's gain on.

    ``query_ids`` restricts it to those queries of ``split`` (e.g. a fixed sample of a large dev set).
    ``memo`` (a :class:`~dualist.evaluation.memo.RerankMemo`, shared by several trainings and their
    evaluation) keeps each re-ranking under the hash of the model's weights and of what it re-ranked:
    students that start from the same weights re-rank their common start once, and the evaluation
    of a chosen checkpoint finds the dev run its training made.
    """
    from dualist.evaluation import QueryMetrics, evaluate, rerank

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

    def eval_fn(model: DualEncoder | CrossEncoder) -> QueryMetrics:
        was_training = model.training
        model.eval()
        try:
            if memo is not None:
                run = memo.rerank(model, dataset, queries, candidates, depth=depth, batch_size=batch_size)
            else:
                run = rerank(model, dataset, queries, candidates, depth=depth, batch_size=batch_size,
                             show_progress=False)
        finally:
            model.train(was_training)
        return QueryMetrics.of(evaluate(qrels, run, list(metrics)))

    return eval_fn


def training_probe(dataset: Dataset, qid: str, doc_ids: list[str], labels: list[int]) -> Probe:
    """A training probe: the model's scores for one fixed query's documents (the score-evolution plot);
    :func:`dualist.diagnostics.evolution.make_probe`, the one the CLI trainers record too."""
    from dualist.diagnostics.evolution import make_probe

    return make_probe(dataset, qid, list(doc_ids), list(labels))

"""``dualist repro``: the paper's comparison on a BEIR dataset, end to end, as a plan over the stages.

Each step is a stage of :mod:`dualist.stages` (skipped when its output is up to date, so an
interrupted run continues where it stopped and a changed setting recomputes only what depends on it):

1. BM25 candidates for train / dev / test (a seeded dev slice is carved from train when missing; the
   dataset's graded train qrels replace BEIR's where it ships them, ``train_qrels``);
2. the cross-attention teacher (listwise softmax CE), best checkpoint chosen on dev; with
   ``mined_negatives``, dense hard negatives replace BM25's training candidates; with ``teacher_folds``,
   fold-teachers for cross-fitted scores;
3. teacher scores for the training candidates (cached, resumable); with ``teacher_bm25``, the BM25
   weight of the teacher + BM25 ensemble that the distilled students learn from, chosen on dev; with
   ``pseudo_queries``, corpus sentences as unjudged training queries, their BM25 candidates scored by
   the teacher, for the distilled students (and, with ``pseudo_onehot``, the one-hot DE);
4. dual-encoder students from the same starting weights and budget: one-hot and each distillation loss;
5. evaluation of BM25, the zero-shot starting DE, the teacher and every student: re-rank mode
   (BM25 top-K; MRR@10, nDCG@10) and, for dual-encoders, retrieval mode (nDCG@10, Recall@100) and
   hybrid retrieval (BM25 + the DE's retrieval run, reciprocal rank fusion; the same two figures);
6. the report: diagnostics, ``report/index.html``, ``report/report.md`` and ``results.json``.

The budgets come from a :class:`~dualist.repro.profiles.Profile`; this module only turns them into
stage configs and names the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from dualist._io import read_json
from dualist.config import opt
from dualist.data import Dataset
from dualist.losses import LOSS_NAMES, requires_teacher
from dualist.repro.profiles import Profile, get_profile
from dualist.repro.samples import Samples
from dualist.training.checkpoints import append_jsonl

if TYPE_CHECKING:
    from dualist.evaluation.memo import RerankMemo
    from dualist.models import DualEncoderConfig, PrefixCache
    from dualist.stages import EvaluatedModel, StudentConfig, TeacherConfig

__all__ = ["ReproArgs", "run_repro", "resolve_profile", "StudentRun"]

logger = logging.getLogger(__name__)


@dataclass
class ReproArgs:
    dataset: str = opt("scifact", "BEIR folder path, or a dataset name (looked up under --data-root, then "
                                  "downloaded into the cache when online)")
    data_root: str = opt("", "folder holding BEIR datasets by name (default: $DUALIST_DATA_ROOT, if set)")
    profile: Literal["quick", "full"] = opt("quick", "budget: quick (every row and plot at smoke scale; "
                                                     "on SciFact, 15 min on 2 AVX-512 CPU cores, 18-23 on 2 "
                                                     "AVX2-only ones) or full (on SciFact about 2 h with three "
                                                     "students on 2 AVX2-only cores, most of it the teacher's "
                                                     "training and its re-ranking of the test candidates)")
    out: str = opt("", "work folder (default: repro/<dataset>-<profile>)")
    seeds: int = opt(1, "train every student with this many seeds; >1 reports mean ± std and a paired "
                        "significance test against the one-hot DE")
    losses: list[str] = opt(list(LOSS_NAMES), "student losses to train (comma-separated)")
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
                              "one), replacing the entry of the same dataset, profile, overrides, base seed, "
                              "seed count and losses; the run's "
                              "minutes go in wall_minutes or, when it continued an earlier work folder, in "
                              "resumed_run_minutes: the minutes of every invocation that built that folder (its "
                              "timings.jsonl; none when one was killed during a stage)")


@dataclass(frozen=True)
class StudentRun:
    """One student of the plan: its loss, which of the seeds it is, and that seed's value."""

    loss: str
    index: int  # 0 .. seeds - 1
    seed: int   # base seed + index

    @property
    def folder(self) -> str:
        return f"student-{self.loss}-s{self.seed}"

    @property
    def result_name(self) -> str:
        return f"{self.loss}-s{self.index}"


TIMINGS_LOG = "timings.jsonl"  # in the work folder: a line when a stage starts and one when it ends, every invocation
FOLDER_TOTAL = "work folder, all invocations"  # the timings key of that log's total, for --record


class _Timer:
    """Stage wall times of this invocation, each also appended to the work folder's ``timings.jsonl`` (a
    line at the stage's start, one with its seconds at its end), so a run resumed over several invocations
    still knows what its outputs cost (:func:`folder_seconds`)."""

    def __init__(self, log: Path | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.log = log
        self.started = datetime.now().isoformat()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("== stage: %s", name)
        t0 = time.time()
        self._append({"invocation": self.started, "stage": name, "started": True})
        finished = False
        try:
            yield
            finished = True
        finally:
            took = time.time() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            logger.info("== stage %s took %.1fs", name, took)
            # a failed (or interrupted) stage counts too: a resumed stage reuses what it left behind
            self._append({"invocation": self.started, "stage": name, "seconds": round(took, 3),
                          "finished": finished})

    def _append(self, line: dict[str, Any]) -> None:
        if self.log is not None:
            append_jsonl(self.log, [line])


def folder_seconds(work: Path, *, current: str | None = None) -> tuple[float, int, str | None]:
    """``(seconds, invocations, stopped)`` of ``work``'s ``timings.jsonl``: the seconds of every stage that
    ended in any invocation (failed ones included), the number of invocations, and a stage that an
    invocation other than ``current`` started and never ended (a process killed mid-stage, whose seconds
    are unknown), or None. ``(0.0, 0, None)`` without a log; a log written before start lines existed
    has no such stage."""
    path = work / TIMINGS_LOG
    if not path.is_file():
        return 0.0, 0, None
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    open_stages: dict[tuple[str, str], int] = {}
    for x in lines:
        if x["invocation"] != current:
            key = (x["invocation"], x["stage"])
            open_stages[key] = open_stages.get(key, 0) + (1 if x.get("started") else -1 if "seconds" in x else 0)
    stopped = next((stage for (_, stage), n in open_stages.items() if n > 0), None)
    return sum(float(x["seconds"]) for x in lines if "seconds" in x), len({x["invocation"] for x in lines}), stopped


def resolve_profile(args: ReproArgs) -> Profile:
    """The profile named by ``args`` with its ``--override`` values and ``--scale`` applied."""
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


def run_repro(args: ReproArgs) -> dict[str, Any]:
    """Run (or resume) the reproduction and write the report; returns the contents of ``results.json``."""
    from dualist import stages
    from dualist.data import read_trec_run
    from dualist.diagnostics import pick_probe_query, select_probe_docs
    from dualist.errors import ConfigError
    from dualist.evaluation.memo import RerankMemo
    from dualist.models import PrefixCache

    unknown = sorted(set(args.losses) - set(LOSS_NAMES))
    if unknown:
        raise ConfigError(f"--losses: unknown {unknown}; choose from {list(LOSS_NAMES)}")
    prof = resolve_profile(args)
    data_path = stages.resolve_dataset(args.dataset, args.data_root)
    graded = (stages.graded_train_qrels(data_path) if prof.train_qrels == "auto" and Path(data_path).is_dir()
              else None)
    ds = stages.load_dataset(data_path, dev_fraction=0.1, seed=args.seed, train_qrels=graded)
    min_grade = prof.graded_min_grade if graded is not None else 1
    if graded is not None:
        logger.info("training on the graded qrels %s; positives need grade >= %d", graded.name, min_grade)
    name = Path(data_path).name if Path(data_path).is_dir() else args.dataset
    work = Path(args.out or f"repro/{name}-{prof.name}")
    resumed = work.is_dir() and any(work.iterdir())  # then the wall time is not a fresh run's
    work.mkdir(parents=True, exist_ok=True)
    timer, t_start = _Timer(work / TIMINGS_LOG), time.time()
    logger.info("reproduction on %s (%s profile) in %s", name, prof.name, work)

    with timer.stage("bm25 candidates"):
        cands = {split: stages.candidates_stage(ds, stages.CandidatesConfig(split, prof.candidates_k),
                                                work / "runs" / f"{split}.bm25.trec")
                 for split in ("train", "dev", "test")}
    runs = {split: read_trec_run(path) for split, path in cands.items()}
    samples = Samples.of(ds, runs, prof, args.seed, min_grade=min_grade)
    # the score-evolution probe: 5 positives and 5 hard negatives of a query the students train on
    probe_qid = pick_probe_query(ds.qrels_for("train"), samples.train_run)
    probe = stages.training_probe(ds, probe_qid, *select_probe_docs(probe_qid, ds.qrels_for("train"), runs["train"]))

    # Dev re-rankings of every training, kept by the weights that made them: the students' common start
    # is re-ranked once, and each chosen checkpoint's evaluation takes the dev run its training made (a
    # speed setting: the same runs).
    memo = RerankMemo()
    with timer.stage("teacher training"):
        teacher = stages.teacher_stage(ds, _teacher(prof, args, cands, samples), work / "models" / "teacher",
                                       probes=[probe], rerank_memo=memo)
    train_cands = cands["train"]
    if prof.mined_negatives:
        with timer.stage("mining"):
            train_cands, samples = _mined(ds, prof, args, work, teacher, samples)
    fold_teachers: tuple[Path, ...] = ()
    if prof.teacher_folds >= 2:
        with timer.stage("fold teachers"):
            fold_teachers = _fold_teachers(ds, prof, args, work, cands, samples, probe)
    with timer.stage("teacher scoring"):
        scores = stages.scores_stage(ds, stages.ScoresConfig(
            teacher=teacher, candidates=train_cands, depth=prof.score_depth, batch_size=prof.batch_size_infer,
            max_positives=samples.max_positives or None, train_queries=samples.train_ids, force=True,
            fold_teachers=fold_teachers, fold_seed=samples.seed),
            work / "scores" / "train.teacher.parquet")
        assert scores is not None  # unsharded: the whole cache
        agreement = _label_agreement(ds, scores, samples.min_grade)
    ensemble: dict[str, Any] | None = None
    if prof.teacher_bm25:
        with timer.stage("bm25 weight"):
            ensemble = _bm25_weight(ds, prof, work, teacher, cands, samples)
    bm25_weight = float(ensemble["weight"]) if ensemble else 0.0
    pseudo: Pseudo | None = None
    if prof.pseudo_queries > 0:
        with timer.stage("pseudo queries"):
            pseudo = _pseudo(ds, prof, args, work, teacher, scores, samples)
    # Students trained with frozen bottom layers share them with each other and with their zero-shot
    # start: a text goes through those layers once for every student's training, dev evaluations and
    # test evaluation (a speed setting: results equal within float rounding).
    shared = PrefixCache(prof.student_freeze_layers) if prof.student_freeze_layers else None
    students: dict[StudentRun, Path] = {}
    with timer.stage("student training"):
        for s in range(args.seeds):
            for loss in args.losses:
                run = StudentRun(loss, s, args.seed + s)
                config = _student(prof, args, {**cands, "train": train_cands}, samples, run, scores, bm25_weight)
                student_ds = ds
                if pseudo is not None and (requires_teacher(loss) or prof.pseudo_onehot):
                    student_ds, config = pseudo.dataset, pseudo.student(config)
                students[run] = stages.student_stage(student_ds, config, work / "models" / run.folder,
                                                     probes=[probe], prefix_cache=shared, rerank_memo=memo)
    with timer.stage("evaluation"):
        evaluated = _evaluate(ds, prof, args, work, cands, teacher, students, shared, memo)
    with timer.stage("diagnostics and report"):
        stages.report_stage(ds, stages.ReportConfig(
            title=f"dualist reproduction: {name} ({prof.name} profile)", models=evaluated,
            results_path=work / "results.json", seeds=args.seeds, gap_queries=prof.gap_queries,
            notes=(prof.notes,) if prof.notes else (),
            settings=_settings(ds, name, prof, args, samples, resumed, ensemble, agreement, pseudo),
            timings=_timings(timer, work, resumed), started_at=t_start, header={"dataset": name, "profile": prof.name},
            trained=_trained(work, args, students), select_queries=samples.select_ids),
            work / "report")
    logger.info("reproduction finished in %.1f min; report: %s", (time.time() - t_start) / 60,
                work / "report" / "index.html")
    results = read_json(work / "results.json")
    _print_summary(results, work / "report" / "index.html")
    return results


def _timings(timer: _Timer, work: Path, resumed: bool) -> dict[str, float]:
    """This invocation's stage seconds and, for a resumed folder whose earlier invocations were logged, the
    seconds of all of them (``FOLDER_TOTAL``): what ``--record`` reports as the run's minutes."""
    timings = dict(timer.seconds)
    seconds, invocations, stopped = folder_seconds(work, current=timer.started)
    if resumed and invocations > 1:
        if stopped is None:
            timings[FOLDER_TOTAL] = seconds
        else:
            logger.warning("an earlier invocation was stopped during its %s stage without logging its end "
                           "(%s), so the minutes that built this work folder are unknown: --record writes none",
                           stopped, TIMINGS_LOG)
    return timings


def _print_summary(results: dict[str, Any], report: Path) -> None:
    """What a finished run says on the console: the results table, the claims and where the report is."""
    from dualist.report import markdown_table
    from dualist.report.summary import table_columns

    print(markdown_table(results["rows"], table_columns(results["settings"]["seeds"])))
    print("\n".join(c["text"] for c in [*results["claims"], *results.get("targets", [])]))
    print(f"report: {report}")


def _mined(ds: Dataset, prof: Profile, args: ReproArgs, work: Path, teacher: Path,
           samples: Samples) -> tuple[Path, Samples]:
    """The mined training candidates (``mined_negatives``) and the samples over them: the zero-shot DE's
    top ``score_depth`` over the whole corpus, without judged documents and without the ones the teacher
    scores like a judged positive."""
    from dualist.data import read_trec_run
    from dualist.stages import MineConfig, mine_stage

    path = mine_stage(ds, MineConfig(model=_student_model(prof, args.model), teacher=teacher, k=prof.score_depth,
                                     batch_size=prof.batch_size_infer), work / "runs" / "train.mined.trec")
    mined = read_trec_run(path)
    train_run = {q: mined[q] for q in samples.train_run if mined.get(q)}
    logger.info("mined negatives for %d of %d training queries", len(train_run), len(samples.train_run))
    return path, dataclasses.replace(samples, train_run=train_run, mined=True)


@dataclass(frozen=True)
class Pseudo:
    """The unjudged corpus-sentence queries (``pseudo_queries``) and what the students that use them read:
    the dataset with them added to ``train``, the training candidates and teacher scores with theirs."""

    dataset: Dataset
    candidates: Path
    scores: Path
    train_queries: tuple[str, ...] | None  # None: every query of the candidates, as without them

    def student(self, config: StudentConfig) -> StudentConfig:
        return dataclasses.replace(config, candidates=self.candidates, train_queries=self.train_queries,
                                   teacher_scores=self.scores if config.teacher_scores is not None else None)


def _pseudo(ds: Dataset, prof: Profile, args: ReproArgs, work: Path, teacher: Path, scores: Path,
            samples: Samples) -> Pseudo:
    """``pseudo_queries`` corpus sentences as training queries: BM25 candidates over the corpus, the
    teacher's scores of their top ``score_depth`` (queries it never trained on), both joined to the
    training queries' (``runs/train+pseudo.trec``, ``scores/train+pseudo.teacher.parquet``)."""
    from dualist import stages
    from dualist.data import read_trec_run, write_trec_run
    from dualist.data.pseudo import sentence_queries
    from dualist.training import combine_scores

    queries, qrels = sentence_queries(ds.corpus, prof.pseudo_queries, seed=args.seed, grade=samples.min_grade)
    logger.info("%d corpus sentences as unjudged training queries (%d asked for)", len(queries), prof.pseudo_queries)
    aug = stages.with_queries(ds, ("train", "pseudo"), queries, qrels)
    pseudo_cands = stages.candidates_stage(aug, stages.CandidatesConfig("pseudo", prof.candidates_k),
                                           work / "runs" / "pseudo.bm25.trec")
    pseudo_scores = stages.scores_stage(aug, stages.ScoresConfig(
        teacher=teacher, candidates=pseudo_cands, split="pseudo", depth=prof.score_depth,
        batch_size=prof.batch_size_infer, force=True), work / "scores" / "pseudo.teacher.parquet")
    assert pseudo_scores is not None  # unsharded: the whole cache
    joined = {**samples.train_run, **read_trec_run(pseudo_cands)}  # the training candidates, BM25's or mined
    candidates = work / "runs" / "train+pseudo.trec"
    write_trec_run(joined, candidates)
    combined = work / "scores" / "train+pseudo.teacher.parquet"
    combine_scores([scores, pseudo_scores], combined, split="train")
    train_ids = None if samples.train_ids is None else (*samples.train_ids, *sorted(queries))
    return Pseudo(aug, candidates, combined, train_ids)


def _bm25_weight(ds: Dataset, prof: Profile, work: Path, teacher: Path, cands: dict[str, Path],
                 samples: Samples) -> dict[str, Any]:
    """The teacher + BM25 ensemble's weight, chosen on the dev queries that pick checkpoints
    (:func:`dualist.stages.bm25_weight_stage`'s JSON)."""
    from dualist._io import read_json
    from dualist.stages import BM25WeightConfig, bm25_weight_stage

    path = bm25_weight_stage(ds, BM25WeightConfig(teacher=teacher, candidates=cands["dev"], split="dev",
                                                  depth=prof.dev_depth, select_queries=samples.select_ids,
                                                  batch_size=prof.batch_size_infer),
                             work / "scores" / "bm25_weight.json")
    return read_json(path)


def _fold_teachers(ds: Dataset, prof: Profile, args: ReproArgs, work: Path, cands: dict[str, Path],
                   samples: Samples, probe: Any) -> tuple[Path, ...]:
    """``teacher_folds`` teachers, fold ``f``'s trained on every training query outside fold ``f``."""
    from dualist import stages
    from dualist.training.folds import assign_folds, fold_datasets

    folds = assign_folds(list(ds.qrels_for("train")), prof.teacher_folds, samples.seed, texts=ds.queries)
    return tuple(stages.teacher_stage(fold_ds, _teacher(prof, args, cands, samples),
                                      work / "models" / f"teacher-fold-{f}", probes=[probe])
                 for f, fold_ds in enumerate(fold_datasets(ds, "train", folds)))


def _trained(work: Path, args: ReproArgs, students: dict[StudentRun, Path]) -> tuple[tuple[str, Path, Path], ...]:
    """(label, training folder, evaluation file) of the teacher and each student, for the report's
    checkpoint selection."""
    from dualist.report.labels import model_label

    runs = sorted(students, key=lambda r: (list(args.losses).index(r.loss), r.index))
    results = work / "results"
    return ((model_label("teacher"), work / "models" / "teacher", results / "teacher.json"),
            *((f"{model_label(r.loss)} (seed {r.seed})", work / "models" / r.folder,
               results / f"{r.result_name}.json") for r in runs))


def _teacher(prof: Profile, args: ReproArgs, cands: dict[str, Path], samples: Samples) -> TeacherConfig:
    from dualist.models import CrossEncoderConfig
    from dualist.stages import TeacherConfig
    from dualist.training import TrainConfig

    model = CrossEncoderConfig(model=args.model, num_layers=prof.teacher_layers, max_length=prof.teacher_max_length,
                               pooling=prof.teacher_pooling)
    train = TrainConfig(max_steps=prof.teacher_steps, batch_size=prof.teacher_batch_size, lr=prof.teacher_lr,
                        num_negatives=prof.teacher_negatives, negatives="range", neg_rank_min=1,
                        neg_rank_max=prof.candidates_k, seed=args.seed, device=args.device,
                        probe_every=prof.probe_every, select_metric="ndcg@10", eval_every=prof.teacher_eval_every,
                        max_positives=samples.max_positives, lean_activations=prof.lean_activations,
                        min_positive_grade=samples.min_grade, eval_start=prof.eval_start,
                        select_min_delta=prof.select_min_delta, select_alpha=prof.select_alpha)
    return TeacherConfig(model=model, train=train, candidates=cands["train"], dev_split="dev",
                         dev_candidates=cands["dev"], dev_depth=prof.dev_depth, select_queries=samples.select_ids,
                         batch_size=prof.batch_size_infer)


def _student_model(prof: Profile, model: str) -> DualEncoderConfig:
    from dualist.models import DualEncoderConfig

    return DualEncoderConfig(model=model, num_layers=prof.student_layers, pooling="mean", normalize=True,
                             similarity="dot", temperature=0.05, query_max_length=prof.query_max_length,
                             doc_max_length=prof.doc_max_length)


def _student(prof: Profile, args: ReproArgs, cands: dict[str, Path], samples: Samples, run: StudentRun,
             scores: Path, bm25_weight: float = 0.0) -> StudentConfig:
    from dualist.losses import SCORE_MATCHING
    from dualist.stages import StudentConfig
    from dualist.training import TrainConfig

    # Negatives come from the ranks the teacher scored, so every distillation loss sees teacher scores
    # for all of its candidates; the one-hot student draws from the same ranks for a fair comparison.
    train = TrainConfig(max_steps=prof.student_steps, batch_size=prof.student_batch_size, lr=prof.student_lr,
                        num_negatives=prof.student_negatives, negatives="range", neg_rank_min=1,
                        neg_rank_max=prof.score_depth, seed=run.seed, device=args.device,
                        probe_every=prof.probe_every, select_metric="ndcg@10", max_positives=samples.max_positives,
                        freeze_layers=prof.student_freeze_layers, lean_activations=prof.lean_activations,
                        min_positive_grade=samples.min_grade, eval_start=prof.eval_start,
                        select_min_delta=prof.select_min_delta, select_alpha=prof.select_alpha,
                        eval_every=prof.student_eval_every,
                        in_batch_negatives=prof.in_batch, in_batch_weight=prof.in_batch_weight,
                        teacher_calibration="fit" if prof.calibrate and run.loss in SCORE_MATCHING else "none",
                        teacher_bm25_weight=bm25_weight if requires_teacher(run.loss) else 0.0,
                        teacher_positive_margin=prof.teacher_positive_margin if requires_teacher(run.loss) else None)
    return StudentConfig(model=_student_model(prof, args.model), train=train, candidates=cands["train"],
                         loss=run.loss, teacher_scores=scores if requires_teacher(run.loss) else None,
                         dev_split="dev", dev_candidates=cands["dev"], dev_depth=prof.dev_depth,
                         train_queries=samples.train_ids, select_queries=samples.select_ids,
                         batch_size=prof.batch_size_infer)


def _evaluate(ds: Dataset, prof: Profile, args: ReproArgs, work: Path, cands: dict[str, Path], teacher: Path,
              students: dict[StudentRun, Path], shared: PrefixCache | None,
              memo: RerankMemo) -> tuple[EvaluatedModel, ...]:
    from dualist.stages import EvaluatedModel, EvaluationConfig, evaluation_stage

    def evaluate(name: str, model: Path | DualEncoderConfig | None) -> Path:
        cfg = EvaluationConfig(name=name, model=model, test_candidates=cands["test"], dev_candidates=cands["dev"],
                               train_candidates=cands["train"], rerank_depth=prof.rerank_depth,
                               dev_depth=prof.dev_depth, gap_queries=prof.gap_queries,
                               batch_size=prof.batch_size_infer, runs_dir=work / "runs")
        return evaluation_stage(ds, cfg, work / "results" / f"{name}.json", prefix_cache=shared, rerank_memo=memo)

    models = [EvaluatedModel("bm25", "bm25", (evaluate("bm25", None),)),
              EvaluatedModel("zeroshot", "dual_encoder", (evaluate("zeroshot", _student_model(prof, args.model)),)),
              EvaluatedModel("teacher", "cross_encoder", (evaluate("teacher", teacher),),
                             probes=work / "models" / "teacher" / "probes.jsonl")]
    for loss in args.losses:
        runs = [run for run in students if run.loss == loss]
        models.append(EvaluatedModel(loss, "dual_encoder",
                                     tuple(evaluate(run.result_name, students[run]) for run in runs),
                                     probes=work / "models" / runs[0].folder / "probes.jsonl"))
    return tuple(models)


def _label_agreement(ds: Dataset, scores: Path, min_grade: int) -> str:
    """The teacher's agreement with the training labels on the candidates it scored, logged and returned
    as one line for the report (:func:`dualist.diagnostics.label_agreement`)."""
    from dualist.diagnostics import label_agreement
    from dualist.training import TeacherScores

    line = label_agreement(TeacherScores.load(scores).as_dict(), ds.qrels_for("train"), min_grade=min_grade).summary()
    logger.info("%s", line)
    return line


def _targets_setting(ensemble: dict[str, Any] | None) -> str:
    """What the distilled students learn from, as the report's settings table says it."""
    if not ensemble:
        return "the teacher's scores"
    dev = ensemble["dev"]
    w = float(ensemble["weight"])
    figures = f"dev {ensemble['metric']}: teacher {dev['0.0']:.3f}, ensemble {dev[str(w)]:.3f}"
    if w == 0:
        return f"the teacher's scores (BM25 weight 0 chosen on dev, {figures})"
    return f"teacher + BM25 ensemble, BM25 weight {w:g} chosen on {ensemble['queries']} dev queries ({figures})"


def _settings(ds: Dataset, name: str, prof: Profile, args: ReproArgs, samples: Samples,
              resumed: bool, ensemble: dict[str, Any] | None = None, agreement: str = "",
              pseudo: Pseudo | None = None) -> dict[str, Any]:
    from dualist.stages.evaluation import HYBRID

    carved = getattr(ds, "carved_dev", None)
    settings: dict[str, Any] = {
        "dataset": name, "profile": dataclasses.asdict(prof), "seeds": args.seeds, "base_seed": args.seed,
        "losses": list(args.losses), "device": args.device,
        "dev split": (f"carved from train (fraction {carved['fraction']}, seed {carved['seed']})" if carved
                      else "the dataset's own dev split"),
        "queries (train/dev/test)": [len(ds.queries_for(s)) for s in ("train", "dev", "test")],
        "training queries scored and trained on": len(samples.train_run),
        "training candidates": ("mined (zero-shot DE over the corpus, teacher-denoised)" if samples.mined
                                else "BM25"),
        "positives per training query": samples.max_positives or "all",
        "dev queries for checkpoint selection": (len(samples.select_ids) if samples.select_ids is not None
                                                 else len(ds.queries_for("dev"))),
        "documents": len(ds.corpus),
        "training qrels": getattr(ds, "train_qrels_file", "qrels/train.tsv (BEIR)"),
        "hybrid retrieval": (f"BM25 top {HYBRID['depth']} + DE top {HYBRID['depth']}, reciprocal rank fusion "
                             f"(k = {HYBRID['rrf_k']}), best {HYBRID['k']} kept"),
        "positive grade": f">= {samples.min_grade}",
        "distillation targets": _targets_setting(ensemble),
        "teacher vs labels (training candidates)": agreement or "not computed",
        "unjudged training queries": (f"{len(pseudo.dataset.queries_for('pseudo'))} corpus sentences, trained on by "
                                      f"the distilled students{' and the one-hot DE' if prof.pseudo_onehot else ''}"
                                      if pseudo is not None else "none"),
        "resumed work folder": resumed}
    if args.override:
        settings["override"] = list(args.override)
    return settings

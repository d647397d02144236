"""Every stage of the pipeline, as a cached function shared by the command line and ``dualist repro``.

A stage takes a dataset (:class:`dualist.data.Dataset`), its typed config and an output path, and
returns the path of what it made. It fingerprints everything its output depends on (inputs,
settings, version), skips work whose marker carries the same fingerprint, resumes what an interrupted
run with the same fingerprint left, starts over otherwise, and marks what it finished
(:mod:`dualist.stages.markers`). The CLI subcommands and :mod:`dualist.repro` are plans over these
functions, never a second implementation of them.

=====================  =====================  ==============================================
stage                  config                 output
=====================  =====================  ==============================================
``candidates_stage``   ``CandidatesConfig``   ``runs/<split>.bm25.trec``
``mine_stage``         ``MineConfig``         ``runs/train.mined.trec`` (dense hard negatives)
``teacher_stage``      ``TeacherConfig``      ``models/teacher/`` (returns its ``model/``)
``scores_stage``       ``ScoresConfig``       ``scores/<split>.teacher.parquet``
``bm25_weight_stage``  ``BM25WeightConfig``   ``scores/bm25_weight.json`` (the teacher + BM25 ensemble's weight)
``student_stage``      ``StudentConfig``      ``models/student-<loss>-s<seed>/`` (returns ``model/``)
``evaluation_stage``   ``EvaluationConfig``   ``results/<name>.json`` (+ ``runs/test.<name>.*.trec``)
``report_stage``       ``ReportConfig``       ``report/`` and ``results.json``
=====================  =====================  ==============================================

Adding a stage (as ``mine`` was: dense negatives denoised by the teacher): a frozen ``MineConfig``
dataclass and ``mine_stage(dataset, config, out) -> Path`` in a module here, whose fingerprint lists
the dataset's, the config and the fingerprints of its input files, and which brackets its work with
:func:`~dualist.stages.markers.clear_done` / :func:`~dualist.stages.markers.mark_done` like
:func:`candidates_stage`; export both here; then call it from a CLI handler and from the repro plan,
and hand its output path to the stages that read it (the mined run is the ``candidates`` of the
scores and student stages).
"""

from __future__ import annotations

from dualist.stages.candidates import CandidatesConfig, candidates_stage
from dualist.stages.ensemble import BM25WeightConfig, bm25_weight_stage
from dualist.stages.evaluation import (RERANK_METRICS, RETRIEVAL_METRICS, EvaluationConfig, evaluation_stage,
                                       run_evaluate, run_hybrid, run_rerank, run_retrieve)
from dualist.stages.inputs import (dataset_fingerprint, graded_train_qrels, load_dataset, load_model,
                                   model_fingerprint, model_kind, resolve_dataset, split_queries, with_queries)
from dualist.stages.markers import clear_done, is_done, mark_done, marker_path
from dualist.stages.mining import MineConfig, mine_stage
from dualist.stages.report import EvaluatedModel, ReportConfig, report_stage
from dualist.stages.training import (ScoresConfig, StudentConfig, TeacherConfig, dev_eval_fn, scores_stage,
                                     student_stage, teacher_stage, training_probe)

__all__ = [
    "CandidatesConfig", "candidates_stage",
    "MineConfig", "mine_stage",
    "TeacherConfig", "teacher_stage",
    "ScoresConfig", "scores_stage",
    "StudentConfig", "student_stage",
    "BM25WeightConfig", "bm25_weight_stage",
    "EvaluationConfig", "evaluation_stage", "RERANK_METRICS", "RETRIEVAL_METRICS",
    "EvaluatedModel", "ReportConfig", "report_stage",
    "dev_eval_fn", "training_probe",
    "load_dataset", "resolve_dataset", "graded_train_qrels", "dataset_fingerprint", "load_model", "model_kind",
    "model_fingerprint", "split_queries", "with_queries",
    "marker_path", "is_done", "clear_done", "mark_done",
    "run_rerank", "run_retrieve", "run_hybrid", "run_evaluate",
]

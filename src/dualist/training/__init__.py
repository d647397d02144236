"""Training: the teacher (cross-encoder), its score cache, and the dual-encoder students.

- :class:`TrainConfig` — optimisation, examples, checkpoints, logging (one config for both models).
- :func:`train_loop` — the one loop both models train with (AdamW, warmup + linear decay, gradient
  accumulation, clipping, autocast, checkpoints, exact resume, best-checkpoint selection, probes).
- :func:`lr_at` — the learning-rate schedule, a pure function of the step.
- :class:`ExampleSource`, :class:`Batch` — training examples (query, positive, N negatives) per epoch.
- :func:`score_candidates`, :class:`TeacherScores` — the resumable, fingerprinted teacher score cache;
  :func:`combine_scores` joins several caches (of one teacher, or of fold-teachers and the teacher).
- :func:`train_teacher`, :func:`train_student` — the two training stages of docs/architecture.md §1.
"""

from __future__ import annotations

from dualist.training.config import TrainConfig
from dualist.training.examples import Batch, ExampleSource, TrainingExample, collate, with_in_batch_negatives
from dualist.training.checkpoints import latest_checkpoint
from dualist.training.loop import TrainResult, train_loop
from dualist.training.schedule import lr_at, warmup_steps_for
from dualist.training.scoring import MissingScoreError, TeacherScores, candidate_pairs, combine_scores, score_candidates
from dualist.training.student import student_step, train_student
from dualist.training.teacher import teacher_step, train_teacher

__all__ = [
    "TrainConfig",
    "train_loop",
    "TrainResult",
    "latest_checkpoint",
    "lr_at",
    "warmup_steps_for",
    "TrainingExample",
    "Batch",
    "ExampleSource",
    "collate",
    "with_in_batch_negatives",
    "TeacherScores",
    "MissingScoreError",
    "score_candidates",
    "combine_scores",
    "candidate_pairs",
    "train_teacher",
    "teacher_step",
    "train_student",
    "student_step",
]

"""Budgets of ``dualist repro``: ``quick`` (the README's main job) and ``full``.

Every number here is a budget, not a tuned hyper-parameter: learning rates and step counts were set
once from dev results and the machine's speed (2 CPU cores), never from test figures. ``--scale``
multiplies the step budgets (e.g. on a GPU).

The teacher's head is a choice made on dev: the full profile's 6-layer teacher starts as the zero-shot
dual-encoder (``teacher_pooling="dual"``), which was at or above the cosine head at every dev evaluation
on SciFact and NFCorpus (README, "A teacher that starts as the dual-encoder"), at about twice the
teacher's training and scoring time. The quick profile keeps the cosine head: its 3-layer teacher would
start as a 3-layer cut of the dual-encoder, below the cosine head on dev (0.421 against 0.447 on SciFact).
Conditions recorded with the cosine head at full carry ``--override teacher_pooling=cosine``.

So is the full profile's student budget: 120 steps with a dev evaluation every 20 (the checkpoint dev
picks among them) replaced 60 steps evaluated at the epoch's end and the last step, after the one-hot DE
rose on dev from 0.741 to 0.787 on SciFact (81 queries) and from 0.333 to 0.338 on NFCorpus (150
selection queries) with it (README, "Twice the student steps"); it doubles the students' training time.
Conditions recorded with 60 steps carry ``--override student_steps=60,student_eval_every=0``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

__all__ = ["Profile", "PROFILES", "get_profile"]


@dataclass
class Profile:
    name: str
    # models
    teacher_layers: int | None      # keep the first k layers of the backbone (None = all)
    student_layers: int | None
    teacher_max_length: int         # query + document tokens for the cross-encoder
    query_max_length: int
    doc_max_length: int
    # candidates and evaluation
    candidates_k: int = 100         # BM25 depth of every run
    rerank_depth: int = 100         # test re-rank depth (the paper's table: BM25 top-100)
    dev_depth: int = 30             # dev re-rank depth for checkpoint selection
    gap_queries: int = 100          # training queries re-ranked for the train-vs-test gap
    # teacher
    teacher_steps: int = 200
    teacher_batch_size: int = 8
    teacher_negatives: int = 7
    teacher_lr: float = 3e-5
    teacher_eval_every: int = 0     # also pick the teacher's checkpoint on dev every N steps (0: at epoch ends and the end)
    teacher_pooling: Literal["mean", "cls", "cosine", "dual"] = "mean"  # the teacher's head (CrossEncoderConfig.pooling)
    # teacher scores used for distillation: each training query's top-``score_depth`` BM25 candidates
    score_depth: int = 30
    # caps that bind only on datasets larger than SciFact (0 = no cap), so NFCorpus fits the same budget:
    score_queries: int = 800        # training queries the teacher scores and the students train on (seeded)
    score_positives: int = 5        # judged positives per query, best grade first: the teacher trains on them
                                    # and scores them, the students train on them
    select_queries: int = 150       # dev queries re-ranked to pick each model's best checkpoint (seeded)
    # students
    student_steps: int = 200
    student_batch_size: int = 16
    student_negatives: int = 7
    student_lr: float = 5e-5
    student_freeze_layers: int = 0  # students keep the embeddings and first N layers fixed (computed once per text)
    lean_activations: bool = False  # teacher and students recompute attention softmax and GELU in backward
    # the distillation recipe (each a switch, so an ablation turns one off with --override)
    train_qrels: Literal["auto", "beir"] = "auto"  # auto: the dataset's graded train qrels where it ships them
    graded_min_grade: int = 2       # with graded train qrels: the grade a positive needs (lower grades are unused)
    eval_start: bool = True         # the starting model is a checkpoint candidate (dev evaluation at step 0)
    select_min_delta: float = 0.0   # a dev evaluation replaces the kept checkpoint only by more than this
    select_alpha: float | None = None  # set: ... and only when a paired permutation test over the dev
                                    # queries gives p below this level (None: off)
    student_eval_every: int = 0     # also pick the students' checkpoint on dev every N steps
    teacher_folds: int = 0          # >= 2: cross-fitted teacher scores from this many fold-teachers (k more teacher
                                    # trainings); 0: the teacher scores the queries it trained on
    mined_negatives: bool = False   # students train on (and the teacher scores) the zero-shot DE's top-score_depth
                                    # over the whole corpus, judged documents and teacher-flagged ones removed
    teacher_bm25: bool = False      # distilled students learn from the teacher + BM25 ensemble, its BM25 weight
                                    # chosen on dev (0 when BM25 does not help there)
    calibrate: bool = True          # MSE, Margin-MSE and M3SE see teacher scores fitted to the student's scale
    teacher_positive_margin: float | None = None  # set: distilled students' targets put each positive at least
                                    # this far (teacher units) above the query's best negative (None: off)
    in_batch: bool = True           # every student also trains against the other queries' documents
    in_batch_weight: float = 1.0    # weight of the one-hot in-batch term added to a distillation loss
    pseudo_queries: int = 0         # > 0: distilled students also train on this many unjudged queries, each a
                                    # sentence of a different corpus document (dualist.data.pseudo), its BM25
                                    # top-score_depth scored by the teacher, its own document the positive
    pseudo_onehot: bool = False     # the one-hot student trains on those queries too (their own document the
                                    # label): the control that tells the teacher's part from the queries'
    # bookkeeping
    probe_every: int = 20
    batch_size_infer: int = 64
    notes: str = ""

    def scaled(self, factor: float) -> "Profile":
        if factor == 1:
            return self
        return dataclasses.replace(self, teacher_steps=max(1, round(self.teacher_steps * factor)),
                                   student_steps=max(1, round(self.student_steps * factor)))


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", teacher_layers=3, student_layers=None, teacher_max_length=128, query_max_length=32,
        doc_max_length=64, rerank_depth=30, dev_depth=20, gap_queries=60,
        teacher_steps=100, teacher_batch_size=8, teacher_negatives=3, teacher_lr=2e-4, teacher_pooling="cosine",
        score_depth=10, student_steps=20, student_batch_size=16, student_negatives=3, student_lr=1e-4,
        student_freeze_layers=3, lean_activations=True, probe_every=4,
        notes="smoke scale: a 3-layer teacher (the first 3 layers of MiniLM-L6), 6-layer students that train "
              "their top 3 layers for 20 steps, 64-token documents for the students, BM25 top-30 re-ranked; it "
              "shows every row and plot in minutes, not the paper's budget"),
    "full": Profile(
        name="full", teacher_layers=None, student_layers=None, teacher_max_length=160, query_max_length=32,
        doc_max_length=128, rerank_depth=100, dev_depth=30, gap_queries=50,
        teacher_steps=150, teacher_batch_size=8, teacher_negatives=3, teacher_lr=1e-4, teacher_eval_every=50,
        teacher_pooling="dual", score_depth=20, student_steps=120, student_eval_every=20, student_batch_size=16,
        student_negatives=3, student_lr=1e-4, student_freeze_layers=3, lean_activations=True, probe_every=10,
        notes="the paper's protocol at CPU scale: a 6-layer teacher reading 160 tokens that starts as the "
              "zero-shot dual-encoder and learns cross-attention on top of it (pooling=dual, chosen over the "
              "cosine head on dev), 6-layer students that train the top 3 layers for 120 steps, their "
              "checkpoint chosen on dev every 20 "
              "(the bottom 3 are frozen and computed once per text), BM25 top-100 re-ranked; --scale and "
              "--override raise the budgets on a GPU"),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None

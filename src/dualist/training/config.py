"""Training settings shared by the teacher (cross-encoder) and the student (dual-encoder)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dualist.config import opt
from dualist.errors import ConfigError

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """How to train: optimisation, examples (negatives), checkpoints and logging.

    One config for both models; :func:`dualist.training.train_loop` reads the optimisation and
    checkpoint fields, :class:`dualist.training.ExampleSource` the example fields.
    """

    epochs: int = opt(1, "passes over the training queries (ignored when max_steps is set)")
    max_steps: int | None = opt(None, "optimizer steps to take; overrides epochs")
    batch_size: int = opt(16, "training examples (queries) per micro-batch")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step")
    lr: float = opt(2e-5, "peak learning rate (AdamW)")
    weight_decay: float = opt(0.01, "AdamW weight decay; never applied to biases and LayerNorm weights")
    warmup_ratio: float = opt(0.1, "fraction of the optimizer steps spent warming the lr up linearly")
    max_grad_norm: float = opt(1.0, "clip the gradient to this global norm (<= 0: no clipping)")
    seed: int = opt(42, "seed for initialisation, negatives sampling, batch order and dropout")
    num_negatives: int = opt(7, "negatives per training example (columns 1..N of the score matrix)")
    negatives: Literal["top", "range"] = opt(
        "range", "top: the N best-ranked non-relevant candidates; range: N sampled from ranks "
                 "neg_rank_min..neg_rank_max, re-sampled every epoch")
    neg_rank_min: int = opt(1, "best candidate rank negatives may come from (1-based)")
    neg_rank_max: int = opt(100, "worst candidate rank negatives may come from")
    positives: Literal["all", "first"] = opt(
        "all", "all: one example per (query, positive) pair; first: one per query, with its "
               "highest-graded positive")
    max_positives: int = opt(
        0, "use at most this many positives per query, highest grade first (0: all); match the teacher "
           "score cache's --max-positives when distilling", fingerprint="if-set")
    min_positive_grade: int = opt(
        1, "judged grade a document needs to be a training positive; judged documents below it (grade 1.."
           "min_positive_grade-1) are never positives nor negatives (e.g. 2 on NFCorpus's graded train qrels: "
           "direct citations only)", fingerprint="if-set")
    in_batch_negatives: bool = opt(False, "also score every query against the other queries' documents "
                                          "(dual-encoder only; under torchrun, every process's documents: cross-batch "
                                          "negatives); with a distillation loss, adds in_batch_weight x the one-hot "
                                          "loss over every column, own and in-batch")
    in_batch_weight: float = opt(1.0, "with in_batch_negatives and a distillation loss: weight of the added "
                                      "one-hot term", fingerprint="if-set")
    teacher_calibration: Literal["none", "fit"] = opt(
        "none", "put the teacher's scores on the student's scale before a distillation loss sees them: fit = "
                "a * t + b with a, b matching the mean and std of the starting student's scores on the same "
                "training pairs (dualist.losses.calibration)", fingerprint="if-set")
    teacher_bm25_weight: float = opt(
        0.0, "distil a teacher + BM25 ensemble: add this many per-query standard deviations of BM25 score "
             "(in the teacher's own units) to each teacher score before the loss sees it "
             "(dualist.training.ensemble); 0 = the teacher alone", fingerprint="if-set")
    teacher_positive_margin: float | None = opt(
        None, "distil targets that agree with the labels: raise each positive's teacher score to at least the "
              "best negative's plus this margin (teacher units) before calibration and the loss see it "
              "(dualist.losses.label_floor); unset: the teacher's scores as they are", fingerprint="if-set")
    checkpoint_every: int = opt(0, "checkpoint every N optimizer steps (0: only at each epoch end)")
    keep_checkpoints: int = opt(2, "step checkpoints to keep, newest first (0: keep all)")
    log_every: int = opt(10, "log the running loss every N optimizer steps")
    amp: Literal["auto", "off", "bf16", "fp16"] = opt(
        "auto", "mixed precision: auto = bf16 on CUDA, off (float32) on CPU; bf16 on CPU is fast only "
        "with native bf16 (AVX512-BF16/AMX) and warns elsewhere")
    gradient_checkpointing: bool = opt(
        False, "recompute each transformer layer's activations in the backward pass instead of keeping "
               "them: much less memory for about a third more compute; the same losses",
        fingerprint=False)
    checkpoint_layers: int = opt(
        0, "with gradient_checkpointing: recompute only the first N transformer layers of each backbone, "
           "trading part of the memory saving for less recompute; 0 = every layer", fingerprint=False)
    lean_activations: bool = opt(
        False, "keep less for the backward pass and recompute it: attention dropout with a one-byte mask "
               "instead of three batch x heads x length x length float tensors, and the feed-forward GELU "
               "from its input (dualist.training.lean_activations); less memory and, on CPU, faster; the "
               "same losses without dropout, another attention-dropout random stream with it",
        fingerprint="if-set")
    grad_cache_chunk: int = opt(
        0, "dual-encoder only: gradient caching (GradCache) - embed the batch in chunks of N texts without "
           "keeping activations, take the loss and its gradients w.r.t. the embeddings, then re-embed chunk by "
           "chunk and backpropagate: a large in-batch-negative batch in the memory of N texts, for one extra "
           "forward pass; the same loss and gradients (dualist.training.grad_cache); 0 = off",
        fingerprint=False)
    freeze_layers: int = opt(
        0, "keep the embeddings and the first N transformer layers fixed and train the layers above "
           "(and a cross-encoder's head): a shorter backward pass, and a dual-encoder computes the frozen "
           "layers once per distinct text; 0 = train every layer", fingerprint="if-set")
    device: str = opt("auto", "torch device: auto, cpu, cuda, cuda:1, ...")
    probe_every: int = opt(0, "run the probes every N optimizer steps (0: only at the start and the end)")
    eval_every: int = opt(0, "also evaluate (and keep the best checkpoint) every N optimizer steps; 0: only at "
                             "each epoch end and the last step, which on a large dataset may be just once",
                          fingerprint="if-set")
    select_metric: str = opt("ndcg@10", "eval_fn metric (higher is better) that picks the best checkpoint")
    eval_start: bool = opt(True, "with an eval_fn: evaluate the starting model too (step 0), so a run whose "
                                 "training only hurts on dev keeps its start")
    select_min_delta: float = opt(0.0, "an evaluation replaces the kept checkpoint (the start, with eval_start) "
                                       "only when its select_metric is more than this above it, as early "
                                       "stopping's min_delta; 0: any gain", fingerprint="if-set")
    select_alpha: float | None = opt(
        None, "an evaluation replaces the kept checkpoint only when its per-query select_metric is above the "
              "kept one's with a paired permutation test p below this level (two-sided, e.g. 0.05): a dev "
              "gain must be one the dev queries can tell from chance; needs an eval_fn that returns per-query "
              "values (dev_eval_fn does); unset: any gain", fingerprint="if-set")

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "num_negatives": self.num_negatives, "epochs": self.epochs,
                    "neg_rank_min": self.neg_rank_min}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {value}{_flag(name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 or None, got {self.max_steps}{_flag('max_steps')}")
        if self.neg_rank_max < self.neg_rank_min:
            raise ConfigError(f"train.neg_rank_max ({self.neg_rank_max}) is below "
                              f"train.neg_rank_min ({self.neg_rank_min}){_flag('neg_rank_max')}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}{_flag('lr')}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}{_flag('weight_decay')}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1], got {self.warmup_ratio}{_flag('warmup_ratio')}")
        for name in ("checkpoint_every", "keep_checkpoints", "probe_every", "max_positives", "eval_every",
                     "freeze_layers", "grad_cache_chunk"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}{_flag(name)}")
        if self.min_positive_grade < 1:
            raise ConfigError(f"train.min_positive_grade must be >= 1, got {self.min_positive_grade}"
                              f"{_flag('min_positive_grade')}")
        if not self.select_min_delta >= 0:
            raise ConfigError(f"train.select_min_delta must be >= 0, got {self.select_min_delta}"
                              f"{_flag('select_min_delta')}")
        if self.select_alpha is not None and not 0 < self.select_alpha < 1:
            raise ConfigError(f"train.select_alpha must be in (0, 1) or unset, got {self.select_alpha}"
                              f"{_flag('select_alpha')}")
        if self.in_batch_weight < 0:
            raise ConfigError(f"train.in_batch_weight must be >= 0, got {self.in_batch_weight}{_flag('in_batch_weight')}")
        if not self.teacher_bm25_weight >= 0:
            raise ConfigError(f"train.teacher_bm25_weight must be >= 0, got {self.teacher_bm25_weight}"
                              f"{_flag('teacher_bm25_weight')}")
        if self.teacher_positive_margin is not None and not math.isfinite(self.teacher_positive_margin):
            raise ConfigError(f"train.teacher_positive_margin must be a finite number or unset, got "
                              f"{self.teacher_positive_margin}{_flag('teacher_positive_margin')}")
        if self.log_every < 1:
            raise ConfigError(f"train.log_every must be >= 1, got {self.log_every}{_flag('log_every')}")


def _flag(field: str) -> str:
    """The field as the command line spells it, for a message that a CLI user reads too."""
    return f" (--{field.replace('_', '-')})"

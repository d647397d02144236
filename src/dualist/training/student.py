"""Train the dual-encoder student: one-hot, or distilled from cached teacher scores with any loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dualist._io import fingerprint_obj
from dualist.errors import ConfigError
from dualist.training.config import TrainConfig
from dualist.training.examples import Batch, ExampleSource, with_in_batch_negatives
from dualist.training.loop import seed_everything, train_loop
from dualist.training.scoring import MissingScoreError, TeacherScores
from dualist.training.teacher import _run_ids

__all__ = ["train_student", "student_step"]

logger = logging.getLogger(__name__)


def student_step(model: Any, batch: Batch, loss_fn: Callable[..., torch.Tensor], *,
                 in_batch_negatives: bool = False) -> torch.Tensor:
    """Embed the queries and the batch's distinct documents once, score the grid, take the loss.

    Student scores are ``(B, C)``, or ``(B, C + (B - 1) * C)`` with in-batch negatives (see
    :func:`~dualist.training.examples.with_in_batch_negatives`); the teacher's ``(B, C)`` scores
    go to the loss alongside when the batch has them.
    """
    B, C = batch.shape
    q = model.embed_queries(batch.queries)  # (B, d)
    texts, index = batch.unique_docs()
    d = model.embed_docs(texts)[index.to(q.device)]  # (B, C, d)
    if in_batch_negatives:
        every_pair = model.similarity(q, d.reshape(B * C, -1)).view(B, B, C)  # query i x docs of query j
        scores = with_in_batch_negatives(every_pair, batch)
    else:
        scores = model.similarity(q, d)  # (B, C)
    teacher = batch.teacher_scores.to(scores.device) if batch.teacher_scores is not None else None
    return loss_fn(scores, teacher)


def train_student(dataset: Any, split: str, candidates_run: Mapping[str, Mapping[str, float]],
                  model_config: Any, train_config: TrainConfig, out_dir: str | Path, *,
                  loss: str = "m3se", loss_kwargs: dict[str, Any] | None = None,
                  teacher_scores: TeacherScores | None = None,
                  eval_fn: Callable[[Any], dict[str, float]] | None = None,
                  probes: Sequence[Callable[[Any, int], dict[str, Any]]] = (),
                  resume: bool = False) -> Path:
    """Train a :class:`~dualist.models.DualEncoder` with ``loss`` on ``split``; return the model folder.

    Examples are as for the teacher (query, positive, ``num_negatives`` negatives from
    ``candidates_run``); distillation losses (``requires_teacher``) read the teacher's score of
    every (query, document) cell from ``teacher_scores`` (:func:`score_candidates`).

    Raises:
        ConfigError: the loss needs teacher scores and none were given, or in-batch negatives were
            asked for with a distillation loss.
        MissingScoreError: a training pair has no teacher score (says which, and how to fix it).
    """
    from dualist.losses import build_loss
    from dualist.models import DualEncoder

    loss_fn = build_loss(loss, **(loss_kwargs or {}))
    distill = bool(getattr(loss_fn, "requires_teacher", False))
    if distill and teacher_scores is None:
        raise ConfigError(f"loss {loss!r} distills the teacher's scores, but no teacher_scores were given; "
                          "score the candidates first (`dualist score-teacher`, dualist.training.score_candidates) "
                          "or use loss='onehot'")
    if distill and train_config.in_batch_negatives:
        raise ConfigError(f"train.in_batch_negatives cannot be used with the distillation loss {loss!r}: the "
                          "teacher never scored a query against the other queries' documents, so there are no "
                          "teacher scores for the in-batch columns. Use loss='onehot' or turn it off.")
    if teacher_scores is not None and not distill:
        logger.info("loss %r does not use teacher scores; ignoring them", loss)
        teacher_scores = None

    seed_everything(train_config.seed)  # initialisation of any fresh layers follows the seed
    model = DualEncoder(model_config)
    if train_config.freeze_layers:  # frozen bottom layers: computed once per distinct text, not per batch
        model.cache_prefix(train_config.freeze_layers)
    source = ExampleSource(dataset, split, candidates_run, train_config, teacher_scores=teacher_scores)
    if teacher_scores is not None:
        _check_teacher_scores(source, teacher_scores)
    logger.info("student (%s): %d examples, %d batches per epoch", loss, source.num_examples, source.num_batches)

    def step_fn(model: Any, batch: Batch) -> torch.Tensor:
        return student_step(model, batch, loss_fn, in_batch_negatives=train_config.in_batch_negatives)

    inputs = {"split": split, "candidates": fingerprint_obj(_run_ids(candidates_run))}
    if teacher_scores is not None:
        inputs["teacher_scores"] = teacher_scores.fingerprint
    meta = {"stage": "train-student", "config": {"model": model_config, "loss": loss, "loss_kwargs": loss_kwargs or {}},
            "inputs": inputs}
    result = train_loop(model, source.batches, step_fn, train_config, out_dir,
                        steps_per_epoch=source.num_batches, eval_fn=eval_fn, probes=probes, resume=resume,
                        meta=meta)
    _card(dataset, split, train_config, result, loss)
    if model.prefix_cache is not None:
        logger.info("student (%s): %r", loss, model.prefix_cache)
    return result.model_dir


def _check_teacher_scores(source: ExampleSource, teacher_scores: TeacherScores) -> None:
    """Fail before training, not hours in, when the cache lacks a pair of the first epoch."""
    cfg = source.config
    for ex in source.examples(0):
        for did in (ex.positive, *ex.negatives):
            if (ex.qid, did) not in teacher_scores:
                try:
                    teacher_scores.lookup(ex.qid, did)
                except MissingScoreError as err:
                    if did == ex.positive:
                        raise MissingScoreError(
                            f"{err}. The pair is a training positive: the cache was scored with fewer positives "
                            f"per query than training uses (train.positives={cfg.positives!r}, "
                            f"train.max_positives={cfg.max_positives}); set train.max_positives to the cache's "
                            "--max-positives, or score every positive.") from None
                    raise MissingScoreError(
                        f"{err}. The pair is a training negative: negatives are drawn from ranks "
                        f"{cfg.neg_rank_min}..{cfg.neg_rank_max} of the candidate run ({cfg.negatives!r}); score "
                        f"at least that deep with the same run, or lower train.neg_rank_max.") from None


def _card(dataset: Any, split: str, train_config: Any, result: Any, loss: str) -> None:
    """Record loss, data, budget and the dev figure in the chosen model's card (README.md)."""
    from dualist.models.card import card_training_info, write_model_card

    dev = {train_config.select_metric: result.best_metric} if result.best_dir is not None else None
    write_model_card(result.model_dir, training=card_training_info(dataset, split, train_config, result, loss),
                     results={"dev": dev} if dev else None)

"""Train the cross-attention teacher: listwise softmax CE over (positive + N BM25 negatives) per query."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dualist._io import fingerprint_obj
from dualist.data.trec import rank_docs
from dualist.distributed import loss_share, process_rows, shard_range, world
from dualist.errors import ConfigError
from dualist.training.config import TrainConfig
from dualist.training.examples import Batch, ExampleSource
from dualist.training.loop import train_loop
from dualist.training.runtime import seed_everything

__all__ = ["train_teacher", "teacher_step", "ranked_candidate_ids"]

logger = logging.getLogger(__name__)


def teacher_step(model: Any, batch: Batch, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Score all ``B * (1 + N)`` (query, document) pairs jointly, reshape to ``(B, 1 + N)``, take the loss.

    Under torchrun each process scores its slice of the rows and returns its share of the loss
    (:func:`dualist.distributed.loss_share`), so the mean over processes is the whole batch's loss.
    """
    current = world()
    B, C = batch.shape
    rows = process_rows(B)  # a process without rows computes a stand-in row at weight 0
    local = batch.select(rows)
    queries = [q for q in local.queries for _ in range(C)]
    docs = [d for row in local.docs for d in row]
    scores = model(queries, docs).view(len(rows), C)
    return loss_fn(scores) * loss_share(len(shard_range(B, current.rank, current.size)), B, current.size)


def train_teacher(dataset: Any, split: str, candidates_run: Mapping[str, Mapping[str, float]],
                  model_config: Any, train_config: TrainConfig, out_dir: str | Path, *,
                  eval_fn: Callable[[Any], dict[str, float]] | None = None,
                  probes: Sequence[Callable[[Any, int], dict[str, Any]]] = (),
                  resume: bool = False) -> Path:
    """Fine-tune a :class:`~dualist.models.CrossEncoder` on ``split`` and return the model folder.

    Each example is a query with one positive and ``num_negatives`` negatives from
    ``candidates_run`` (see :mod:`dualist.training.examples`); the loss is the one-hot softmax
    cross-entropy (paper Eq. 1) over the ``1 + N`` cross-encoder scores.

    Returns ``out_dir/model`` (the best checkpoint on ``eval_fn``, else the final one); see
    :func:`dualist.training.train_loop` for the rest of ``out_dir``.
    """
    from dualist.losses import build_loss
    from dualist.models import CrossEncoder

    if train_config.in_batch_negatives:
        raise ConfigError("train.in_batch_negatives is for dual encoders: a cross-encoder would have to "
                          "run B x B x C extra (query, document) pairs; turn it off for the teacher")
    if train_config.grad_cache_chunk:
        raise ConfigError("train.grad_cache_chunk caches gradients of embeddings, which a cross-encoder does not "
                          "have; set it to 0 for the teacher (train.grad_accum splits its batches instead)")
    seed_everything(train_config.seed)  # the fresh scoring head is initialised from the seed
    model = CrossEncoder(model_config)
    loss_fn = build_loss("onehot")
    source = ExampleSource(dataset, split, candidates_run, train_config)
    logger.info("teacher: %d examples, %d batches per epoch", source.num_examples, source.num_batches)

    def step_fn(model: Any, batch: Batch) -> torch.Tensor:
        return teacher_step(model, batch, loss_fn)

    meta = {"stage": "train-teacher", "config": {"model": model_config, "loss": "onehot"},
            "inputs": {"split": split, "candidates": fingerprint_obj(ranked_candidate_ids(candidates_run))}}
    result = train_loop(model, source.batches, step_fn, train_config, out_dir,
                        steps_per_epoch=source.num_batches, eval_fn=eval_fn, probes=probes, resume=resume,
                        meta=meta)
    if world().is_main:  # rank 0 wrote the model folder
        _card(dataset, split, train_config, result, "onehot")
    return result.model_dir


def ranked_candidate_ids(run: Mapping[str, Mapping[str, float]]) -> dict[str, list[str]]:
    """The candidates in rank order: what a run contributes to training, for its fingerprint."""
    return {q: [d for d, _ in rank_docs(docs)] for q, docs in sorted(run.items())}


def _card(dataset: Any, split: str, train_config: Any, result: Any, loss: str) -> None:
    """Record loss, data, budget and the dev figure in the chosen model's card (README.md)."""
    from dualist.models.card import card_training_info, write_model_card

    dev = {train_config.select_metric: result.best_metric} if result.best_dir is not None else None
    write_model_card(result.model_dir, training=card_training_info(dataset, split, train_config, result, loss),
                     results={"dev": dev} if dev else None)

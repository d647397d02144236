"""Train the dual-encoder student: one-hot, or distilled from cached teacher scores with any loss."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dualist._io import fingerprint_obj
from dualist.distributed import gather_rows, loss_share, process_rows, shard_range, shard_sizes, world
from dualist.errors import ConfigError
from dualist.losses.calibration import Affine, Calibrated, fit_scale
from dualist.losses.in_batch import WithInBatchOneHot
from dualist.losses.label_floor import PositiveFloor
from dualist.training.config import TrainConfig
from dualist.training.examples import Batch, ExampleSource, with_in_batch_negatives
from dualist.training.loop import train_loop
from dualist.training.runtime import seed_everything
from dualist.training.scoring import MissingScoreError, TeacherScores
from dualist.training.teacher import ranked_candidate_ids

if TYPE_CHECKING:
    from dualist.models import PrefixCache

__all__ = ["train_student", "student_step", "embedding_loss", "fit_calibration", "teacher_with_bm25"]

logger = logging.getLogger(__name__)


def student_step(model: Any, batch: Batch, loss_fn: Callable[..., torch.Tensor], *,
                 in_batch_negatives: bool = False) -> torch.Tensor:
    """Embed the queries and the batch's distinct documents once, score the grid, take the loss.

    Student scores are ``(B, C)``, or ``(B, C + (B - 1) * C)`` with in-batch negatives (see
    :func:`~dualist.training.examples.with_in_batch_negatives`); the teacher's ``(B, C)`` scores
    go to the loss alongside when the batch has them.

    Under torchrun each process embeds only its slice of the rows (:func:`dualist.distributed.process_rows`),
    the in-batch columns are every process's documents (:func:`dualist.distributed.gather_rows`), and
    the returned loss is this process's share (:func:`dualist.distributed.loss_share`): averaged over
    the processes, loss and gradients are those of one process on the whole batch.
    """
    rows = process_rows(len(batch))
    local = batch.select(rows)
    q = model.embed_queries(local.queries)  # (R, d)
    texts, index = local.unique_docs()
    return embedding_loss(model, q, model.embed_docs(texts), index, batch, rows, loss_fn, in_batch_negatives)


def embedding_loss(model: Any, q: torch.Tensor, docs: torch.Tensor, index: torch.Tensor, batch: Batch,
                   rows: range, loss_fn: Callable[..., torch.Tensor], in_batch_negatives: bool) -> torch.Tensor:
    """The loss of rows ``rows`` of ``batch`` (:func:`~dualist.distributed.process_rows`) from their embeddings: queries
    ``q (R, d)`` and the distinct documents ``docs`` with ``index (R, C)`` into them; scaled to this
    process's share of the batch."""
    B, C = batch.shape
    current = world()
    mine = len(shard_range(B, current.rank, current.size))  # 0 when ``rows`` is the stand-in row
    d = docs[index.to(q.device)].view(len(rows), C, docs.shape[-1])  # (R, C, d)
    if in_batch_negatives:
        # a stand-in row is gathered too (same collectives as the others) and dropped: its size is 0
        every_doc = gather_rows(d, shard_sizes(B, current.size)) if current.distributed else d  # (B, C, d)
        every_pair = model.similarity(q, every_doc.reshape(B * C, every_doc.shape[-1])).view(len(rows), B, C)
        scores = with_in_batch_negatives(every_pair, batch, rows=rows)
    else:
        scores = model.similarity(q, d)  # (R, C)
    teacher = batch.teacher_scores[rows.start:rows.stop].to(scores.device) if batch.teacher_scores is not None else None
    return loss_fn(scores, teacher) * loss_share(mine, B, current.size)


def train_student(dataset: Any, split: str, candidates_run: Mapping[str, Mapping[str, float]],
                  model_config: Any, train_config: TrainConfig, out_dir: str | Path, *,
                  loss: str = "m3se", loss_kwargs: dict[str, Any] | None = None,
                  teacher_scores: TeacherScores | None = None,
                  eval_fn: Callable[[Any], dict[str, float]] | None = None,
                  probes: Sequence[Callable[[Any, int], dict[str, Any]]] = (),
                  resume: bool = False, prefix_cache: PrefixCache | None = None) -> Path:
    """Train a :class:`~dualist.models.DualEncoder` with ``loss`` on ``split``; return the model folder.

    Examples are as for the teacher (query, positive, ``num_negatives`` negatives from
    ``candidates_run``); distillation losses (``requires_teacher``) read the teacher's score of
    every (query, document) cell from ``teacher_scores`` (:func:`score_candidates`).

    With ``train_config.in_batch_negatives`` a distillation loss is applied to the own candidates and
    ``in_batch_weight`` x the one-hot loss to all columns (:class:`~dualist.losses.in_batch.WithInBatchOneHot`);
    with ``teacher_bm25_weight`` > 0 the targets are the teacher + BM25 ensemble's
    (:func:`teacher_with_bm25`); with ``teacher_positive_margin`` set, no target ranks a judged negative
    above the positive (:class:`~dualist.losses.label_floor.PositiveFloor`, in the teacher's units); with
    ``teacher_calibration="fit"`` the targets are then put on the starting student's scale
    (:func:`fit_calibration`), and the fitted map is recorded in ``dualist.json``.

    With ``train_config.freeze_layers`` the frozen bottom layers' states are computed once per distinct
    text (:class:`~dualist.models.PrefixCache`); pass ``prefix_cache`` to share them with other models
    of the same start and ``freeze_layers`` (the other students of a comparison, their evaluation): a
    speed setting, the same results up to float rounding.

    Raises:
        ConfigError: the loss needs teacher scores and none were given, or teacher calibration or a
            BM25 weight was asked for with a loss that uses no teacher scores.
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
    if train_config.teacher_calibration != "none" and not distill:
        raise ConfigError(f"train.teacher_calibration={train_config.teacher_calibration!r} calibrates teacher "
                          f"scores, but loss {loss!r} uses none; set it to 'none' or pick a distillation loss")
    if train_config.teacher_bm25_weight and not distill:
        raise ConfigError(f"train.teacher_bm25_weight={train_config.teacher_bm25_weight} adds BM25 to the teacher's "
                          f"scores, but loss {loss!r} uses none; set it to 0 or pick a distillation loss")
    if train_config.teacher_positive_margin is not None and not distill:
        raise ConfigError(f"train.teacher_positive_margin={train_config.teacher_positive_margin} changes teacher "
                          f"scores, but loss {loss!r} uses none; unset it or pick a distillation loss")
    if teacher_scores is not None and not distill:
        logger.info("loss %r does not use teacher scores; ignoring them", loss)
        teacher_scores = None
    if teacher_scores is not None and train_config.teacher_bm25_weight:
        teacher_scores = teacher_with_bm25(dataset, teacher_scores, train_config.teacher_bm25_weight)

    if prefix_cache is not None and not train_config.freeze_layers:
        raise ConfigError("train_student was given a prefix_cache, but train.freeze_layers is 0: only frozen "
                          "bottom layers can be cached; set freeze_layers or pass no cache")

    seed_everything(train_config.seed)  # initialisation of any fresh layers follows the seed
    model = DualEncoder(model_config)
    if train_config.freeze_layers:  # frozen bottom layers: computed once per distinct text, not per batch
        model.cache_prefix(train_config.freeze_layers, prefix_cache)
    source = ExampleSource(dataset, split, candidates_run, train_config, teacher_scores=teacher_scores)
    if teacher_scores is not None:
        _check_teacher_scores(source, teacher_scores, dataset, split, candidates_run)
    logger.info("student (%s): %d examples, %d batches per epoch", loss, source.num_examples, source.num_batches)

    calibration = None
    if distill and train_config.teacher_calibration == "fit":
        calibration = fit_calibration(model, source)
        logger.info("student (%s): teacher scores calibrated as %.4g * t + %.4g", loss, calibration.scale,
                    calibration.bias)
        loss_fn = Calibrated(loss_fn, calibration)
    if distill and train_config.teacher_positive_margin is not None:  # raw teacher units, before calibration
        loss_fn = PositiveFloor(loss_fn, train_config.teacher_positive_margin)
    if distill and train_config.in_batch_negatives:  # the teacher scored no in-batch pair: labels only there
        loss_fn = WithInBatchOneHot(loss_fn, train_config.in_batch_weight)

    def one_pass(model: Any, batch: Batch) -> torch.Tensor:
        return student_step(model, batch, loss_fn, in_batch_negatives=train_config.in_batch_negatives)

    step_fn: Callable[[Any, Batch], torch.Tensor] = one_pass
    if train_config.grad_cache_chunk:
        from dualist.training.grad_cache import GradCacheStep

        step_fn = GradCacheStep(loss_fn, chunk_size=train_config.grad_cache_chunk,
                                in_batch_negatives=train_config.in_batch_negatives)

    inputs = {"split": split, "candidates": fingerprint_obj(ranked_candidate_ids(candidates_run))}
    if teacher_scores is not None:
        inputs["teacher_scores"] = teacher_scores.fingerprint
    meta = {"stage": "train-student", "config": {"model": model_config, "loss": loss, "loss_kwargs": loss_kwargs or {}},
            "inputs": inputs}
    if calibration is not None:
        meta["teacher_calibration"] = dataclasses.asdict(calibration)
    result = train_loop(model, source.batches, step_fn, train_config, out_dir,
                        steps_per_epoch=source.num_batches, eval_fn=eval_fn, probes=probes, resume=resume,
                        meta=meta)
    if world().is_main:  # rank 0 wrote the model folder
        _card(dataset, split, train_config, result, loss)
    if model.prefix_cache is not None:
        logger.info("student (%s): %s", loss, repr(model.prefix_cache))  # its state now, not at output
    return result.model_dir


def teacher_with_bm25(dataset: Any, teacher_scores: TeacherScores, weight: float) -> TeacherScores:
    """The teacher + BM25 ensemble's scores of every cached pair (:mod:`dualist.training.ensemble`):
    BM25 (the candidates' default settings) indexed over ``dataset``'s corpus scores each pair, wherever
    it ranks, and ``weight`` of it joins the teacher's score."""
    from dualist.candidates import BM25Retriever
    from dualist.training.ensemble import with_bm25

    pairs = teacher_scores.as_dict()
    bm25 = BM25Retriever().index(dataset).score_pairs({q: dataset.queries[q] for q in pairs},
                                                      {q: list(docs) for q, docs in pairs.items()})
    logger.info("teacher scores of %d pairs joined by BM25 with weight %g", len(teacher_scores), weight)
    return with_bm25(teacher_scores, bm25, weight)


def fit_calibration(model: Any, source: ExampleSource, *, max_examples: int = 256) -> Affine:
    """Fit :func:`dualist.losses.calibration.fit_scale` on the starting student's scores of the first
    ``max_examples`` training examples of epoch 0 (their own candidates, no in-batch columns)."""
    student, teacher = [], []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in source.batches(0):
                q = model.embed_queries(batch.queries)
                texts, index = batch.unique_docs()
                student.append(model.similarity(q, model.embed_docs(texts)[index.to(q.device)]).float().cpu())
                teacher.append(batch.teacher_scores)
                if sum(len(s) for s in student) >= max_examples:
                    break
    finally:
        model.train(was)
    return fit_scale(torch.cat(student)[:max_examples], torch.cat(teacher)[:max_examples])


def _check_teacher_scores(source: ExampleSource, teacher_scores: TeacherScores, dataset: Any, split: str,
                          candidates_run: Mapping[str, Mapping[str, float]]) -> None:
    """Fail before training, not hours in, when the cache lacks a pair of the first epoch."""
    cfg = source.config
    for ex in source.examples(0):
        for did in (ex.positive, *ex.negatives):
            if (ex.qid, did) not in teacher_scores:
                try:
                    teacher_scores.lookup(ex.qid, did)
                except MissingScoreError as err:
                    other = _other_inputs(teacher_scores, dataset, split, candidates_run)
                    if other:
                        where = f" in {teacher_scores.path}" if teacher_scores.path else ""
                        raise MissingScoreError(
                            f"no teacher score for query {ex.qid!r} and document {did!r}{where}: the cache was "
                            f"made {other}. Score this run's candidates "
                            f"('dualist score-teacher --split {split} --candidates <the run given here>') "
                            "and pass that file.") from None
                    if did == ex.positive:
                        raise MissingScoreError(
                            f"{err}. The pair is a training positive: the cache was scored with fewer positives "
                            f"per query than training uses (train.positives={cfg.positives!r}, "
                            f"train.max_positives={cfg.max_positives}); train with --max-positives set to the "
                            "cache's --max-positives (--positives first for 1), or score every positive.") from None
                    raise MissingScoreError(
                        f"{err}. The pair is a training negative: negatives are drawn from ranks "
                        f"{cfg.neg_rank_min}..{cfg.neg_rank_max} of the candidate run ({cfg.negatives!r}); score "
                        "at least that deep with the same run (score-teacher --depth), or lower "
                        "--neg-rank-max (train.neg_rank_max).") from None


def _other_inputs(teacher_scores: TeacherScores, dataset: Any, split: str,
                  candidates_run: Mapping[str, Mapping[str, float]]) -> str:
    """How the cache's recorded inputs differ from this training run's ("" when they match or are unknown)."""
    from dualist.data.trec import rank_docs

    meta = teacher_scores.meta
    if meta.get("split") not in (None, split):
        return f"for split {meta['split']!r}, and training reads split {split!r}"
    if meta.get("candidates") is not None:
        queries = dataset.queries_for(split)
        ranked = {q: [d for d, _ in rank_docs(candidates_run[q])] for q in sorted(candidates_run) if q in queries}
        if fingerprint_obj(ranked) != meta["candidates"]:
            return "from another candidate run (or another dataset) than the --candidates given here"
    return ""



def _card(dataset: Any, split: str, train_config: Any, result: Any, loss: str) -> None:
    """Record loss, data, budget and the dev figure in the chosen model's card (README.md)."""
    from dualist.models.card import card_training_info, write_model_card

    dev = {train_config.select_metric: result.best_metric} if result.best_dir is not None else None
    write_model_card(result.model_dir, training=card_training_info(dataset, split, train_config, result, loss),
                     results={"dev": dev} if dev else None)

"""Teacher and student training end to end on the tiny BEIR fixture with a tiny random BERT (seconds)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dualist._io import read_json, read_meta
from dualist.data import rank_docs
from dualist.errors import ConfigError
from dualist.models import CrossEncoder, CrossEncoderConfig, DualEncoder, DualEncoderConfig
from dualist.training import (ExampleSource, MissingScoreError, TeacherScores, TrainConfig, student_step,
                              train_student, train_teacher)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fake_teacher(tiny_train) -> TeacherScores:
    """Scores as a good teacher would give: positives far above the BM25-ordered negatives."""
    ds, run = tiny_train
    qrels = ds.qrels_for("train")
    return TeacherScores({q: {d: s / 10 for d, s in run[q].items()} | {d: 5.0 for d, r in qrels[q].items() if r > 0}
                          for q in run})


def teacher_config(bert) -> CrossEncoderConfig:
    return CrossEncoderConfig(model=str(bert), max_length=64)


def student_config(bert) -> DualEncoderConfig:
    return DualEncoderConfig(model=str(bert), query_max_length=16, doc_max_length=48, temperature=0.05)


def train(**kw) -> TrainConfig:
    return TrainConfig(**{"batch_size": 8, "num_negatives": 3, "lr": 1e-2, "device": "cpu", **kw})


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def metric_rows(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


# ---------------------------------------------------------------------------------------------- teacher
def test_teacher_training_reduces_the_loss(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    path = train_teacher(ds, "train", run, teacher_config(tiny_bert), train(max_steps=30), tmp_path)
    got = losses(tmp_path)
    assert len(got) == 30 and np.mean(got[-5:]) < np.mean(got[:5]) - 0.1  # starts at ln 4 = 1.386
    assert path == tmp_path / "model"
    teacher = CrossEncoder.from_pretrained(path)
    assert teacher.score(["protein folding"], [ds.doc_text("d000")]).shape == (1,)
    meta = read_meta(tmp_path)
    assert meta["stage"] == "train-teacher" and meta["config"]["loss"] == "onehot"
    assert meta["config"]["model"]["max_length"] == 64 and meta["inputs"]["candidates"]


def test_teacher_runs_are_deterministic(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    cfg = train(max_steps=3)
    a = CrossEncoder.from_pretrained(train_teacher(ds, "train", run, teacher_config(tiny_bert), cfg, tmp_path / "a"))
    b = CrossEncoder.from_pretrained(train_teacher(ds, "train", run, teacher_config(tiny_bert), cfg, tmp_path / "b"))
    assert max_abs_diff(a, b) == 0.0
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")


def test_teacher_refuses_in_batch_negatives(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    with pytest.raises(ConfigError, match="dual encoders"):
        train_teacher(ds, "train", run, teacher_config(tiny_bert), train(in_batch_negatives=True), tmp_path)


# ---------------------------------------------------------------------------------------------- student
def test_student_m3se_reduces_the_loss(tiny_train, tiny_bert, fake_teacher, tmp_path):
    ds, run = tiny_train
    path = train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=30), tmp_path,
                         loss="m3se", teacher_scores=fake_teacher)
    got = losses(tmp_path)
    assert np.mean(got[-5:]) < 0.85 * np.mean(got[:5])
    assert DualEncoder.from_pretrained(path).encode_queries(["dna"]).shape == (1, 32)
    meta = read_meta(tmp_path)
    assert meta["config"]["loss"] == "m3se" and meta["inputs"]["teacher_scores"] == fake_teacher.fingerprint


def test_student_resumed_run_equals_uninterrupted_run(tiny_train, tiny_bert, fake_teacher, tmp_path):
    """Killed after step 4 (checkpoint at 3, mid-epoch), resumed: same weights, same metrics."""
    ds, run = tiny_train
    cfg = train(max_steps=6, batch_size=4, checkpoint_every=3, probe_every=1, lr=1e-3)  # 16 batches per epoch

    def crash_after_step_4(model, step):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")
        return {}

    def student(out, **kw):
        return train_student(ds, "train", run, student_config(tiny_bert), cfg, out, loss="m3se",
                             teacher_scores=fake_teacher, **kw)

    full = DualEncoder.from_pretrained(student(tmp_path / "full"))
    with pytest.raises(KeyboardInterrupt):
        student(tmp_path / "cut", probes=[crash_after_step_4])
    assert [p.name for p in (tmp_path / "cut/checkpoints").iterdir()] == ["step-3"]
    assert read_json(tmp_path / "cut/checkpoints/step-3/trainer_state.json")["batch_in_epoch"] == 3
    resumed = DualEncoder.from_pretrained(student(tmp_path / "cut", resume=True))
    assert max_abs_diff(full, resumed) <= 1e-6
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "cut")
    assert [r["step"] for r in metric_rows(tmp_path / "cut")] == [1, 2, 3, 4, 5, 6]


def test_gradient_checkpointing_gives_the_same_run_with_dropout_on(tiny_train, tiny_bert, fake_teacher, tmp_path):
    """Recomputed activations reuse the saved RNG state: same dropout masks, same losses and weights."""
    ds, run = tiny_train

    def student(out, **kw):
        return DualEncoder.from_pretrained(train_student(
            ds, "train", run, student_config(tiny_bert), train(max_steps=4, lr=1e-3, **kw), out,
            loss="margin_mse", teacher_scores=fake_teacher))

    plain, recomputed = student(tmp_path / "plain"), student(tmp_path / "ckpt", gradient_checkpointing=True)
    assert losses(tmp_path / "plain") == pytest.approx(losses(tmp_path / "ckpt"), rel=1e-5)
    assert max_abs_diff(plain, recomputed) <= 1e-5
    partial = student(tmp_path / "ckpt1", gradient_checkpointing=True, checkpoint_layers=1)
    assert losses(tmp_path / "plain") == pytest.approx(losses(tmp_path / "ckpt1"), rel=1e-5)
    assert max_abs_diff(plain, partial) <= 1e-5
    assert read_meta(tmp_path / "ckpt")["config"]["train"]["gradient_checkpointing"] is True


def test_gradient_checkpointing_switches_on_every_backbone(tiny_bert):
    from dualist.training.runtime import enable_gradient_checkpointing

    de = DualEncoder(student_config(tiny_bert))
    assert enable_gradient_checkpointing(de) == 1  # shared towers: one backbone
    layers = [m for m in de.modules() if hasattr(m, "gradient_checkpointing")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    first = DualEncoder(student_config(tiny_bert))
    enable_gradient_checkpointing(first, layers=1)  # the tiny BERT has two layers: only the first recomputes
    assert [m.gradient_checkpointing for m in first.modules() if hasattr(m, "gradient_checkpointing")
            and type(m).__name__.endswith("Layer")] == [True, False]
    assert enable_gradient_checkpointing(CrossEncoder(teacher_config(tiny_bert))) == 1
    with pytest.raises(ConfigError, match="no Hugging Face backbone"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_student_gradient_accumulation_matches_a_bigger_batch(tiny_train, no_dropout_bert, tmp_path):
    ds, run = tiny_train
    kw = {"max_steps": 1, "max_grad_norm": 0.0, "lr": 1e-3}
    a = train_student(ds, "train", run, student_config(no_dropout_bert), train(batch_size=4, grad_accum=2, **kw),
                      tmp_path / "a", loss="onehot")
    b = train_student(ds, "train", run, student_config(no_dropout_bert), train(batch_size=8, grad_accum=1, **kw),
                      tmp_path / "b", loss="onehot")
    start = DualEncoder(student_config(no_dropout_bert))
    a, b = DualEncoder.from_pretrained(a), DualEncoder.from_pretrained(b)
    # Adam's first step moves each weight by about lr * sign(grad); rounding differences between the
    # two ways of summing matter only for weights whose gradient is ~0, so allow 5% of lr
    assert max_abs_diff(start, b) > 0.5 * kw["lr"]
    assert max_abs_diff(a, b) < 0.05 * kw["lr"]
    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "b"), abs=1e-5)


def test_in_batch_negatives_add_every_other_querys_documents(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    cfg = train(batch_size=3, num_negatives=2, in_batch_negatives=True)
    batch = next(ExampleSource(ds, "train", run, cfg).batches(0))
    seen = {}

    def spy_loss(student_scores, teacher_scores=None):
        seen["shape"] = tuple(student_scores.shape)
        return student_scores.mean()

    student_step(DualEncoder(student_config(tiny_bert)), batch, spy_loss, in_batch_negatives=True)
    assert seen["shape"] == (3, 3 + 2 * 3)  # own 1 + 2 columns, then 3 columns from each of the other 2
    train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=2, in_batch_negatives=True),
                  tmp_path, loss="onehot")
    assert len(losses(tmp_path)) == 2


def test_in_batch_negatives_with_a_distillation_loss_add_a_weighted_one_hot_term(tiny_train, tiny_bert, fake_teacher,
                                                                                  tmp_path):
    ds, run = tiny_train
    cfg = train(batch_size=3, num_negatives=2, in_batch_negatives=True, in_batch_weight=0.5, negatives="top")
    batch = next(ExampleSource(ds, "train", run, cfg, teacher_scores=fake_teacher).batches(0))
    de = DualEncoder(student_config(tiny_bert)).eval()
    from dualist.losses import build_loss
    from dualist.losses.in_batch import WithInBatchOneHot

    with torch.no_grad():
        combined = student_step(de, batch, WithInBatchOneHot(build_loss("margin_mse"), 0.5), in_batch_negatives=True)
        own = student_step(de, batch, build_loss("margin_mse"))
        every = student_step(de, batch, lambda scores, _: build_loss("onehot")(scores), in_batch_negatives=True)
    assert combined.item() == pytest.approx(own.item() + 0.5 * every.item(), rel=1e-5)
    train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=2, in_batch_negatives=True), tmp_path,
                  loss="margin_mse", teacher_scores=fake_teacher)
    assert len(losses(tmp_path)) == 2


def test_teacher_calibration_fits_the_starting_students_scale_and_is_recorded(tiny_train, tiny_bert, fake_teacher,
                                                                             tmp_path):
    from dualist.losses.calibration import fit_scale
    from dualist.training.student import fit_calibration

    ds, run = tiny_train
    cfg = train(max_steps=1, teacher_calibration="fit", num_negatives=3)
    source = ExampleSource(ds, "train", run, cfg, teacher_scores=fake_teacher)
    torch.manual_seed(cfg.seed)
    affine = fit_calibration(DualEncoder(student_config(tiny_bert)), source, max_examples=8)
    # by hand: the same 8 examples' scores from the starting student
    de = DualEncoder(student_config(tiny_bert)).eval()
    batch = next(source.batches(0))
    with torch.no_grad():
        s = student_step(de, batch, lambda scores, teacher: scores)[:8]
    t = batch.teacher_scores[:8]
    assert (affine.scale, affine.bias) == pytest.approx(tuple(vars(fit_scale(s, t)).values()), rel=1e-5)
    calibrated = affine(t)
    centred = lambda x: x - x.mean(1, keepdim=True)  # noqa: E731
    assert float(centred(calibrated).pow(2).sum()) == pytest.approx(float(centred(s).pow(2).sum()), rel=1e-5)
    assert float(calibrated.mean()) == pytest.approx(float(s.mean()), abs=1e-4)
    train_student(ds, "train", run, student_config(tiny_bert), cfg, tmp_path, loss="mse", teacher_scores=fake_teacher)
    recorded = read_meta(tmp_path)["teacher_calibration"]
    assert recorded["scale"] > 0 and set(recorded) == {"scale", "bias"}
    with pytest.raises(ConfigError, match="teacher_calibration"):
        train_student(ds, "train", run, student_config(tiny_bert), cfg, tmp_path / "onehot", loss="onehot")


def test_distillation_needs_teacher_scores(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    with pytest.raises(ConfigError, match="'kl' distills.*score-teacher"):
        train_student(ds, "train", run, student_config(tiny_bert), train(), tmp_path, loss="kl")


def test_a_pair_missing_from_the_teacher_cache_is_named_before_training(tiny_train, tiny_bert, fake_teacher, tmp_path):
    ds, run = tiny_train
    shallow = fake_teacher.as_dict()
    qid = sorted(shallow)[0]
    dropped = next(d for d, _ in rank_docs(run[qid]) if ds.qrels_for("train")[qid].get(d, 0) <= 0)  # 1st negative
    del shallow[qid][dropped]
    with pytest.raises(MissingScoreError, match=rf"query '{qid}' and document '{dropped}'.*negative.*ranks 1\.\.100"):
        train_student(ds, "train", run, student_config(tiny_bert), train(negatives="top"), tmp_path, loss="m3se",
                      teacher_scores=TeacherScores(shallow))
    assert not (tmp_path / "metrics.jsonl").exists()  # failed before the first step


def test_a_positive_missing_from_a_capped_cache_is_named_and_max_positives_fixes_it(tiny_train, tiny_bert, fake_teacher,
                                                                                    tmp_path):
    ds, run = tiny_train
    qrels = ds.qrels_for("train")
    capped = fake_teacher.as_dict()
    qid = sorted(capped)[0]
    weaker = [d for d, g in qrels[qid].items() if g == 1][0]  # each tiny query has a grade-2 and a grade-1 positive
    del capped[qid][weaker]
    with pytest.raises(MissingScoreError, match=rf"'{qid}' and document '{weaker}'.*training positive.*max_positives"):
        train_student(ds, "train", run, student_config(tiny_bert), train(negatives="top"), tmp_path / "all",
                      loss="m3se", teacher_scores=TeacherScores(capped))
    path = train_student(ds, "train", run, student_config(tiny_bert), train(negatives="top", max_positives=1),
                         tmp_path / "one", loss="m3se", teacher_scores=TeacherScores(capped))
    assert path.exists()


def test_a_teacher_bm25_weight_trains_on_the_ensemble_and_is_refused_without_a_teacher(tiny_train, tiny_bert,
                                                                                        fake_teacher, tmp_path):
    from dualist.candidates import BM25Retriever
    from dualist.training.ensemble import add_bm25
    from dualist.training.student import teacher_with_bm25

    ds, run = tiny_train
    fused = teacher_with_bm25(ds, fake_teacher, 0.5)
    pairs = fake_teacher.as_dict()
    bm25 = BM25Retriever().index(ds).score_pairs(ds.queries, pairs)
    assert fused.as_dict() == add_bm25(pairs, bm25, 0.5) != pairs
    plain = train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=1), tmp_path / "plain",
                          loss="kl", teacher_scores=fake_teacher)
    ensemble = train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=1, teacher_bm25_weight=0.5),
                             tmp_path / "ensemble", loss="kl", teacher_scores=fake_teacher)
    meta = lambda p: read_meta(p.parent)  # noqa: E731
    assert meta(ensemble)["inputs"]["teacher_scores"] == fused.fingerprint != meta(plain)["inputs"]["teacher_scores"]
    assert meta(ensemble)["config"]["train"]["teacher_bm25_weight"] == 0.5
    with pytest.raises(ConfigError, match="teacher_bm25_weight"):
        train_student(ds, "train", run, student_config(tiny_bert), train(max_steps=1, teacher_bm25_weight=0.5),
                      tmp_path / "onehot", loss="onehot")
    with pytest.raises(ConfigError, match="teacher_bm25_weight must be >= 0"):
        train(teacher_bm25_weight=-1.0)


def test_teacher_positive_margin_trains_on_targets_floored_at_the_best_negative(tiny_train, tiny_bert, tmp_path):
    """A teacher that ranks negatives above the positives, floored by the option, trains exactly as a
    teacher floored by hand (every positive at the query's best negative + 1) and unlike the raw one."""
    ds, run = tiny_train
    qrels = ds.qrels_for("train")
    positives = {q: {d for d, r in qrels[q].items() if r > 0} for q in run}
    negatives = {q: {d: s / 10 for d, s in run[q].items() if d not in positives[q]} for q in run}
    wrong = TeacherScores({q: negatives[q] | {d: -5.0 for d in positives[q]} for q in run})
    by_hand = TeacherScores({q: negatives[q] | {d: max(negatives[q].values()) + 1.0 for d in positives[q]}
                             for q in run})
    cfg = train(max_steps=2, log_every=1, negatives="top")

    def first_losses(name, scores, **kw):
        train_student(ds, "train", run, student_config(tiny_bert), dataclasses.replace(cfg, **kw), tmp_path / name,
                      loss="kl", teacher_scores=scores)
        return losses(tmp_path / name)

    floored = first_losses("floored", wrong, teacher_positive_margin=1.0)
    assert floored == pytest.approx(first_losses("by-hand", by_hand), rel=1e-6)
    assert floored[0] != pytest.approx(first_losses("raw", wrong)[0], rel=1e-3)
    assert read_meta(tmp_path / "floored")["config"]["train"]["teacher_positive_margin"] == 1.0
    with pytest.raises(ConfigError, match="teacher_positive_margin"):
        train_student(ds, "train", run, student_config(tiny_bert), dataclasses.replace(cfg, teacher_positive_margin=0.0),
                      tmp_path / "onehot", loss="onehot")
    with pytest.raises(ConfigError, match="finite"):
        dataclasses.replace(cfg, teacher_positive_margin=float("nan"))

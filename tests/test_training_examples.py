"""Training examples and batches: who is positive, where negatives come from, what changes per epoch."""

from __future__ import annotations

import pytest
import torch

from dualist.data import Dataset
from dualist.training import (Batch, ExampleSource, TeacherScores, TrainConfig, teacher_step,
                              with_in_batch_negatives)
from dualist.training.examples import IN_BATCH_MASKED_SCORE


def test_one_example_per_positive_or_per_query(tiny_train):
    ds, run = tiny_train
    qrels = ds.qrels_for("train")
    every = ExampleSource(ds, "train", run, TrainConfig(num_negatives=3, positives="all"))
    first = ExampleSource(ds, "train", run, TrainConfig(num_negatives=3, positives="first"))
    n_pairs = sum(1 for q in qrels for rel in qrels[q].values() if rel > 0)
    assert every.num_examples == n_pairs == 64 and first.num_examples == len(qrels) == 32
    for ex in first.examples(0):  # the highest-graded positive
        assert qrels[ex.qid][ex.positive] == max(qrels[ex.qid].values())
    for ex in every.examples(0):
        assert len(ex.negatives) == 3
        assert not any(qrels[ex.qid].get(d, 0) > 0 for d in ex.negatives)  # never a relevant document
        assert set(ex.negatives) <= set(run[ex.qid])


def test_epochs_resample_range_negatives_and_reshuffle_but_repeat_exactly(tiny_train):
    ds, run = tiny_train
    cfg = TrainConfig(num_negatives=2, negatives="range", neg_rank_min=1, neg_rank_max=20, seed=3)
    src = ExampleSource(ds, "train", run, cfg)
    e0, e1 = src.examples(0), src.examples(1)
    assert e0 != e1 and sorted((e.qid, e.positive) for e in e0) == sorted((e.qid, e.positive) for e in e1)
    negs = lambda exs: {(e.qid, e.positive): e.negatives for e in exs}  # noqa: E731
    assert negs(e0) != negs(e1)  # re-sampled
    again = ExampleSource(ds, "train", run, cfg)  # a fresh object (as after a restart) ...
    assert again.examples(1) == e1 and again.examples(0) == e0  # ... gives the same epochs
    top = ExampleSource(ds, "train", run, TrainConfig(num_negatives=2, negatives="top"))
    assert negs(top.examples(0)) == negs(top.examples(1))


def test_short_candidate_lists_are_filled_by_repetition():
    ds = Dataset("toy", None, corpus={d: {"title": "", "text": d} for d in "abcd"}, queries={"q1": "x", "q2": "y"},
                 qrels={"train": {"q1": {"a": 1}, "q2": {"b": 1}}})
    run = {"q1": {"a": 2.0, "c": 1.0}, "q2": {"b": 1.0}}  # q1: one negative; q2: none -> left out
    src = ExampleSource(ds, "train", run, TrainConfig(num_negatives=3, negatives="top"))
    assert [(e.qid, e.negatives) for e in src.examples(0)] == [("q1", ("c", "c", "c"))]


def test_no_usable_example_is_a_config_error():
    ds = Dataset("toy", None, corpus={"a": {"title": "", "text": "a"}}, queries={"q1": "x"},
                 qrels={"train": {"q1": {"a": 1}}})
    with pytest.raises(Exception, match="no training examples.*candidate run"):
        ExampleSource(ds, "train", {"q1": {"a": 1.0}}, TrainConfig())


def test_batches_put_the_positive_in_column_0_with_teacher_scores(tiny_train):
    ds, run = tiny_train
    teacher = TeacherScores({q: {d: float(len(d) + i) for i, d in enumerate(run[q])} | {
        d: 100.0 for d, rel in ds.qrels_for("train")[q].items() if rel > 0} for q in run})
    src = ExampleSource(ds, "train", run, TrainConfig(batch_size=5, num_negatives=3), teacher_scores=teacher)
    batches = list(src.batches(0))
    assert len(batches) == src.num_batches == 13 and batches[-1].shape == (4, 4)  # 64 = 12 * 5 + 4
    b = batches[0]
    assert b.shape == (5, 4) and b.teacher_scores.shape == (5, 4) and b.teacher_scores.dtype == torch.float32
    for i in range(5):
        assert ds.qrels_for("train")[b.qids[i]][b.doc_ids[i][0]] > 0
        assert b.docs[i][0] == ds.doc_text(b.doc_ids[i][0]) and b.queries[i] == ds.queries[b.qids[i]]
        assert b.teacher_scores[i, 0] == 100.0
        assert b.teacher_scores[i, 1] == teacher.lookup(b.qids[i], b.doc_ids[i][1])
    texts, index = b.unique_docs()
    assert len(texts) == len({d for row in b.doc_ids for d in row}) and index.shape == (5, 4)
    assert all(texts[index[i, j]] == b.docs[i][j] for i in range(5) for j in range(4))


def test_in_batch_negatives_shape_order_and_false_negative_mask():
    b = Batch(qids=["q1", "q1", "q2"], queries=["x", "x", "y"], docs=[[""] * 2] * 3,
              doc_ids=[["a", "n1"], ["b", "n1"], ["c", "a"]],
              positives=[frozenset("ab"), frozenset("ab"), frozenset("c")])
    full = torch.arange(18.0).view(3, 3, 2)  # full[i, j, c]: query i vs document c of query j
    out = with_in_batch_negatives(full, b)
    M = IN_BATCH_MASKED_SCORE
    assert out.shape == (3, 2 + 2 * 2)
    # row 0 (q1, positive a): own [a, n1], then row 1's [b (relevant to q1!), n1], row 2's [c, a (relevant)]
    assert out[0].tolist() == [0, 1, M, 3, 4, M]
    assert out[1].tolist() == [8, 9, M, 7, 10, M]  # own [b, n1]; row 0 [a: relevant, n1]; row 2 [c, a: relevant]
    assert out[2].tolist() == [16, 17, 12, 13, 14, 15]  # q2: nothing else is relevant
    single = with_in_batch_negatives(full[:1, :1], Batch(["q"], ["x"], [["a", "n1"]], [["", ""]],
                                                         positives=[frozenset("a")]))
    assert single.tolist() == [[0.0, 1.0]]


def test_teacher_step_scores_every_pair_and_reshapes():
    seen = {}

    def fake_cross_encoder(queries, docs):
        seen["pairs"] = list(zip(queries, docs))
        return torch.arange(float(len(queries)), requires_grad=True)

    b = Batch(qids=["q1", "q2"], queries=["x", "y"], doc_ids=[["a", "b", "c"]] * 2,
              docs=[["A", "B", "C"], ["D", "E", "F"]])
    loss = teacher_step(fake_cross_encoder, b, lambda s: s.sum() * 0 + s[1, 0])
    assert seen["pairs"] == [("x", "A"), ("x", "B"), ("x", "C"), ("y", "D"), ("y", "E"), ("y", "F")]
    assert loss.item() == 3.0  # row 1, column 0


def _graded_dataset() -> tuple[Dataset, dict[str, dict[str, float]]]:
    """q1 cites a and b directly (2), c indirectly (1), judges d irrelevant (0); q2 has only an indirect link."""
    corpus = {d: {"title": "", "text": f"doc {d}"} for d in "abcdefg"}
    qrels = {"train": {"q1": {"a": 2, "b": 2, "c": 1, "d": 0}, "q2": {"c": 1}}}
    ds = Dataset("graded", None, corpus=corpus, queries={"q1": "one", "q2": "two"}, qrels=qrels)
    run = {"q1": {d: 10.0 - i for i, d in enumerate("cdefgab")}, "q2": {d: 10.0 - i for i, d in enumerate("abcdefg")}}
    return ds, run


def test_min_positive_grade_keeps_direct_links_as_positives_and_never_uses_weaker_ones_as_negatives():
    ds, run = _graded_dataset()
    cfg = TrainConfig(num_negatives=4, negatives="top", min_positive_grade=2)
    examples = ExampleSource(ds, "train", run, cfg).examples(0)
    assert sorted((e.qid, e.positive) for e in examples) == [("q1", "a"), ("q1", "b")]  # q2 has no grade-2 doc
    for e in examples:
        assert e.negatives == ("d", "e", "f", "g")  # c (grade 1) is skipped although BM25 ranks it first
    default = ExampleSource(ds, "train", run, TrainConfig(num_negatives=4, negatives="top")).examples(0)
    assert sorted((e.qid, e.positive) for e in default) == [("q1", "a"), ("q1", "b"), ("q1", "c"), ("q2", "c")]


def test_min_positive_grade_must_be_at_least_one():
    with pytest.raises(Exception, match="min_positive_grade"):
        TrainConfig(min_positive_grade=0)

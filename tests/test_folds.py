"""Cross-fitted teacher scores: fold-teachers never score a query they trained on."""

from __future__ import annotations

import numpy as np
import pytest

from dualist.training import ExampleSource, TrainConfig, score_candidates
from dualist.training.folds import FoldTeachers, assign_folds, fold_datasets


class RecordingTeacher:
    """Scores every pair with its own id and records the queries it was asked about."""

    def __init__(self, ident: int):
        self.ident = ident
        self.seen: set[str] = set()

    def score(self, queries, docs, batch_size=64, show_progress=None):
        self.seen.update(queries)
        return np.full(len(queries), float(self.ident), dtype=np.float32)

    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights.txt").write_text(str(self.ident))


def test_folds_are_balanced_seeded_and_stable():
    qids = [f"q{i}" for i in range(10)]
    folds = assign_folds(qids, 3, seed=1)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 4]
    assert assign_folds(list(reversed(qids)), 3, seed=1) == folds
    assert assign_folds(qids, 3, seed=2) != folds
    with pytest.raises(ValueError, match="k >= 2"):
        assign_folds(qids, 1, seed=0)


def test_fold_teachers_never_score_a_query_they_trained_on(tiny_train, tmp_path):
    ds, run = tiny_train
    qrels = ds.qrels_for("train")
    folds = assign_folds(list(qrels), 3, seed=0, texts=ds.queries)  # the tiny data repeats query texts
    per_fold = fold_datasets(ds, "train", folds)
    trained_on = []
    for f, fold_ds in enumerate(per_fold):  # what each fold-teacher would train on
        source = ExampleSource(fold_ds, "train", run, TrainConfig(num_negatives=2))
        trained_on.append({e.qid for e in source.examples(0)})
        assert trained_on[f] and all(folds[q] != f for q in trained_on[f])
    teachers = [RecordingTeacher(f) for f in range(3)]
    scores = score_candidates(FoldTeachers(teachers, folds, ds.queries), ds, "train", run, tmp_path / "s.parquet",
                              depth=5)
    for f, teacher in enumerate(teachers):
        scored = {q for q in qrels if ds.queries[q] in teacher.seen}
        assert scored and not scored & trained_on[f]  # never a query it trained on
        assert all(folds[q] == f for q in scored)
    for qid, docs in scores.as_dict().items():  # every pair's score came from its query's fold-teacher
        assert set(docs.values()) == {float(folds[qid])}


def test_queries_with_one_text_in_two_folds_are_refused(tiny_train):
    ds, _ = tiny_train
    queries = {"a": "same text", "b": "same text"}
    with pytest.raises(ValueError, match="different folds"):
        FoldTeachers([RecordingTeacher(0), RecordingTeacher(1)], {"a": 0, "b": 1}, queries)

"""Mined hard negatives: dense top-k over the whole corpus, judged documents out, teacher-denoised."""

from __future__ import annotations

import numpy as np
import pytest

from dualist.candidates.mining import mine_negatives
from dualist.data import read_trec_run
from dualist.models import DualEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedTeacher:
    """Scores every pair from a table; unknown pairs score 0."""

    def __init__(self, table):
        self.table = table
        self.pairs = 0

    def score(self, queries, docs, batch_size=64):
        self.pairs += len(queries)
        return np.array([self.table.get((q, d), 0.0) for q, d in zip(queries, docs)], dtype=np.float32)


def test_mined_negatives_never_contain_a_judged_document(tiny_train, tiny_bert):
    ds, _ = tiny_train
    de = DualEncoder(model=str(tiny_bert))
    run, report = mine_negatives(de, ds, "train", k=10)
    qrels = ds.qrels_for("train")
    assert set(run) == {q for q in qrels if any(g > 0 for g in qrels[q].values())}
    for qid, docs in run.items():
        assert len(docs) == 10  # judged documents do not take places in the top k
        assert not {d for d, g in qrels[qid].items() if g > 0} & set(docs)
    assert report.kept == 10 * len(run) and report.judged_removed > 0  # a topical corpus: positives were near


def test_the_teacher_drops_mined_documents_it_scores_like_a_positive(tiny_train, tiny_bert):
    ds, _ = tiny_train
    de = DualEncoder(model=str(tiny_bert))
    plain, _ = mine_negatives(de, ds, "train", k=6)
    qid = sorted(plain)[0]
    qtext = ds.queries[qid]
    positives = [d for d, g in ds.qrels_for("train")[qid].items() if g > 0]
    mined = sorted(plain[qid])
    table = {(qtext, ds.doc_text(d)): 5.0 for d in positives}
    table[(qtext, ds.doc_text(positives[0]))] = 3.0  # the weakest positive sets the bar: 3.0
    table[(qtext, ds.doc_text(mined[0]))] = 3.5        # above it: an unjudged positive, dropped
    table[(qtext, ds.doc_text(mined[1]))] = 2.9        # below it: kept ...
    run, report = mine_negatives(de, ds, "train", k=6, teacher=FixedTeacher(table))
    assert mined[0] not in run[qid] and mined[1] in run[qid]
    assert report.teacher_removed >= 1
    # ... unless the margin lowers the bar below it (3.0 - 0.2 = 2.8)
    run, _ = mine_negatives(de, ds, "train", k=6, teacher=FixedTeacher(table), margin=0.2)
    assert mined[1] not in run[qid]


def test_the_mine_command_writes_a_candidate_run(tiny_beir, tiny_bert, tmp_path):
    from dualist.cli import main

    out = tmp_path / "train.mined.trec"
    assert main(["mine", "--data", str(tiny_beir), "--model", str(tiny_bert), "--k", "5", "--out", str(out)]) == 0
    run = read_trec_run(out)
    assert run and all(len(docs) == 5 for docs in run.values())
    assert main(["mine", "--data", str(tiny_beir), "--model", str(tiny_bert), "--k", "0", "--out", str(out)]) != 0

"""Slow: the pipeline on real SciFact with the packaged MiniLM weights, at small settings.

Run with ``python -m pytest -m slow tests/test_real_scifact.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import random

import pytest

from dualist.cli import main
from dualist.evaluation import evaluate

pytestmark = pytest.mark.slow

SMALL = ("teacher_layers=3,student_layers=3,student_freeze_layers=2,teacher_steps=60,student_steps=20,teacher_batch_size=8,"
         "teacher_negatives=3,student_negatives=3,score_depth=10,rerank_depth=20,dev_depth=10,gap_queries=20,"
         "probe_every=10,teacher_max_length=96,doc_max_length=64,teacher_lr=2e-4,student_lr=1e-4")


@pytest.fixture(scope="module")
def small_repro(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("scifact") / "small"
    assert main(["repro", "--dataset", str(shared_data / "scifact"), "--losses", "onehot,m3se",
                 "--override", SMALL, "--out", str(out), "-q"]) == 0
    return out


def _random_rerank_ndcg(out, qrels, depth: int) -> float:
    from dualist.data import read_trec_run
    from dualist.evaluation import top_k

    run = top_k(read_trec_run(out / "runs/test.bm25.trec"), depth)
    rng = random.Random(0)
    shuffled = {q: {d: rng.random() for d in docs} for q, docs in run.items()}
    return evaluate(qrels, shuffled, ["ndcg@10"]).mean["ndcg@10"]


def test_bm25_matches_pyserini(small_repro):
    rows = {r["model"]: r for r in json.loads((small_repro / "results.json").read_text())["rows"]}
    assert abs(rows["BM25"]["retrieval nDCG@10"] - 0.679) <= 0.02


def test_distilled_student_well_above_random(small_repro, shared_data):
    from dualist.data import load_beir

    qrels = load_beir(shared_data / "scifact").qrels_for("test")
    rows = {r["model"]: r for r in json.loads((small_repro / "results.json").read_text())["rows"]}
    random_ndcg = _random_rerank_ndcg(small_repro, qrels, depth=20)
    assert rows["DE + M3SE"]["re-rank nDCG@10"] > random_ndcg + 0.15, (rows["DE + M3SE"], random_ndcg)

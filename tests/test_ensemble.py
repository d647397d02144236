"""The cross-encoder + BM25 teacher ensemble: formula, invariants, dev choice of the weight."""

from __future__ import annotations

import numpy as np
import pytest

from dualist.training.ensemble import BM25_WEIGHTS, add_bm25, choose_bm25_weight, with_bm25
from dualist.training.scoring import TeacherScores

TEACHER = {"q1": {"a": 4.0, "b": 1.0, "c": -2.0}, "q2": {"a": 0.5, "d": 0.7}}
BM25 = {"q1": {"a": 0.0, "b": 9.0, "c": 3.0, "x": 1.0}, "q2": {"a": 2.0, "d": 1.0}}


def test_formula_against_a_hand_computation():
    out = add_bm25(TEACHER, BM25, 0.5)
    # q1: t = (4, 1, -2): mean 1, sd sqrt(6); b = (0, 9, 3): mean 4, sd sqrt(14)
    sd_t, sd_b = np.sqrt(6.0), np.sqrt(14.0)
    for d, t, b in (("a", 4.0, 0.0), ("b", 1.0, 9.0), ("c", -2.0, 3.0)):
        assert out["q1"][d] == pytest.approx(t + 0.5 * sd_t * (b - 4.0) / sd_b)
    assert set(out["q1"]) == {"a", "b", "c"}  # only the pairs the teacher scored
    # q2: t = (0.5, 0.7), sd 0.1; b = (2, 1), sd 0.5
    assert out["q2"]["a"] == pytest.approx(0.5 + 0.5 * 0.1 * (2.0 - 1.5) / 0.5)
    assert out["q2"]["d"] == pytest.approx(0.7 + 0.5 * 0.1 * (1.0 - 1.5) / 0.5)


def test_keeps_the_teacher_mean_and_ranks_as_summed_z_scores():
    rng = np.random.default_rng(0)
    t = {f"q{i}": {f"d{j}": float(v) for j, v in enumerate(rng.normal(3, 5, 8))} for i in range(5)}
    b = {q: {d: float(v) for d, v in zip(docs, rng.gamma(2, 3, 8))} for q, docs in t.items()}
    out = add_bm25(t, b, 0.7)
    for q in t:
        tv, bv = np.array(list(t[q].values())), np.array(list(b[q].values()))
        fused = np.array([out[q][d] for d in t[q]])
        assert fused.mean() == pytest.approx(tv.mean())
        z = (tv - tv.mean()) / tv.std() + 0.7 * (bv - bv.mean()) / bv.std()
        assert np.argsort(-fused).tolist() == np.argsort(-z).tolist()


def test_weight_zero_and_flat_bm25_leave_the_teacher_alone():
    assert add_bm25(TEACHER, BM25, 0.0) == TEACHER
    flat = {"q1": {"a": 2.0, "b": 2.0, "c": 2.0}, "q2": {"a": 2.0, "d": 1.0}}
    out = add_bm25(TEACHER, flat, 1.0)
    assert out["q1"] == TEACHER["q1"]
    assert out["q2"] != TEACHER["q2"]


def test_bad_inputs_are_refused():
    with pytest.raises(KeyError, match="no BM25 score for query 'q2'"):
        add_bm25(TEACHER, {"q1": BM25["q1"]}, 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        add_bm25(TEACHER, BM25, -0.1)
    with pytest.raises(ValueError, match=">= 0"):
        add_bm25(TEACHER, BM25, float("nan"))


def test_with_bm25_records_the_weight_in_the_fingerprint():
    scores = TeacherScores(TEACHER, meta={"teacher": "t1", "candidates": "c1", "depth": 3})
    fused = with_bm25(scores, BM25, 0.3)
    assert fused.meta["bm25_weight"] == 0.3 and fused.lookup("q1", "a") == add_bm25(TEACHER, BM25, 0.3)["q1"]["a"]
    assert fused.fingerprint != scores.fingerprint
    assert with_bm25(scores, BM25, 0.5).fingerprint != fused.fingerprint
    assert with_bm25(scores, BM25, 0.3).fingerprint == fused.fingerprint


def test_choose_bm25_weight_picks_the_best_and_breaks_ties_toward_the_teacher():
    # the metric: how high document "b" ranks for q1 (BM25 likes it, the teacher does not)
    def rank_of_b(run):
        order = sorted(run["q1"], key=run["q1"].get, reverse=True)
        return -order.index("b")

    best, figures = choose_bm25_weight(TEACHER, BM25, rank_of_b)
    assert set(figures) == set(BM25_WEIGHTS)
    assert figures[0.0] == -1 and figures[best] == 0
    assert best == min(w for w, f in figures.items() if f == 0)  # the smallest weight that reaches it
    best, _ = choose_bm25_weight(TEACHER, BM25, lambda run: 1.0)  # BM25 buys nothing: teacher alone
    assert best == 0.0


@pytest.fixture(scope="module")
def teacher_folder(tiny_bert, tmp_path_factory):
    from dualist.models import CrossEncoder

    return CrossEncoder(model=str(tiny_bert), max_length=64).save_pretrained(tmp_path_factory.mktemp("teacher"))


def test_the_stage_chooses_on_dev_and_weight_zero_is_the_teachers_own_figure(tiny_beir, teacher_folder, tmp_path):
    from dualist import read_trec_run
    from dualist._io import read_json
    from dualist.candidates import bm25_run
    from dualist.data import load_beir
    from dualist.models import CrossEncoder
    from dualist.stages import BM25WeightConfig, bm25_weight_stage, dev_eval_fn

    ds = load_beir(tiny_beir)
    split = "test"  # the tiny fixture's held-out split plays dev here
    cands = tmp_path / "dev.bm25.trec"
    bm25_run(ds, split, k=10, out_path=cands)
    out = bm25_weight_stage(ds, BM25WeightConfig(teacher=teacher_folder, candidates=cands, split=split, depth=6),
                            tmp_path / "bm25_weight.json")
    result = read_json(out)
    assert set(result["dev"]) == {str(w) for w in BM25_WEIGHTS} and result["queries"] == len(ds.queries_for(split))
    assert result["dev"][str(result["weight"])] == max(result["dev"].values())
    own = dev_eval_fn(ds, split, read_trec_run(cands), depth=6)(CrossEncoder.from_pretrained(teacher_folder))
    assert result["dev"]["0.0"] == pytest.approx(own["ndcg@10"], abs=1e-6)
    # BM25 finds this topical corpus's documents, a random teacher does not: BM25 helps, so a weight > 0 wins
    assert result["weight"] > 0 and result["dev"][str(result["weight"])] > result["dev"]["0.0"]
    stamp = out.stat().st_mtime_ns
    bm25_weight_stage(ds, BM25WeightConfig(teacher=teacher_folder, candidates=cands, split=split, depth=6), out)
    assert out.stat().st_mtime_ns == stamp  # up to date: not recomputed
    bm25_weight_stage(ds, BM25WeightConfig(teacher=teacher_folder, candidates=cands, split=split, depth=4), out)
    assert out.stat().st_mtime_ns != stamp and read_json(out)["depth"] == 4


def test_the_bm25_weight_command(tiny_beir, teacher_folder, tmp_path, capsys):
    from dualist.cli import main

    cands = tmp_path / "dev.trec"
    data = ["--data", str(tiny_beir)]
    assert main(["candidates", *data, "--split", "test", "--k", "10", "--out", str(cands)]) == 0
    args = [*data, "--teacher", str(teacher_folder), "--candidates", str(cands), "--depth", "5"]
    assert main(["bm25-weight", *args, "--split", "test", "--out", str(tmp_path / "w.json")]) != 0
    assert "choose the weight on the split results are reported on" in capsys.readouterr().err
    # a dataset without dev: carve one, as for training
    dev = tmp_path / "dev.bm25.trec"
    carve = [*data, "--dev-fraction", "0.25"]
    assert main(["candidates", *carve, "--split", "dev", "--k", "10", "--out", str(dev)]) == 0
    assert main(["bm25-weight", *carve, "--teacher", str(teacher_folder), "--candidates", str(dev),
                 "--out", str(tmp_path / "w.json")]) == 0
    printed = capsys.readouterr().out
    assert "--teacher-bm25-weight" in printed and (tmp_path / "w.json").exists()

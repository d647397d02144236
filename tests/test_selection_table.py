"""The report's checkpoint-selection table: chosen steps, and nDCG@10 of the dev queries that chose nothing."""

from __future__ import annotations

import pytest

from dualist._io import write_json, write_meta
from dualist.evaluation import paired_test
from dualist.stages.report import _selection_rows

DEV = {"d1": 0.2, "d2": 0.4, "d3": 0.6, "d4": 0.8, "d5": 1.0}  # the zero-shot DE's dev nDCG@10, both modes


def evaluation(path, rerank, retrieval=None):
    sections = {"rerank_dev": rerank} | ({"retrieval_dev": retrieval} if retrieval else {})
    write_json(path, {name: {"mean": {"ndcg@10": sum(v.values()) / len(v)}, "per_query": {"ndcg@10": v}}
                      for name, v in sections.items()})
    return path


def trained(tmp_path, name, best_step, rerank, retrieval=None):
    folder = tmp_path / name
    write_meta(folder, stage="train", config={}, extra={"best_step": best_step, "steps": 20, "best_metric": 0.5,
                                                        "kept_start": best_step == 0})
    return (name, folder, evaluation(tmp_path / f"{name}.json", rerank, retrieval))


def test_held_out_dev_columns_use_only_the_queries_that_chose_no_checkpoint(tmp_path):
    zeroshot = evaluation(tmp_path / "zeroshot.json", DEV, DEV)
    # a student that moved: gains on the selection queries d1 and d2, losses on the held-out ones
    moved = {"d1": 0.9, "d2": 0.9, "d3": 0.5, "d4": 0.6, "d5": 0.7}
    ret = {**DEV, "d5": 0.4}
    teacher = trained(tmp_path, "teacher", 20, moved)  # a cross-encoder: re-rank only
    students = (trained(tmp_path, "moved", 20, moved, ret), trained(tmp_path, "kept", 0, DEV, DEV))
    rows = _selection_rows((teacher, *students), ("d1", "d2"), zeroshot)
    t, first, second = rows
    held = {q: DEV[q] for q in ("d3", "d4", "d5")}
    assert first["held-out dev queries"] == 3 and first["held-out dev re-rank"] == pytest.approx(0.6)
    assert first["rerank_dev vs zero-shot"] == pytest.approx(-0.2)
    assert first["rerank_dev p"] == paired_test({q: moved[q] for q in held}, held).p_value
    assert first["held-out dev retrieval"] == pytest.approx((0.6 + 0.8 + 0.4) / 3)
    assert first["retrieval_dev vs zero-shot"] == pytest.approx(-0.2)
    assert first["retrieval vs zero-shot (p)"] == f"{-0.2:+.4f} ({first['retrieval_dev p']:.3f})"
    assert second["rerank_dev vs zero-shot"] == 0.0 and second["kept start"] is True and first["chosen step"] == 20
    assert "held-out dev re-rank" in t and "held-out dev retrieval" not in t


def test_no_held_out_columns_when_every_dev_query_chose_or_no_evaluation_is_given(tmp_path):
    zeroshot = evaluation(tmp_path / "zeroshot.json", DEV, DEV)
    entry = trained(tmp_path, "m", 20, DEV, DEV)
    for select in (None, tuple(DEV)):  # no cap, or a cap that took every dev query
        assert "held-out dev re-rank" not in _selection_rows((entry,), select, zeroshot)[0]
    assert "held-out dev re-rank" not in _selection_rows((entry[:2],), ("d1",), zeroshot)[0]  # no evaluation file
    assert "held-out dev re-rank" not in _selection_rows((entry,), ("d1",), None)[0]
    # an evaluation made before retrieval_dev existed: re-rank only
    old = evaluation(tmp_path / "old-zeroshot.json", DEV)
    row = _selection_rows((entry,), ("d1",), old)[0]
    assert "held-out dev re-rank" in row and "held-out dev retrieval" not in row

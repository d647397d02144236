"""Diagnostics on hand-made score tables: every expected value is worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dualist.diagnostics import (
    EvolutionTable,
    Margins,
    ProbeDocs,
    describe,
    gap_table,
    label_agreement,
    normalized_margins,
    normalized_margins_array,
    pick_probe_query,
    read_probes,
    score_distributions,
    score_evolution,
    select_probe_docs,
    train_test_gap,
)
from dualist.errors import DataError


# --- normalized margins ---------------------------------------------------------------------

def test_margin_by_hand():
    m = normalized_margins({"q": {"p": 3.0, "n1": 1.0, "n2": 2.0, "n3": 0.0}}, {"q": {"p": 1}})
    assert m["q"] == pytest.approx(1 / 3)  # (3 - 2) / (3 - 0)


def test_margin_negative_when_a_negative_wins():
    m = normalized_margins({"q": {"p": 1.0, "n1": 5.0, "n2": 0.0}}, {"q": {"p": 2, "n1": 0}})
    assert m["q"] == pytest.approx((1 - 5) / 5)


@pytest.mark.parametrize("rule, expected", [("max", (4 - 2) / 4), ("mean", (2.5 - 2) / 4), ("min", (1 - 2) / 4)])
def test_margin_positive_rules(rule, expected):
    scores = {"q": {"p1": 4.0, "p2": 1.0, "n1": 2.0, "n2": 0.0}}
    assert normalized_margins(scores, {"q": {"p1": 1, "p2": 1}}, positive=rule)["q"] == pytest.approx(expected)


def test_margin_unknown_rule():
    with pytest.raises(ValueError, match="positive"):
        normalized_margins({}, {}, positive="median")


@pytest.mark.parametrize("a, b", [(2.0, 0.0), (0.01, -7.0), (1000.0, 3.5)])
def test_margin_invariant_under_positive_affine_maps(a, b):
    rng = np.random.default_rng(1)
    scores = {f"q{i}": {f"d{j}": float(rng.normal()) for j in range(20)} for i in range(30)}
    qrels = {q: {"d0": 1, "d3": 2, "d5": 0} for q in scores}
    base = normalized_margins(scores, qrels)
    moved = normalized_margins({q: {d: a * s + b for d, s in c.items()} for q, c in scores.items()}, qrels)
    assert base.keys() == moved.keys() and len(base) == 30
    for q in base:
        assert moved[q] == pytest.approx(base[q], abs=1e-9)
    # a negative scale flips the ranking, so the margin must change: the test can fail
    flipped = normalized_margins({q: {d: -s for d, s in c.items()} for q, c in scores.items()}, qrels)
    assert any(abs(flipped[q] - base[q]) > 1e-3 for q in base)


def test_margin_skips_and_reports(caplog):
    scores = {
        "ok": {"p": 1.0, "n": 0.0},
        "no_pos": {"a": 1.0, "b": 0.0},       # judged, but no positive among the candidates
        "unjudged": {"a": 1.0},               # no qrels at all
        "no_neg": {"p": 2.0, "p2": 1.0},      # every candidate relevant
        "empty": {},
    }
    qrels = {"ok": {"p": 1}, "no_pos": {"zz": 1, "a": 0}, "no_neg": {"p": 1, "p2": 3}}
    with caplog.at_level("INFO", logger="dualist.diagnostics.margins"):
        m = normalized_margins(scores, qrels)
    assert isinstance(m, Margins) and isinstance(m, dict)
    assert dict(m) == {"ok": 1.0}
    assert m.skipped == {"no_pos": "no positive", "unjudged": "no positive", "no_neg": "no negative",
                         "empty": "no candidates"}
    s = m.summary()
    assert (s["n"], s["skipped"], s["skipped_no_positive"], s["skipped_no_negative"], s["skipped_no_candidates"]) \
        == (1, 4, 2, 1, 1)
    assert "4 skipped" in caplog.text


def test_margin_zero_range_is_zero():
    assert normalized_margins({"q": {"p": 2.0, "n": 2.0, "m": 2.0}}, {"q": {"p": 1}})["q"] == 0.0


def test_margin_rejects_non_finite():
    with pytest.raises(ValueError, match="non-finite"):
        normalized_margins({"q": {"p": float("nan"), "n": 0.0}}, {"q": {"p": 1}})


def test_margin_array_matches_dict_with_padding():
    scores = {"a": {"p": 3.0, "n1": 1.0, "n2": 2.0, "n3": 0.0}, "b": {"x": 0.5, "y": -1.0}}
    qrels = {"a": {"p": 1}, "b": {"y": 1}}
    mat = np.array([[3.0, 1.0, 2.0, 0.0], [0.5, -1.0, np.nan, np.nan]])
    lab = np.array([[True, False, False, False], [False, True, False, False]])
    got = normalized_margins_array(mat, lab)
    want = normalized_margins(scores, qrels)
    assert got.tolist() == pytest.approx([want["a"], want["b"]])
    assert want["b"] == pytest.approx(-1.0)  # (-1 - 0.5) / 1.5


def test_margin_array_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        normalized_margins_array(np.zeros((2, 3)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="inf"):
        normalized_margins_array([[np.inf, 0.0]], [[True, False]])


# --- distributions --------------------------------------------------------------------------

def test_distributions_sizes_and_values():
    scores = {"q1": {"a": 3.0, "b": 1.0, "c": 2.0}, "q2": {"x": 0.0, "y": 5.0}, "unjudged": {"z": 9.0}}
    qrels = {"q1": {"a": 1, "c": 0}, "q2": {"x": 2, "y": 1}}
    d = score_distributions(scores, qrels)
    assert sorted(d.positives.tolist()) == [0.0, 3.0, 5.0]
    assert sorted(d.negatives.tolist()) == [1.0, 2.0]
    assert d.positives.size + d.negatives.size == 5  # the unjudged query is left out
    assert d.standardize == "none"


def test_distributions_standardized():
    scores = {"q": {"a": 10.0, "b": 20.0, "c": 30.0}, "r": {"a": 1.0, "b": 1.0}}
    qrels = {"q": {"c": 1}, "r": {"a": 1}}
    mm = score_distributions(scores, qrels, standardize="query_minmax")
    assert sorted(mm.positives.tolist()) == [0.0, 1.0] and sorted(mm.negatives.tolist()) == [0.0, 0.0, 0.5]
    z = score_distributions(scores, qrels, standardize="query_z")
    sd = math.sqrt(200 / 3)
    assert sorted(z.positives.tolist()) == pytest.approx([0.0, 10 / sd])  # constant query r maps to 0
    assert sorted(z.negatives.tolist()) == pytest.approx([-10 / sd, 0.0, 0.0])
    # the point of standardizing: a rescaled copy gives the same distribution
    z2 = score_distributions({q: {d: 7 * s - 3 for d, s in c.items()} for q, c in scores.items()}, qrels,
                             standardize="query_z")
    assert np.allclose(np.sort(z2.positives), np.sort(z.positives))
    with pytest.raises(ValueError, match="standardize"):
        score_distributions(scores, qrels, standardize="global")


# --- gaps -----------------------------------------------------------------------------------

def test_train_test_gap(caplog):
    with caplog.at_level("WARNING"):
        gap = train_test_gap({"ndcg@10": 0.9, "mrr@10": 0.7, "only_train": 1.0}, {"mrr@10": 0.5, "ndcg@10": 0.6})
    assert list(gap) == ["ndcg@10", "mrr@10"]
    assert gap["ndcg@10"] == pytest.approx(0.3) and gap["mrr@10"] == pytest.approx(0.2)
    assert "only_train" in caplog.text
    with pytest.raises(ValueError, match="share no metric"):
        train_test_gap({"a": 1.0}, {"b": 1.0})


def test_gap_table():
    results = {"CA": {"train": {"ndcg@10": 0.8}, "test": {"ndcg@10": 0.7}},
               "DE": {"train": {"ndcg@10": 0.95}, "test": {"ndcg@10": 0.6}, "dev": {"ndcg@10": 0.62}}}
    t = gap_table(results, "ndcg@10")
    assert list(t) == ["CA", "DE"]
    assert t["DE"] == pytest.approx({"train": 0.95, "test": 0.6, "gap": 0.35})
    assert gap_table({"DE": results["DE"]}, "ndcg@10", test_split="dev")["DE"]["gap"] == pytest.approx(0.33)
    with pytest.raises(ValueError, match="no 'dev' result"):
        gap_table(results, "ndcg@10", test_split="dev")  # CA has no dev split
    with pytest.raises(ValueError, match="no metric 'mrr@10'"):
        gap_table(results, "mrr@10")


# --- score evolution ------------------------------------------------------------------------

def _rec(step, ids, labels, scores, qid="q1"):
    return {"step": step, "query_id": qid, "doc_ids": ids, "labels": labels, "scores": scores}


def test_score_evolution_parses_sorts_and_reorders():
    recs = [
        _rec(200, ["p1", "p2", "n1"], [1, 1, 0], [3.0, 2.0, -1.0]),
        _rec(0, ["n1", "p1", "p2"], [0, 1, 1], [0.1, 0.2, 0.3]),
        _rec(100, ["p1", "p2", "n1"], [1, 1, 0], [1.0, 1.5, 0.0]),
        _rec(100, ["p1", "p2", "n1"], [1, 1, 0], [1.1, 1.6, 0.1]),  # resumed run rewrote step 100
    ]
    t = score_evolution(recs)
    assert isinstance(t, EvolutionTable)
    assert t.query_id == "q1" and t.doc_ids == ("p1", "p2", "n1")
    assert t.steps.tolist() == [0, 100, 200]
    assert t.labels.tolist() == [True, True, False]
    assert t.scores.shape == (3, 3)
    assert t.scores.tolist() == [[0.2, 0.3, 0.1], [1.1, 1.6, 0.1], [3.0, 2.0, -1.0]]
    assert t.positives.shape == (3, 2) and t.negatives[:, 0].tolist() == [0.1, 0.1, -1.0]


def test_score_evolution_errors():
    a = _rec(0, ["p", "n"], [1, 0], [1.0, 0.0])
    with pytest.raises(ValueError, match="several queries"):
        score_evolution([a, _rec(0, ["p", "n"], [1, 0], [1.0, 0.0], qid="q2")])
    assert score_evolution([a, _rec(5, ["x"], [1], [1.0], qid="q2")], query_id="q2").doc_ids == ("x",)
    with pytest.raises(ValueError, match="other documents"):
        score_evolution([a, _rec(1, ["p", "m"], [1, 0], [1.0, 0.0])])
    with pytest.raises(ValueError, match="label"):
        score_evolution([a, _rec(1, ["p", "n"], [1, 1], [1.0, 0.0])])
    with pytest.raises(ValueError, match="length"):
        score_evolution([_rec(1, ["p", "n"], [1, 0], [1.0])])
    with pytest.raises(ValueError, match="lacks"):
        score_evolution([{"step": 1}])
    with pytest.raises(ValueError, match="no probe records"):
        score_evolution([])


def test_probe_record_roundtrip_through_jsonl(tmp_path):
    probe = ProbeDocs(["p1", "n1"], [1, 0])
    path = tmp_path / "probes.jsonl"
    # the training loop adds its own keys (the probe's name): they are ignored
    lines = [json.dumps({"probe": "probe", **probe.record(s, "q1", [s * 0.1, -s * 0.1])}) for s in (0, 10, 20)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 30, "query_id": "q1", "doc_')  # killed mid-write
    recs = read_probes(path)
    assert len(recs) == 3
    t = score_evolution(recs)
    assert t.steps.tolist() == [0, 10, 20] and t.scores[:, 1].tolist() == pytest.approx([0.0, -1.0, -2.0])
    with pytest.raises(ValueError, match="expected 2 scores"):
        probe.record(1, "q1", [1.0])


def test_read_probes_bad_line_names_the_line(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(DataError, match=r"probes.jsonl:2"):
        read_probes(path)


# --- probe selection ------------------------------------------------------------------------

QRELS = {
    "q1": {"a": 1},
    "q2": {f"p{i}": 1 for i in range(8)} | {"h": 0},
    "q3": {f"p{i}": 2 for i in range(5)},
    "q4": {"p0": 1, "p1": 1, "p2": 1},
}


def _run():
    cands = {f"p{i}": 10.0 - i for i in range(8)} | {"a": 1.0}
    negs = {"h": 9.5, "x": 3.0, "y": 3.0, "z": 5.0, "w": 2.0, "v": 0.5, "u": -1.0}
    return {q: cands | negs for q in QRELS}


def test_select_probe_docs_rule():
    run = _run()
    p = select_probe_docs("q3", QRELS, run, n_neg=7)
    assert isinstance(p, ProbeDocs)
    doc_ids, labels = p  # a named tuple: unpacks
    assert doc_ids[:5] == ["p0", "p1", "p2", "p3", "p4"]
    # hardest non-relevant candidates by rank, ties (p5/z at 5.0, p7/x/y at 3.0) by id; the judged-0
    # "h" and the unjudged p5..p7 (relevant to *other* queries) are negatives here
    assert doc_ids[5:] == ["h", "p5", "z", "p6", "p7", "x", "y"]
    assert labels == [1] * 5 + [0] * 7
    assert select_probe_docs("q3", QRELS, run).doc_ids[5:] == ["h", "p5", "z", "p6", "p7"]


def test_select_probe_docs_fewer_positives_and_sampling():
    run = _run()
    p = select_probe_docs("q4", QRELS, run, n_neg=3)
    assert p.labels == [1, 1, 1, 0, 0, 0]  # only three positives exist
    big = select_probe_docs("q2", QRELS, run, seed=0)
    assert big == select_probe_docs("q2", QRELS, run, seed=0)  # deterministic
    pos = [d for d, l in zip(big.doc_ids, big.labels) if l]
    assert len(pos) == 5 and set(pos) <= {f"p{i}" for i in range(8)} and pos == sorted(pos)
    others = {tuple(d for d, l in zip(select_probe_docs("q2", QRELS, run, seed=s).doc_ids,
                                      select_probe_docs("q2", QRELS, run, seed=s).labels) if l)
              for s in range(10)}
    assert len(others) > 1  # the seed does choose among the 8 positives
    assert big.doc_ids[5:] == ["h", "z", "x", "y", "w"]


def test_select_probe_docs_errors():
    with pytest.raises(ValueError, match="no relevant"):
        select_probe_docs("nope", QRELS, _run())
    with pytest.raises(ValueError, match="not in the run"):
        select_probe_docs("q1", QRELS, {})


def test_pick_probe_query_rule():
    run = _run()
    # q2 (8 positives) and q3 (5) both fill 5 slots: the smaller id wins
    assert pick_probe_query(QRELS, run) == "q2"
    assert pick_probe_query(QRELS, run, n_pos=3) == "q2"
    # with q2 gone, q3 fills 5 slots and beats q4 (3) and q1 (1)
    assert pick_probe_query({k: v for k, v in QRELS.items() if k != "q2"}, run) == "q3"
    # only queries present in the run are eligible
    assert pick_probe_query(QRELS, {"q4": run["q4"], "q1": run["q1"]}) == "q4"
    with pytest.raises(ValueError, match=">= 6"):
        pick_probe_query(QRELS, {"q3": run["q3"]}, min_pos=6)


# --- describe -------------------------------------------------------------------------------

def test_describe():
    d = describe(np.arange(11, dtype=float))
    assert d == {"mean": 5.0, "median": 5.0, "p10": 1.0, "p90": 9.0, "n": 11}
    assert describe({"q1": 1.0, "q2": 3.0})["mean"] == 2.0
    empty = describe([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


# --------------------------------------------------------------------------- teacher vs labels

def test_label_agreement_by_hand():
    scores = {
        "q1": {"p": 3.0, "n1": 1.0, "n2": 0.0, "half": 9.0},   # right by 2; "half" (grade 1 < 2) is left out
        "q2": {"p": 0.0, "p2": 1.0, "n1": 2.0},                 # contradicted: n1 above both positives, margin -1
        "q3": {"p": 5.0, "n1": 5.0},                            # a tie is not a contradiction, margin 0
        "q4": {"p": 1.0},                                       # no negative: not counted
        "q5": {"n1": 1.0, "n2": 0.0},                           # no positive: not counted
    }
    qrels = {"q1": {"p": 2, "half": 1}, "q2": {"p": 2, "p2": 3, "n1": 0}, "q3": {"p": 2}, "q4": {"p": 2}, "q5": {}}
    a = label_agreement(scores, qrels, min_grade=2)
    assert a.queries == 3
    assert a.contradicted == pytest.approx(1 / 3)
    mass = [math.exp(3) / (math.exp(3) + math.exp(1) + 1),
            (1 + math.e) / (1 + math.e + math.exp(2)),
            0.5]
    assert a.positive_mass["median"] == pytest.approx(sorted(mass)[1])
    assert a.positive_mass["mean"] == pytest.approx(sum(mass) / 3)
    assert a.margin["median"] == pytest.approx(0.0) and a.margin["mean"] == pytest.approx(1 / 3)
    assert a.margin_q25_where_right == pytest.approx(0.5)  # quartile of {0, 2}
    assert "3 training queries" in a.summary() and "33.3%" in a.summary()
    # with grade 1 enough, "half" is a positive of q1 and the best one
    assert label_agreement(scores, qrels, min_grade=1).margin["mean"] == pytest.approx((8 - 1 + 0) / 3)


def test_label_agreement_without_usable_queries_says_so():
    a = label_agreement({"q": {"d": 1.0}}, {"q": {"d": 1}})
    assert a.queries == 0 and math.isnan(a.contradicted) and math.isnan(a.margin_q25_where_right)
    assert "no query has both" in a.summary()
    with pytest.raises(ValueError, match="min_grade"):
        label_agreement({}, {}, min_grade=0)

"""``dualist repro`` end to end on the tiny fixture: every stage, resume, report, matrix check."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pytest

from dualist.cli import main

TINY = ("teacher_layers=none,student_layers=none,teacher_steps=3,student_steps=2,teacher_batch_size=4,"
        "student_batch_size=4,teacher_negatives=3,student_negatives=3,score_depth=8,rerank_depth=10,"
        "dev_depth=8,gap_queries=8,probe_every=1,teacher_max_length=64,doc_max_length=48,batch_size_infer=16,"
        "student_freeze_layers=1")  # the tiny BERT has 2 layers: its students train the top one


@pytest.fixture(scope="module")
def repro(tiny_beir, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "tiny"
    argv = ["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", TINY, "--out", str(out)]
    assert main(argv) == 0
    return out, argv


def test_report_has_every_row_and_plot(repro):
    out, _ = repro
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["teacher vs labels (training candidates)"].startswith("teacher vs labels on ")
    models = [r["model"] for r in res["rows"]]
    assert models[:3] == ["BM25", "DE zero-shot", "CA teacher"]
    assert {"DE one-hot", "DE + MSE", "DE + Margin-MSE", "DE + softmax CE (KL)", "DE + RankDistil",
            "DE + M3SE"} <= set(models)
    for r in res["rows"]:
        assert 0.0 <= r["re-rank nDCG@10"] <= 1.0
    html = (out / "report/index.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # gap, distributions, margins, evolution
    assert (out / "report/report.md").exists()
    assert res["timings"]["total"] > 0 and res["version"]
    assert [c["id"] for c in res["claims"]] == ["teacher_beats_onehot", "m3se_closes_half_gap", "m3se_beats_onehot",
                                                "best_distilled_beats_baselines"]
    # the recipe's targets beside the claims: every trained model tested against its zero-shot start
    assert [t["id"] for t in res["targets"]] == ["never_below_start", "teacher_gap", "distilled_beats_onehot",
                                                 "hubness_kept"]
    assert {(r["model"], r["metric"]) for r in res["versus_start"]} >= {("teacher", "rerank.ndcg@10"),
                                                                         ("m3se", "retrieval.ndcg@10")}
    assert "Targets of the distillation recipe" in html
    for claim in res["claims"] + res["targets"]:  # each rendered as its own paragraph, from its own figures
        assert isinstance(claim["supported"], bool) and claim["figures"]
        assert f"<p>{escape(claim['text'])}</p>" in html
    # hubness of every retrieval run (BM25 and the dual-encoders), none for the cross-encoder
    hub = {r["model"]: (r["top-10 distinct docs"], r["top-10 max occurrence"]) for r in res["rows"]}
    assert hub["CA teacher"] == (None, None)
    corpus = res["settings"]["documents"]
    for model in ("BM25", "DE zero-shot", "DE + M3SE"):
        distinct, top = hub[model]
        assert 10 <= distinct <= corpus and 1 <= top <= res["settings"]["queries (train/dev/test)"][2]
    assert "top-10 distinct docs" in html
    # the step each trained model was chosen at, evaluated from step 0
    chosen = {r["model"]: r for r in res["selection"]}
    assert chosen["CA teacher"]["steps"] == 3 and 0 <= chosen["CA teacher"]["chosen step"] <= 3
    assert all(r["kept start"] == (r["chosen step"] == 0) for r in res["selection"])
    assert len(res["selection"]) == 1 + 6
    assert res["settings"]["training qrels"] == "qrels/train.tsv (BEIR)"


def test_hybrid_row_is_reported_and_equals_run_hybrid(repro, tiny_beir, capsys):
    """Before the reruns below change the students: the hybrid figures of a DE are run_hybrid's."""
    from dualist import stages
    from dualist.data import read_trec_run
    from dualist.evaluation import evaluate
    from dualist.repro.plan import _print_summary
    from dualist.stages.evaluation import HYBRID, RETRIEVAL_METRICS, run_hybrid
    from dualist.stages.markers import marker_path

    out, _ = repro
    res = json.loads((out / "results.json").read_text())
    rows = {r["id"]: r for r in res["rows"]}
    for model in ("zeroshot", "onehot", "mse", "margin_mse", "kl", "rankdistil", "m3se"):
        assert 0.0 <= rows[model]["hybrid nDCG@10"] <= 1.0 and 0.0 <= rows[model]["hybrid R@100"] <= 1.0
    assert rows["bm25"]["hybrid nDCG@10"] is None and rows["teacher"]["hybrid R@100"] is None
    # recomputed from scratch: BM25's test candidates and a fresh exact search of the student
    folder = out / "models/student-m3se-s13"
    student = stages.load_model(folder / json.loads(marker_path(folder).read_text())["model_path"])
    ds = stages.load_dataset(tiny_beir, dev_fraction=0.1, seed=13)
    run = run_hybrid(student, ds, "test", bm25_run=read_trec_run(out / "runs/test.bm25.trec"), **HYBRID)
    want = evaluate(ds.qrels_for("test"), run, RETRIEVAL_METRICS).mean
    assert rows["m3se"]["hybrid nDCG@10"] == pytest.approx(want["ndcg@10"], abs=1e-6)
    assert rows["m3se"]["hybrid R@100"] == pytest.approx(want["recall@100"], abs=1e-6)
    written = read_trec_run(out / "runs/test.m3se-s0.hybrid.trec")
    assert {q: list(d)[:10] for q, d in written.items()} == {q: list(d)[:10] for q, d in run.items()}
    # shown beside the retrieval figures in the console summary and the report
    _print_summary(res, out / "report/index.html")
    header = capsys.readouterr().out.splitlines()[0]
    assert header.index("retrieval R@100") < header.index("hybrid nDCG@10") < header.index("hybrid R@100")
    html = (out / "report/index.html").read_text()
    assert "hybrid nDCG@10" in html and "reciprocal rank fusion" in html


def test_dev_retrieval_is_evaluated_for_bm25_and_the_dual_encoders_only(repro, tiny_beir):
    """Before the reruns below change the students: retrieval_dev equals a fresh full-corpus search."""
    from dualist import stages
    from dualist.data import read_trec_run
    from dualist.evaluation import evaluate
    from dualist.stages.evaluation import RETRIEVAL_METRICS, run_retrieve
    from dualist.stages.markers import marker_path

    out, _ = repro
    ds = stages.load_dataset(tiny_beir, dev_fraction=0.1, seed=13)
    folder = out / "models/student-m3se-s13"
    student = stages.load_model(folder / json.loads(marker_path(folder).read_text())["model_path"])
    want = evaluate(ds.qrels_for("dev"), run_retrieve(student, ds, "dev", k=100), RETRIEVAL_METRICS)
    got = json.loads((out / "results/m3se-s0.json").read_text())["retrieval_dev"]
    assert got["mean"]["ndcg@10"] == pytest.approx(want.mean["ndcg@10"], abs=1e-6)
    assert set(got["per_query"]["ndcg@10"]) == set(ds.qrels_for("dev"))
    bm25 = json.loads((out / "results/bm25.json").read_text())["retrieval_dev"]
    dev_run = read_trec_run(out / "runs/dev.bm25.trec")
    assert bm25["mean"] == pytest.approx(evaluate(ds.qrels_for("dev"), dev_run, RETRIEVAL_METRICS).mean)
    assert "retrieval_dev" not in json.loads((out / "results/teacher.json").read_text())


def test_rerun_skips_finished_stages(repro, caplog):
    out, argv = repro
    stamp = (out / "models/teacher/.done.json").stat().st_mtime
    caplog.set_level("INFO")
    assert main(argv) == 0
    assert (out / "models/teacher/.done.json").stat().st_mtime == stamp
    assert "teacher up to date" in caplog.text


def test_changed_setting_recomputes_only_dependents(repro, caplog):
    out, argv = repro
    teacher_stamp = (out / "models/teacher/.done.json").stat().st_mtime
    student_stamp = (out / "models/student-m3se-s13/.done.json").stat().st_mtime
    caplog.set_level("INFO")
    argv = [*argv[:-4], "--override", TINY.replace("student_steps=2", "student_steps=3"), *argv[-2:],
            "--losses", "onehot,m3se"]
    assert main(argv) == 0
    assert (out / "models/teacher/.done.json").stat().st_mtime == teacher_stamp
    assert (out / "models/student-m3se-s13/.done.json").stat().st_mtime > student_stamp


def test_students_share_their_frozen_layers_and_evaluate_their_start_once(tiny_beir, tiny_bert, tmp_path, caplog):
    import re

    caplog.set_level("INFO")
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", TINY,
                 "--out", str(tmp_path / "run"), "--losses", "onehot,kl,rankdistil"]) == 0
    steps0 = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 0 eval")]
    assert len(steps0) == 4 and steps0[1] == steps0[2] == steps0[3]  # the teacher's start, then the students'
    # re-ranked once: the students' common start (2 more students, and the zero-shot DE's evaluation), and
    # the dev candidates of each chosen checkpoint (the teacher's and 3 students' evaluations), except that
    # a student that kept its start is not evaluated again: it takes the zero-shot DE's evaluation
    memo = [r for r in caplog.records if "by these weights done before" in r.getMessage()]
    reused = [r for r in caplog.records if "its evaluation is reused" in r.getMessage()]
    kept = [json.loads((tmp_path / f"run/models/student-{loss}-s13/dualist.json").read_text())["kept_start"]
            for loss in ("onehot", "kl", "rankdistil")]
    assert len(reused) == sum(kept) and len(memo) == 3 + 4 - len(reused)
    caches = [tuple(map(int, re.search(r"texts=(\d+).*hits=(\d+), misses=(\d+)", r.getMessage()).groups()))
              for r in caplog.records if r.name == "dualist.training.student" and "PrefixCache" in r.getMessage()]
    assert len(caches) == 3 and caches[0][0] > 0
    # one cache for all: the same training texts add nothing below the cut, and its hits add up
    assert [(texts, misses) for texts, _, misses in caches] == [(caches[0][0], caches[0][2])] * 3
    assert caches[0][1] < caches[1][1] < caches[2][1], caches


def test_bad_override_is_explained(tiny_beir, tmp_path, capsys):
    assert main(["repro", "--dataset", str(tiny_beir), "--override", "nonsense=1", "--out", str(tmp_path)]) == 2
    assert "teacher_steps" in capsys.readouterr().err


def test_partial_run_with_other_settings_starts_over(repro, caplog):
    """A student killed mid-run, then rerun with another setting, is retrained rather than refused."""
    out, argv = repro
    student = out / "models/student-onehot-s13"
    (student / ".done.json").unlink()  # as if the run had been killed after a checkpoint
    assert (student / "checkpoints").exists()
    changed = [*argv[:-4], "--override", TINY + ",student_lr=0.001", *argv[-2:], "--losses", "onehot"]
    caplog.set_level("INFO")
    assert main(changed) == 0
    assert (student / ".done.json").exists()
    assert "resuming from" not in caplog.text


def test_seeds_report_mean_std_and_paired_test(tiny_beir, tiny_bert, tmp_path):
    out = tmp_path / "seeds"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", TINY,
                 "--losses", "onehot,m3se", "--seeds", "2", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    m3se = next(r for r in res["rows"] if r["model"] == "DE + M3SE")
    assert "re-rank nDCG@10 std" in m3se and m3se["re-rank nDCG@10 std"] >= 0.0
    assert (out / "models/student-m3se-s13").exists() and (out / "models/student-m3se-s14").exists()
    sig = res["significance"]["DE + M3SE"]
    assert 0.0 <= sig["p_value"] <= 1.0
    html = (out / "report/index.html").read_text()
    assert "Paired permutation test" in html and "re-rank nDCG@10 std" in html


def test_caps_that_remove_nothing_keep_every_finished_stage(repro, caplog):
    out, argv = repro
    teacher = (out / "models/teacher/.done.json").stat().st_mtime
    scores = (out / "scores/train.teacher.parquet").stat().st_mtime
    caplog.set_level("INFO")
    roomy = TINY + ",score_queries=1000,select_queries=1000,score_positives=50"
    assert main([*argv[:-4], "--override", roomy, *argv[-2:], "--losses", "mse"]) == 0
    assert (out / "models/teacher/.done.json").stat().st_mtime == teacher
    assert (out / "scores/train.teacher.parquet").stat().st_mtime == scores
    assert "capped samples" not in caplog.text


def test_teacher_eval_every_picks_the_checkpoint_on_dev_along_the_way(tiny_beir, tiny_bert, tmp_path):
    out = tmp_path / "evals"
    override = TINY + ",teacher_eval_every=1"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", override,
                 "--losses", "onehot", "--out", str(out)]) == 0
    evals = [json.loads(line) for line in (out / "models/teacher/eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 1, 2, 3]  # the start, then every step
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["profile"]["teacher_eval_every"] == 1


def test_caps_sample_the_scored_training_queries_and_the_selection_dev_queries(tiny_beir, tiny_bert, tmp_path):
    import pyarrow.parquet as pq
    import yaml

    out, matrix = tmp_path / "capped", tmp_path / "matrix.yaml"
    override = TINY + ",score_queries=5,score_positives=1,select_queries=3"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", override,
                 "--losses", "onehot,kl", "--out", str(out), "--record", "--matrix", str(matrix)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["training queries scored and trained on"] == 5
    assert res["settings"]["dev queries for checkpoint selection"] == 3
    # the dev queries outside the 3 re-ranked by every trained model in the selection table
    dev = len(json.loads((out / "results/zeroshot.json").read_text())["rerank_dev"]["per_query"]["ndcg@10"])
    assert dev > 3 and [r["held-out dev queries"] for r in res["selection"]] == [dev - 3] * 3
    assert all(0.0 <= r["held-out dev re-rank"] <= 1.0 and 0 < r["rerank_dev p"] <= 1 for r in res["selection"])
    students = res["selection"][1:]  # retrieval for the dual-encoders, not the teacher
    assert all(0.0 <= r["held-out dev retrieval"] <= 1.0 for r in students)
    assert "held-out dev retrieval" not in res["selection"][0]
    assert "held-out dev retrieval" in (out / "report/index.html").read_text()
    assert res["settings"]["profile"]["score_queries"] == 5
    table = pq.read_table(out / "scores/train.teacher.parquet").to_pydict()
    scored = set(table["qid"])
    assert len(scored) == 5
    assert len(table["qid"]) <= 5 * (8 + 1)  # top-8 candidates and at most one positive each
    teacher = json.loads((out / "models/teacher/dualist.json").read_text())
    assert teacher["config"]["train"]["max_positives"] == 1  # the teacher trains on the same positives
    # the score-evolution probe follows a query the students train on
    probe = json.loads((out / "models/student-onehot-s13/probes.jsonl").read_text().splitlines()[0])
    assert probe["query_id"] in scored
    # --record keeps the overrides and the loss list (both in the id), so --check reruns the same condition
    entry = yaml.safe_load(matrix.read_text())["conditions"][f"{tiny_beir.name}-quick+{override}@losses=onehot+kl"]
    assert entry["override"] == override.split(",") and entry["profile"] == "quick"
    assert entry["losses"] == ["onehot", "kl"] and "--losses onehot,kl --override " in entry["command"]
    assert entry["wall_minutes"] >= 0 and "resumed_run_minutes" not in entry and not res["settings"]["resumed work folder"]
    # recorded again from the now finished folder: its minutes are not a fresh run's
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", override,
                 "--losses", "onehot,kl", "--out", str(out), "--record", "--matrix", str(matrix)]) == 0
    entry = yaml.safe_load(matrix.read_text())["conditions"][f"{tiny_beir.name}-quick+{override}@losses=onehot+kl"]
    # ... but those of every invocation that built the folder (the first one's stages included)
    logged = [x for x in map(json.loads, (out / "timings.jsonl").read_text().splitlines()) if "seconds" in x]
    assert len({x["invocation"] for x in logged}) == 2 and {"teacher training", "evaluation"} <= {x["stage"] for x in logged}
    first = sum(x["seconds"] for x in logged if x["invocation"] == logged[0]["invocation"])
    assert logged[-1]["stage"] == "diagnostics and report"  # logged after the report that holds the total
    assert "wall_minutes" not in entry and entry["resumed_run_minutes"] == pytest.approx(
        sum(x["seconds"] for x in logged[:-1]) / 60, abs=0.051)
    assert entry["resumed_run_minutes"] >= round(first / 60, 1)
    assert entry["expected"]["onehot"]["rerank.ndcg@10"] == pytest.approx(
        next(r for r in res["rows"] if r["model"] == "DE one-hot")["re-rank nDCG@10"], abs=1e-4)


def test_claims_say_when_there_is_no_gap_to_close_and_which_way_a_difference_goes():
    from dualist.evaluation import Comparison, ComparisonRow
    from dualist.report.claims import paper_claims

    def table(teacher, onehot, m3se):
        common = {"retrieval.ndcg@10": 0.1, "dev.ndcg@10": 0.2}
        return {"bm25": {"rerank.ndcg@10": 0.3, **common}, "zeroshot": {"rerank.ndcg@10": 0.2, **common},
                "teacher": {"rerank.ndcg@10": teacher, **common}, "onehot": {"rerank.ndcg@10": onehot, **common},
                "m3se": {"rerank.ndcg@10": m3se, **common}}

    def versus_onehot(diff, p):
        rows = [ComparisonRow("onehot", 0.5, 0.0, None, False), ComparisonRow("m3se", 0.5 + diff, diff, p, p < 0.05)]
        return Comparison("ndcg@10", "onehot", "permutation", 0.05, rows)

    below = {c.id: c for c in paper_claims(table(0.137, 0.200, 0.164), versus_onehot(-0.036, 0.0001), "m3se", 1)}
    assert not below["teacher_beats_onehot"].supported
    assert below["teacher_beats_onehot"].text.startswith("NOT SUPPORTED: teacher beats")
    gap = below["m3se_closes_half_gap"]
    assert not gap.supported and gap.figures["closed"] is None
    assert "no gap to close" in gap.text and "nan" not in gap.text
    beats = below["m3se_beats_onehot"]
    assert not beats.supported and beats.figures["diff"] == -0.036 and beats.figures["p_value"] == 0.0001
    assert "M3SE - one-hot = -0.036" in beats.text
    assert "p = 0.0001" in beats.text  # as the significance table writes it, not rounded to 0.000
    assert not below["best_distilled_beats_baselines"].supported
    above = {c.id: c for c in paper_claims(table(0.6, 0.5, 0.56), versus_onehot(0.06, 0.01), "m3se", 1)}
    assert above["m3se_closes_half_gap"].supported and above["m3se_closes_half_gap"].figures["closed"] == \
        pytest.approx(0.6)
    assert "closes 60%" in above["m3se_closes_half_gap"].text
    assert above["m3se_beats_onehot"].supported
    # a difference that rounds to nothing reads as zero, not as a signed "-0"
    level = {c.id: c for c in paper_claims(table(0.678, 0.607, 0.6068), versus_onehot(-0.0001, 0.996), "m3se", 1)}
    assert "closes 0%" in level["m3se_closes_half_gap"].text
    assert "M3SE - one-hot = 0.000" in level["m3se_beats_onehot"].text
    assert "-0" not in level["m3se_closes_half_gap"].text + level["m3se_beats_onehot"].text


def test_stage_replaced_by_a_killed_run_with_other_settings_is_redone(repro, tmp_path, monkeypatch, caplog):
    """Teacher done; a rerun with another setting replaces its outputs and is killed; the first settings again
    must retrain the teacher, not take the old marker for a model that no longer exists."""
    import shutil

    import dualist.training

    src, argv = repro
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    argv = [*argv[:-1], str(out)]
    real_train = dualist.training.train_teacher

    def replace_then_die(dataset, split, run, model_config, train_config, out_dir, **kwargs):
        shutil.rmtree(out_dir / "model")  # the trainer starting over removes the old model first
        raise KeyboardInterrupt

    monkeypatch.setattr(dualist.training, "train_teacher", replace_then_die)
    assert main([*argv[:-4], "--override", TINY.replace("teacher_steps=3", "teacher_steps=4"), *argv[-2:]]) == 130
    monkeypatch.setattr(dualist.training, "train_teacher", real_train)
    caplog.set_level("INFO")
    assert main([*argv, "--losses", "onehot"]) == 0
    assert "teacher up to date" not in caplog.text
    assert (out / "models/teacher/model").is_dir()


def test_marked_finished_model_that_is_missing_is_trained_again(repro, tmp_path, caplog):
    """A work folder from before markers were cleared can hold a valid marker and no model."""
    import shutil

    src, argv = repro
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    shutil.rmtree(out / "models/teacher/model")
    caplog.set_level("INFO")
    assert main([*argv[:-1], str(out), "--losses", "onehot"]) == 0
    assert "marked finished but its model" in caplog.text
    assert (out / "models/teacher/model").is_dir()


def test_evaluation_rewritten_by_a_killed_run_with_other_settings_is_redone(repro, tmp_path, monkeypatch):
    """BM25 evaluated at depth 10; a depth-5 rerun rewrites its results file and is killed before its
    marker; depth 10 again must evaluate again, not hand back the depth-5 figures under the old marker."""
    import shutil

    import dualist.stages.markers

    src, argv = repro
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    argv = [*argv[:-1], str(out)]
    real_mark = dualist.stages.markers.mark_done

    def die_before_results_marker(path, *args, **kwargs):
        if Path(path).parent.name == "results":
            raise KeyboardInterrupt
        return real_mark(path, *args, **kwargs)

    monkeypatch.setattr(dualist.stages.markers, "mark_done", die_before_results_marker)
    assert main([*argv[:-4], "--override", TINY.replace("rerank_depth=10", "rerank_depth=2"), *argv[-2:]]) == 130
    shallow = json.loads((out / "results/bm25.json").read_text())["rerank_test"]
    monkeypatch.setattr(dualist.stages.markers, "mark_done", real_mark)
    assert main([*argv, "--losses", "onehot"]) == 0
    again = json.loads((out / "results/bm25.json").read_text())["rerank_test"]
    assert again == json.loads((src / "results/bm25.json").read_text())["rerank_test"]
    assert again != shallow


def test_students_with_frozen_layers_share_them_in_the_evaluation(tiny_beir, tiny_bert, tmp_path):
    """student_freeze_layers: the students keep the start's bottom layer; the evaluation, which runs the
    corpus through it once for every dual-encoder, gives the figures of the uncached models."""
    import torch

    from dualist.data import load_beir, read_trec_run
    from dualist.evaluation import evaluate, rerank
    from dualist.models import DualEncoder

    out = tmp_path / "frozen"
    override = TINY + ",student_freeze_layers=1,lean_activations=true"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", override,
                 "--losses", "onehot,m3se", "--out", str(out)]) == 0
    ds = load_beir(tiny_beir)
    start = DualEncoder(model=str(tiny_bert)).state_dict()  # the zero-shot start
    for loss in ("onehot", "m3se"):
        model_dir = out / f"models/student-{loss}-s13"
        meta = json.loads((model_dir / "dualist.json").read_text())
        assert meta["config"]["train"]["freeze_layers"] == 1 and meta["config"]["train"]["lean_activations"]
        student = DualEncoder.from_pretrained(model_dir / "model")  # no cache: every layer computed
        bottom = [k for k in start if ".embeddings." in k or ".encoder.layer.0." in k]
        assert bottom and all(torch.equal(student.state_dict()[k], start[k]) for k in bottom)
        run = rerank(student, ds, ds.queries_for("test"), read_trec_run(out / "runs/test.bm25.trec"), depth=10)
        recorded = json.loads((out / f"results/{loss}-s0.json").read_text())["rerank_test"]["mean"]
        assert evaluate(ds.qrels_for("test"), run, ["ndcg@10"]).mean["ndcg@10"] == pytest.approx(
            recorded["ndcg@10"], abs=1e-6)


def test_graded_train_qrels_shipped_with_a_dataset_are_used_and_named(tiny_beir, tiny_bert, tmp_path):
    import shutil

    data = tmp_path / "graded"
    shutil.copytree(tiny_beir, data)
    (data / "extra").mkdir()
    shutil.copy(data / "qrels" / "train.tsv", data / "extra" / "train.graded-2-1-0.tsv")  # grades 2 and 1
    out = tmp_path / "out"
    assert main(["repro", "--dataset", str(data), "--model", str(tiny_bert), "--override", TINY,
                 "--losses", "onehot", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["training qrels"] == "train.graded-2-1-0.tsv"
    assert res["settings"]["positive grade"] == ">= 2"
    # off by override: BEIR's own file, every judged document a positive
    assert main(["repro", "--dataset", str(data), "--model", str(tiny_bert), "--override", TINY + ",train_qrels=beir",
                 "--losses", "onehot", "--out", str(tmp_path / "beir")]) == 0
    res = json.loads((tmp_path / "beir" / "results.json").read_text())
    assert res["settings"]["positive grade"] == ">= 1"


def test_teacher_folds_cross_fit_the_distillation_targets(tiny_beir, tiny_bert, tmp_path):
    from dualist.data import load_beir
    from dualist.models import CrossEncoder
    from dualist.training import TeacherScores
    from dualist.training.folds import assign_folds

    out = tmp_path / "folds"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override",
                 TINY + ",teacher_folds=2", "--losses", "onehot,kl", "--out", str(out)]) == 0
    teachers = [CrossEncoder.from_pretrained(out / "models" / f"teacher-fold-{f}" / "model") for f in range(2)]
    full = CrossEncoder.from_pretrained(out / "models" / "teacher" / "model")
    ds = load_beir(tiny_beir)
    folds = assign_folds(list(ds.qrels_for("train")), 2, 13, texts=ds.queries)
    cache = TeacherScores.load(out / "scores/train.teacher.parquet").as_dict()
    for qid in sorted(cache)[:4]:  # each cached score is the query's own fold-teacher's, not the full teacher's
        did = sorted(cache[qid])[0]
        pair = ([ds.queries[qid]], [ds.doc_text(did)])
        assert cache[qid][did] == pytest.approx(float(teachers[folds[qid]].score(*pair)[0]), abs=1e-4)
        assert cache[qid][did] != pytest.approx(float(full.score(*pair)[0]), abs=1e-6)


def test_mined_negatives_replace_the_bm25_candidates_of_teacher_scoring_and_students(tiny_beir, tiny_bert, tmp_path):
    from dualist.data import read_trec_run
    from dualist.training import TeacherScores

    out = tmp_path / "mined"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override",
                 TINY + ",mined_negatives=true", "--losses", "onehot,mse", "--out", str(out)]) == 0
    mined = read_trec_run(out / "runs" / "train.mined.trec")
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["training candidates"].startswith("mined")
    from dualist.data import load_beir

    train_qrels = load_beir(tiny_beir).qrels_for("train")
    for qid, docs in mined.items():
        assert not {d for d, g in train_qrels[qid].items() if g > 0} & set(docs)
    scores = TeacherScores.load(out / "scores" / "train.teacher.parquet").as_dict()
    negatives = {(q, d) for q, docs in scores.items() for d in docs if train_qrels[q].get(d, 0) <= 0}
    assert negatives and all(d in mined[q] for q, d in negatives)  # the teacher scored mined candidates only


def test_teacher_bm25_chooses_the_weight_on_dev_and_the_distilled_students_use_it(tiny_beir, tiny_bert, tmp_path):
    from dualist._io import read_json

    out = tmp_path / "bm25"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override",
                 TINY + ",teacher_bm25=true", "--losses", "onehot,kl", "--out", str(out)]) == 0
    chosen = read_json(out / "scores" / "bm25_weight.json")
    weight = chosen["weight"]
    assert chosen["split"] == "dev" and chosen["depth"] == 8
    assert chosen["dev"][str(weight)] == max(chosen["dev"].values())
    train = lambda loss: read_json(out / "models" / f"student-{loss}-s13" / "dualist.json")["config"]["train"]  # noqa: E731
    assert train("kl")["teacher_bm25_weight"] == weight and train("onehot")["teacher_bm25_weight"] == 0
    setting = json.loads((out / "results.json").read_text())["settings"]["distillation targets"]
    # on this fixture BM25 lowers the teacher's dev figure, so the teacher alone is kept, and said so
    expected = (f"teacher + BM25 ensemble, BM25 weight {weight:g} chosen on" if weight
                else "the teacher's scores (BM25 weight 0 chosen on dev")
    assert setting.startswith(expected)


def test_a_retrained_teacher_is_scored_again_rather_than_refused(repro, tmp_path, caplog):
    """The work folder is repro's own: a changed teacher setting retrains the teacher and re-scores its cache."""
    import shutil

    src, argv = repro
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    caplog.set_level("INFO")
    changed = [*argv[:-4], "--override", TINY.replace("teacher_steps=3", "teacher_steps=4"), "--out", str(out),
               "--losses", "onehot,m3se"]
    assert main(changed) == 0
    assert "re-scoring" in caplog.text and "teacher up to date" not in caplog.text
    assert not (out / "scores/train.teacher.parquet.parts").exists()


def test_the_positive_margin_override_reaches_the_distilled_students_only():
    from types import SimpleNamespace

    from dualist.repro.plan import ReproArgs, StudentRun, _student, resolve_profile

    args = ReproArgs(profile="full", override=["teacher_positive_margin=0.5"])
    prof = resolve_profile(args)
    assert prof.teacher_positive_margin == 0.5 and resolve_profile(ReproArgs()).teacher_positive_margin is None
    samples = SimpleNamespace(max_positives=5, min_grade=1, train_ids=None, select_ids=None)
    cands = {s: f"{s}.trec" for s in ("train", "dev", "test")}

    def margin(loss):
        return _student(prof, args, cands, samples, StudentRun(loss, 0, 13), "scores.parquet").train.teacher_positive_margin

    assert (margin("kl"), margin("m3se"), margin("onehot")) == (0.5, 0.5, None)


@pytest.mark.parametrize(("key", "value", "default"), [
    ("select_min_delta", 0.005, 0.0),  # off by default: any dev gain leaves the start
    ("select_alpha", 0.05, None),      # off by default: no significance test
])
def test_a_selection_override_reaches_teacher_and_students_and_is_off_by_default(key, value, default):
    from types import SimpleNamespace

    from dualist.repro.plan import ReproArgs, StudentRun, _student, _teacher, resolve_profile

    args = ReproArgs(profile="quick", override=[f"{key}={value}"])
    prof = resolve_profile(args)
    samples = SimpleNamespace(max_positives=5, min_grade=1, train_ids=None, select_ids=None)
    cands = {s: f"{s}.trec" for s in ("train", "dev", "test")}
    students = [getattr(_student(prof, args, cands, samples, StudentRun(loss, 0, 13), "scores.parquet").train, key)
                for loss in ("onehot", "kl", "m3se")]
    assert students == [value] * 3 and getattr(_teacher(prof, args, cands, samples).train, key) == value
    plain = resolve_profile(ReproArgs())
    assert getattr(plain, key) == default and getattr(_teacher(plain, ReproArgs(), cands, samples).train, key) == default


def test_pseudo_queries_are_scored_by_the_teacher_and_trained_on_by_the_distilled_students(tiny_beir, tiny_bert,
                                                                                            tmp_path, caplog):
    from dualist._io import read_json
    from dualist.data import load_beir, read_trec_run
    from dualist.training import TeacherScores

    out = tmp_path / "pseudo"
    argv = ["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--losses", "onehot,kl", "--out", str(out)]
    assert main([*argv, "--override", TINY + ",pseudo_queries=6"]) == 0
    ds = load_beir(tiny_beir)
    pseudo = TeacherScores.load(out / "scores" / "pseudo.teacher.parquet").as_dict()
    assert len(pseudo) == 6 and all(q.startswith("pseudo-") for q in pseudo)
    for qid, docs in pseudo.items():  # its own document (the positive) and its BM25 top score_depth
        source = qid[len("pseudo-"):].rsplit("-", 1)[0]
        assert source in docs and set(docs) - {source} <= set(read_trec_run(out / "runs" / "pseudo.bm25.trec")[qid])
        assert len(docs) >= 8
    combined = TeacherScores.load(out / "scores" / "train+pseudo.teacher.parquet").as_dict()
    train = TeacherScores.load(out / "scores" / "train.teacher.parquet").as_dict()
    assert combined == {**train, **pseudo}
    assert set(read_trec_run(out / "runs" / "train+pseudo.trec")) == set(train) | set(pseudo)
    assert not set(pseudo) & set(ds.queries)  # the dataset itself is untouched
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["unjudged training queries"] == "6 corpus sentences, trained on by the distilled students"
    # the distilled student trained on the joined candidates; the one-hot DE is the one of a run without them
    meta = lambda loss: read_json(out / "models" / f"student-{loss}-s13" / "dualist.json")  # noqa: E731
    assert meta("kl")["resolved"]["steps_per_epoch"] > meta("onehot")["resolved"]["steps_per_epoch"]
    assert meta("kl")["inputs"]["teacher_scores"] == TeacherScores.load(
        out / "scores" / "train+pseudo.teacher.parquet").fingerprint
    caplog.clear()
    caplog.set_level("INFO")
    assert main([*argv, "--override", TINY]) == 0
    assert "student onehot (seed 13) up to date" in caplog.text
    assert "student kl (seed 13) up to date" not in caplog.text
    plain = meta("onehot")["resolved"]["steps_per_epoch"]
    # the control: with pseudo_onehot the one-hot DE trains on them too
    assert main([*argv, "--override", TINY + ",pseudo_queries=6,pseudo_onehot=true"]) == 0
    assert meta("onehot")["resolved"]["steps_per_epoch"] == meta("kl")["resolved"]["steps_per_epoch"] > plain
    assert meta("onehot")["inputs"]["candidates"] == meta("kl")["inputs"]["candidates"]


def test_pseudo_queries_join_cross_fitted_scores(tiny_beir, tiny_bert, tmp_path):
    """Fold-teachers score the judged queries, the teacher the sentences that none of them saw."""
    from dualist.training import TeacherScores

    out = tmp_path / "folds-pseudo"
    assert main(["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override",
                 TINY + ",teacher_folds=2,pseudo_queries=4", "--losses", "kl", "--out", str(out)]) == 0
    folds = TeacherScores.load(out / "scores" / "train.teacher.parquet")
    pseudo = TeacherScores.load(out / "scores" / "pseudo.teacher.parquet")
    assert folds.meta["teacher"] != pseudo.meta["teacher"] and len(pseudo.as_dict()) == 4
    combined = TeacherScores.load(out / "scores" / "train+pseudo.teacher.parquet")
    assert combined.as_dict() == {**folds.as_dict(), **pseudo.as_dict()}

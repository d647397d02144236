"""End to end: every CLI stage on the tiny BEIR fixture with a tiny local BERT (offline, seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dualist.cli import main

TRAIN = ["--max-steps", "4", "--batch-size", "4", "--num-negatives", "3", "--log-every", "1"]


def run(*argv: str) -> None:
    assert main([*map(str, argv)]) == 0


def stage_commands(data: Path, bert: Path, w: Path) -> list[list]:
    """The CLI pipeline up to the student: candidates, teacher, teacher scores, student."""
    d = ["--data", str(data)]
    cands = [["candidates", *d, "--split", split, "--k", 20, "--out", w / f"runs/{split}.bm25.trec"]
             for split in ("train", "dev", "test")]
    return [*cands,
            ["train-teacher", *d, "--candidates", w / "runs/train.bm25.trec", "--dev-split", "dev",
             "--dev-candidates", w / "runs/dev.bm25.trec", "--dev-depth", 10, "--model", bert,
             "--max-length", 64, *TRAIN, "--out", w / "models/teacher"],
            ["score-teacher", *d, "--teacher", _model_dir(w / "models/teacher"), "--candidates",
             w / "runs/train.bm25.trec", "--depth", 10, "--out", w / "scores/train.teacher.parquet"],
            ["train-student", *d, "--loss", "m3se", "--teacher-scores", w / "scores/train.teacher.parquet",
             "--candidates", w / "runs/train.bm25.trec", "--model", bert, "--neg-rank-max", 10, *TRAIN,
             "--out", w / "models/student-m3se"]]


@pytest.fixture(scope="module")
def pipeline(tiny_beir, tiny_bert, tmp_path_factory):
    w = tmp_path_factory.mktemp("cli")
    for argv in stage_commands(tiny_beir, tiny_bert, w):
        run(*argv)
    return w, ["--data", str(tiny_beir)]


def test_rerunning_the_pipeline_skips_every_finished_stage(pipeline, tiny_beir, tiny_bert, caplog):
    """The CLI's stages are the repro's: a rerun finds each output up to date and rewrites nothing."""
    w, _ = pipeline
    outputs = [w / f"runs/{s}.bm25.trec" for s in ("train", "dev", "test")] + [
        w / "models/teacher", w / "scores/train.teacher.parquet", w / "models/student-m3se"]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    markers = {p: (p / ".done.json" if p.is_dir() else p.with_name(p.name + ".done.json")) for p in outputs}
    marks = {p: m.stat().st_mtime_ns for p, m in markers.items() if m.exists()}
    assert set(marks) == set(outputs) - {w / "scores/train.teacher.parquet"}  # the score cache checks itself
    caplog.set_level("INFO")
    for argv in stage_commands(tiny_beir, tiny_bert, w):
        run(*argv)
    assert caplog.text.count("candidates up to date") == 3
    assert "teacher up to date" in caplog.text and "teacher scores up to date" in caplog.text
    assert "student m3se (seed 42) up to date" in caplog.text
    assert {p: m.stat().st_mtime_ns for p, m in markers.items() if m.exists()} == marks
    assert (w / "scores/train.teacher.parquet").stat().st_mtime_ns == stamps[w / "scores/train.teacher.parquet"]


def test_a_changed_setting_retrains_the_student_only(pipeline, tiny_beir, tiny_bert, tmp_path, caplog, capsys):
    """A finished student rerun with another setting is refused, as any run made with other settings is
    (resuming is the default), and left as it was; --no-resume retrains it, and only it."""
    import shutil

    w, _ = pipeline
    copy = tmp_path / "w"
    shutil.copytree(w, copy)
    *_, teacher, _, student = stage_commands(tiny_beir, tiny_bert, copy)
    marker = copy / "models/student-m3se/.done.json"
    before = marker.stat().st_mtime_ns
    caplog.set_level("INFO")
    run(*teacher)
    assert "teacher up to date" in caplog.text
    capsys.readouterr()
    assert main([*map(str, student), "--lr", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "--no-resume" in err, err
    assert marker.stat().st_mtime_ns == before
    run(*student)  # the earlier settings still find their finished run
    assert "student m3se (seed 42) up to date" in caplog.text
    caplog.clear()
    run(*student, "--lr", "1e-4", "--no-resume")
    assert "student m3se (seed 42) up to date" not in caplog.text
    assert marker.stat().st_mtime_ns > before


def _model_dir(out: Path) -> Path:
    """The folder the trainer left its chosen model in (``model/``)."""
    return out / "model"


def test_candidates_run_and_resolved_config(pipeline, tiny_beir):
    w, _ = pipeline
    lines = (w / "runs/test.bm25.trec").read_text().splitlines()
    assert lines and all(len(line.split()) == 6 for line in lines)
    cfg = yaml.safe_load((w / "runs/test.bm25.trec.config.yaml").read_text())
    assert cfg["k"] == 20 and cfg["split"] == "test" and cfg["data"] == str(tiny_beir)


def test_teacher_and_student_folders(pipeline):
    w, _ = pipeline
    assert (w / "models/teacher/config.yaml").exists()
    assert (w / "models/teacher/metrics.jsonl").read_text().count("\n") >= 4
    assert (_model_dir(w / "models/student-m3se") / "modules.json").exists()


def test_rerank_search_index_evaluate(pipeline, tmp_path):
    w, d = pipeline
    student, teacher = _model_dir(w / "models/student-m3se"), _model_dir(w / "models/teacher")
    run("rerank", *d, "--model", teacher, "--candidates", w / "runs/test.bm25.trec", "--depth", 10,
        "--out", tmp_path / "ce.trec")
    run("rerank", *d, "--model", student, "--candidates", w / "runs/test.bm25.trec", "--depth", 10,
        "--out", tmp_path / "de.trec")
    run("index", *d, "--model", student, "--out", tmp_path / "index")
    run("search", *d, "--model", student, "--index", tmp_path / "index", "--k", 10,
        "--rerank-with", teacher, "--rerank-depth", 5, "--out", tmp_path / "two-stage.trec")
    run("search", *d, "--model", student, "--k", 10, "--out", tmp_path / "exact.trec")
    for name in ("ce", "de", "two-stage", "exact"):
        run("evaluate", *d, "--split", "test", "--run", tmp_path / f"{name}.trec", "--metrics",
            "ndcg@10,mrr@10,recall@100", "--out", tmp_path / f"{name}.json")
        res = json.loads((tmp_path / f"{name}.json").read_text())
        assert set(res["mean"]) == {"ndcg@10", "mrr@10", "recall@100"}
        assert all(0.0 <= v <= 1.0 for v in res["mean"].values())
    # The re-ranked run keeps the candidate set: depth 10 -> at most 10 docs per query.
    run_lines = (tmp_path / "de.trec").read_text().splitlines()
    per_q: dict[str, int] = {}
    for line in run_lines:
        per_q[line.split()[0]] = per_q.get(line.split()[0], 0) + 1
    assert max(per_q.values()) <= 10


def test_precision_flag_runs_the_onnx_copies(pipeline, tmp_path):
    """--precision onnx-fp32 gives the fp32 run's documents and scores; onnx-int8 keeps its candidates."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from dualist.data import read_trec_run

    w, d = pipeline
    teacher, student = _model_dir(w / "models/teacher"), _model_dir(w / "models/student-m3se")
    cands = w / "runs/test.bm25.trec"
    for name, model in (("ce", teacher), ("de", student)):
        runs = {}
        for precision in ("fp32", "onnx-fp32", "onnx-int8", "int8", "torch-int8"):
            run("rerank", *d, "--model", model, "--candidates", cands, "--depth", 10, "--precision", precision,
                "--out", tmp_path / f"{name}.{precision}.trec")
            runs[precision] = read_trec_run(tmp_path / f"{name}.{precision}.trec")
        assert runs["onnx-fp32"].keys() == runs["fp32"].keys()
        # with the onnx extra installed, int8 is ONNX Runtime's copy, not torch's
        for q, docs in runs["onnx-int8"].items():
            assert runs["int8"][q] == pytest.approx(docs, abs=1e-6)
        assert any(runs["torch-int8"][q] != pytest.approx(docs, abs=1e-6) for q, docs in runs["onnx-int8"].items())
        for q, docs in runs["fp32"].items():
            assert runs["onnx-fp32"][q] == pytest.approx(docs, abs=1e-4)
            assert runs["onnx-int8"][q].keys() == docs.keys()
    run("index", *d, "--model", student, "--precision", "onnx-fp32", "--out", tmp_path / "index")
    run("search", *d, "--model", student, "--index", tmp_path / "index", "--k", 5, "--precision", "onnx-fp32",
        "--out", tmp_path / "search.trec")
    assert read_trec_run(tmp_path / "search.trec")
    # two-stage search hands --precision to the re-ranking cross-encoder as well
    two = {}
    for precision in ("fp32", "onnx-fp32", "onnx-int8"):
        run("search", *d, "--model", student, "--k", 8, "--rerank-with", teacher, "--rerank-depth", 4,
            "--precision", precision, "--out", tmp_path / f"two.{precision}.trec")
        two[precision] = read_trec_run(tmp_path / f"two.{precision}.trec")
    assert two["fp32"].keys() == two["onnx-fp32"].keys()
    for q, docs in two["fp32"].items():
        assert two["onnx-fp32"][q] == pytest.approx(docs, abs=1e-4)
    shared = [(q, doc) for q, docs in two["fp32"].items() for doc in docs if doc in two["onnx-int8"].get(q, {})]
    assert shared and any(abs(two["onnx-int8"][q][doc] - two["fp32"][q][doc]) > 1e-4 for q, doc in shared)


def test_yaml_config_is_honoured_and_flags_win(pipeline, tmp_path):
    w, d = pipeline
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"split": "dev", "k": 7, "out": str(tmp_path / "x.trec")}))
    run("candidates", *d, "--config", cfg, "--k", 5)
    counts: dict[str, int] = {}
    for line in (tmp_path / "x.trec").read_text().splitlines():
        counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    assert max(counts.values()) == 5  # the flag beat the YAML's 7
    assert yaml.safe_load((tmp_path / "x.trec.config.yaml").read_text())["split"] == "dev"


def test_errors_are_clear(tiny_beir, tmp_path, capsys):
    assert main(["candidates", "--data", str(tiny_beir), "--split", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "train" in err  # names the bad split and lists the ones that exist
    assert main(["candidates", "--data", str(tiny_beir)]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_every_subcommand_has_help():
    out = subprocess.run([sys.executable, "-m", "dualist", "--help"], capture_output=True, text=True, check=True)
    for sub in ("candidates", "train-teacher", "score-teacher", "train-student", "index", "search", "rerank",
                "evaluate", "repro"):
        assert sub in out.stdout
    h = subprocess.run([sys.executable, "-m", "dualist", "train-student", "--help"], capture_output=True,
                       text=True, check=True).stdout
    assert "m3se" in h and "margin_mse" in h and "--lr" in h and "(default:" in h


def test_score_teacher_can_cap_the_positives(pipeline, tiny_beir, tmp_path):
    import pyarrow.parquet as pq

    from dualist.data import load_beir

    w, d = pipeline
    for name, cap in (("all", 0), ("one", 1)):
        run("score-teacher", *d, "--teacher", _model_dir(w / "models/teacher"), "--candidates",
            w / "runs/train.bm25.trec", "--depth", 1, "--max-positives", cap, "--out", tmp_path / f"{name}.parquet")
    tables = {name: pq.read_table(tmp_path / f"{name}.parquet").to_pydict() for name in ("all", "one")}
    pairs = {name: set(zip(t["qid"], t["did"])) for name, t in tables.items()}
    assert pairs["one"] < pairs["all"]  # each tiny query has two positives: the cap drops one
    qrels = load_beir(tiny_beir).qrels_for("train")
    best = {(q, doc) for q, grades in qrels.items() for doc, g in grades.items() if g == 2}
    assert best <= pairs["one"]  # the kept positive is the best-graded one

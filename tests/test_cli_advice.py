"""The advice in an error names what a command-line user can do: flags the CLI has, the real cause."""

from __future__ import annotations

import shutil

import pytest

from dualist.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


def refused(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def work(tiny_beir, tiny_bert, tmp_path_factory):
    import torch

    from dualist.models import CrossEncoder

    w = tmp_path_factory.mktemp("advice")
    d = ["--data", tiny_beir]
    run("candidates", *d, "--split", "train", "--k", 20, "--out", w / "train.trec")
    run("candidates", *d, "--split", "train", "--k", 20, "--k1", 2.0, "--b", 0.9, "--out", w / "train.other.trec")
    run("candidates", *d, "--split", "dev", "--k", 20, "--out", w / "dev.trec")
    torch.manual_seed(0)
    CrossEncoder(model=str(tiny_bert), max_length=64, pooling="cls").save_pretrained(w / "teacher")
    run("score-teacher", *d, "--teacher", w / "teacher", "--candidates", w / "train.trec", "--depth", 3,
        "--out", w / "train.d3.parquet")
    return w


def test_stale_score_cache_points_to_a_flag_that_exists(tiny_beir, work, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    base = ["score-teacher", "--data", tiny_beir, "--teacher", work / "teacher", "--candidates", work / "train.trec",
            "--out", out]
    run(*base, "--depth", 2)
    assert "teacher vs labels on " in capsys.readouterr().out  # the targets' agreement with the labels
    err = refused(capsys, *base, "--depth", 3)
    assert "--force" in err
    run(*base, "--depth", 3, "--force")  # the advice works


def test_student_with_another_runs_cache_names_the_run_not_the_depth(tiny_beir, tiny_bert, work, tmp_path, capsys):
    student = ["train-student", "--data", tiny_beir, "--loss", "m3se", "--model", tiny_bert, "--max-steps", 1,
               "--batch-size", 4, "--num-negatives", 3, "--teacher-scores", work / "train.d3.parquet",
               "--out", tmp_path / "s"]
    err = refused(capsys, *student, "--neg-rank-max", 3, "--candidates", work / "train.other.trec")
    assert "another candidate run" in err and "larger depth" not in err, err
    # a cache of the same run that is too shallow still gets the depth advice, in flags
    err = refused(capsys, *student, "--neg-rank-max", 10, "--candidates", work / "train.trec")
    assert "--neg-rank-max" in err and "--depth" in err, err


def test_data_advice_names_flags(tiny_beir, tmp_path, capsys):
    data = tmp_path / "nodev"
    shutil.copytree(tiny_beir, data)
    (data / "qrels" / "dev.tsv").unlink()
    err = refused(capsys, "candidates", "--data", data, "--split", "dev", "--out", tmp_path / "r.trec")
    assert "--dev-fraction" in err
    with open(data / "qrels" / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("q-unknown\td000\t1\n")
    err = refused(capsys, "candidates", "--data", data, "--strict", "--split", "test", "--out", tmp_path / "r.trec")
    assert "--no-strict" in err
    assert not (tmp_path / "r.trec").exists()

"""Ctrl-C during training, then the same command again: the run continues; nothing resumable is deleted."""

from __future__ import annotations

import json
import logging

import pytest

from dualist.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_beir, tmp_path_factory):
    w = tmp_path_factory.mktemp("resume")
    assert main(["candidates", "--data", str(tiny_beir), "--split", "train", "--k", "20",
                 "--out", str(w / "train.trec")]) == 0
    return w


def _argv(tiny_beir, tiny_bert, runs, out, *extra):
    return [str(a) for a in ("train-student", "--data", tiny_beir, "--loss", "onehot", "--candidates",
                             runs / "train.trec", "--model", tiny_bert, "--max-steps", 4, "--batch-size", 4,
                             "--num-negatives", 3, "--checkpoint-every", 1, "--keep-checkpoints", 0, "--out", out,
                             *extra)]


def _interrupt_after(monkeypatch, step: int) -> None:
    """Raise KeyboardInterrupt (Ctrl-C) right after checkpoint ``step`` is written."""
    import dualist.training.loop as loop

    real = loop.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        path = real(*args, **kwargs)
        if path.name == f"step-{step}":
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_interrupt_then_same_command_resumes(tiny_beir, tiny_bert, runs, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "student"
    argv = _argv(tiny_beir, tiny_bert, runs, out)
    _interrupt_after(monkeypatch, 2)
    assert main(argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert _steps(out) == [1, 2] and (out / "config.yaml").exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="dualist"):
        assert main(argv) == 0
    assert "resuming from" in caplog.text and "checkpoints/step-2" in caplog.text
    assert "starting over replaces" not in caplog.text
    assert _steps(out) == [1, 2, 3, 4]
    assert (out / "model" / "modules.json").exists()


def test_rerun_with_other_settings_is_refused_and_deletes_nothing(tiny_beir, tiny_bert, runs, tmp_path,
                                                                  monkeypatch, capsys):
    out = tmp_path / "student"
    _interrupt_after(monkeypatch, 2)
    assert main(_argv(tiny_beir, tiny_bert, runs, out)) == 130
    monkeypatch.undo()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    config = (out / "config.yaml").read_text()
    capsys.readouterr()
    # another model, then another learning rate: both refused, both name --no-resume
    for extra in (["--num-layers", "1"], ["--lr", "1e-3"]):
        assert main(_argv(tiny_beir, tiny_bert, runs, out, *extra)) == 2
        err = capsys.readouterr().err
        assert "cannot resume" in err and "--no-resume" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "config.yaml").read_text() == config
    # --no-resume is the explicit way to start over
    assert main(_argv(tiny_beir, tiny_bert, runs, out, "--lr", "1e-3", "--no-resume")) == 0
    assert _steps(out) == [1, 2, 3, 4]

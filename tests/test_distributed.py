"""Several processes give one process's results: DDP training steps, cross-process in-batch negatives,
resume with another process count, sharded encoding and teacher scoring; and gradient caching.

Each module fixture launches 2 CPU processes (gloo) once, as torchrun would (RANK, WORLD_SIZE, ...),
and the tests compare what they wrote with the same work done here in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dualist.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2


# --------------------------------------------------------------------------- launching 2 processes
def _launch(fn, *args) -> None:
    """Run ``fn(rank, *args)`` in WORLD spawned processes joined by a gloo process group."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_entry, args=(port, fn, args), nprocs=WORLD, start_method="spawn")


def _entry(rank: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DUALIST_NO_PROGRESS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- the shared setup
def _setup(beir: Path):
    """The tiny dataset, its BM25 run and deterministic made-up teacher scores of every pair."""
    from dualist.candidates import bm25_run
    from dualist.data import load_beir
    from dualist.training import TeacherScores

    ds = load_beir(beir)
    run = bm25_run(ds, "train", k=20)
    scores = {q: {d: zlib.crc32(f"{q}|{d}".encode()) % 1000 / 100.0 for d in ds.corpus} for q in ds.qrels_for("train")}
    return ds, run, TeacherScores(scores)


def _student(bert: Path):
    from dualist.models import DualEncoder, DualEncoderConfig
    from dualist.training.runtime import seed_everything

    seed_everything(0)
    return DualEncoder(DualEncoderConfig(model=str(bert), query_max_length=16, doc_max_length=32))


def _config(**kw) -> TrainConfig:
    base = dict(batch_size=5, num_negatives=3, negatives="top", seed=0, device="cpu", lr=1e-3, warmup_ratio=0.0)
    return TrainConfig(**{**base, **kw})


def _steps(beir: Path, bert: Path):
    """(name, model, step_fn, batch): one micro-batch per kind of step, the last with a single row, so
    that one of the two processes has none."""
    from dualist.losses import build_loss
    from dualist.losses.in_batch import WithInBatchOneHot
    from dualist.models import CrossEncoder, CrossEncoderConfig
    from dualist.training import ExampleSource, student_step, teacher_step
    from dualist.training.runtime import seed_everything

    ds, run, ts = _setup(beir)
    five = next(iter(ExampleSource(ds, "train", run, _config(), teacher_scores=ts).batches(0)))
    one = five.select(range(1))
    in_batch = WithInBatchOneHot(build_loss("m3se"))
    kl, onehot = build_loss("kl"), build_loss("onehot")
    out = [("student-in-batch", _student(bert), lambda m, b: student_step(m, b, in_batch, in_batch_negatives=True), five),
           ("student-in-batch-1-row", _student(bert),
            lambda m, b: student_step(m, b, in_batch, in_batch_negatives=True), one),
           ("student", _student(bert), lambda m, b: student_step(m, b, kl), five),
           ("student-1-row", _student(bert), lambda m, b: student_step(m, b, kl), one)]
    seed_everything(0)
    out.append(("teacher", CrossEncoder(CrossEncoderConfig(model=str(bert), max_length=48)),
                lambda m, b: teacher_step(m, b, onehot), five))
    return out


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _step_worker(rank: int, beir: Path, bert: Path, out: Path) -> None:
    from dualist.distributed import all_mean
    from dualist.training.loop import _ddp

    results = {}
    for name, model, step_fn, batch in _steps(beir, bert):
        ddp = _ddp(model, step_fn, torch.device("cpu"))
        loss = ddp(batch)
        loss.backward()
        results[name] = {"loss": all_mean(loss.item()), "grads": _grads(model)}
    torch.save(results, out / f"steps-{rank}.pt")


def _eval_fn(model) -> dict[str, float]:
    """A dev score that moves with the weights, so that the best step is not always the first or last."""
    weight = next(model.parameters())
    return {"ndcg@10": float(torch.sin(weight.double().sum() * 1e3))}


def _train(beir: Path, bert: Path, out: Path, resume: bool = False, **kw) -> Path:
    from dualist.training import train_student

    ds, run, ts = _setup(beir)
    config = _config(max_steps=3, in_batch_negatives=True, checkpoint_every=1, keep_checkpoints=0, eval_every=1, **kw)
    from dualist.models import DualEncoderConfig

    mcfg = DualEncoderConfig(model=str(bert), query_max_length=16, doc_max_length=32)
    return train_student(ds, "train", run, mcfg, config, out, loss="m3se", teacher_scores=ts, eval_fn=_eval_fn,
                         resume=resume)


def _train_worker(rank: int, beir: Path, bert: Path, out: Path) -> None:
    from dualist.training.checkpoints import latest_checkpoint

    for name, kw in (("ddp", {}), ("ddp-grad-cache", {"grad_cache_chunk": 3})):
        _train(beir, bert, out / name, **kw)
        state = json.loads((latest_checkpoint(out / name) / "trainer_state.json").read_text())
        (out / name / f"best-{rank}.json").write_text(json.dumps(state["best_step"]))


def _shard_worker(rank: int, beir: Path, student: Path, teacher: Path, out: Path) -> None:
    from dualist.cli import main
    from dualist.models import CrossEncoder
    from dualist.training import score_candidates

    assert main(["index", "--data", str(beir), "--model", str(student), "--batch-size", "8",
                 "--out", str(out / "index")]) == 0
    ds, run, _ = _setup(beir)
    score_candidates(CrossEncoder.from_pretrained(teacher), ds, "train", run, out / "scores.parquet", depth=10,
                     shard_size=64, batch_size=8)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bert(no_dropout_bert) -> Path:
    """The tiny BERT without dropout: a process's slice of a batch then sees what the whole batch sees."""
    return no_dropout_bert


@pytest.fixture(scope="module")
def two_process_steps(tmp_path_factory, tiny_beir, bert) -> dict:
    out = tmp_path_factory.mktemp("steps")
    _launch(_step_worker, tiny_beir, bert, out)
    return {rank: torch.load(out / f"steps-{rank}.pt", weights_only=False) for rank in range(WORLD)}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, tiny_beir, bert) -> Path:
    out = tmp_path_factory.mktemp("runs")
    _launch(_train_worker, tiny_beir, bert, out)
    return out


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, tiny_beir, bert) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    _train(tiny_beir, bert, out)
    return out


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, bert) -> tuple[Path, Path]:
    from dualist.models import CrossEncoder, CrossEncoderConfig
    from dualist.training.runtime import seed_everything

    root = tmp_path_factory.mktemp("saved")
    _student(bert).save_pretrained(root / "student")
    seed_everything(0)
    CrossEncoder(CrossEncoderConfig(model=str(bert), max_length=48)).save_pretrained(root / "teacher")
    return root / "student", root / "teacher"


@pytest.fixture(scope="module")
def two_process_shards(tmp_path_factory, tiny_beir, saved_models) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    _launch(_shard_worker, tiny_beir, *saved_models, out)
    return out


# --------------------------------------------------------------------------- training
def test_a_two_process_step_equals_the_one_process_step_on_the_whole_batch(two_process_steps, tiny_beir, bert):
    for name, model, step_fn, batch in _steps(tiny_beir, bert):
        loss = step_fn(model, batch)
        loss.backward()
        want = _grads(model)
        for rank in range(WORLD):
            got = two_process_steps[rank][name]
            assert got["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-6), (name, rank)
            assert set(got["grads"]) == set(want), (name, rank)
            for key, grad in want.items():
                torch.testing.assert_close(got["grads"][key], grad, rtol=1e-4, atol=1e-6, msg=f"{name} {key}")


def test_in_batch_gradients_reach_the_other_process_documents(two_process_steps, tiny_beir, bert):
    """Without the cross-process gather, the in-batch step's gradients would be those of each process's own
    rows only; they must differ from the gradients of the same step without in-batch negatives."""
    with_ib, without = two_process_steps[0]["student-in-batch"], two_process_steps[0]["student"]
    key = next(k for k in with_ib["grads"] if "word_embeddings" in k)
    assert not torch.allclose(with_ib["grads"][key], without["grads"][key])


def _rows(path: Path, name: str, drop=("elapsed_s",)) -> list[dict]:
    rows = [json.loads(line) for line in (path / name).read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from dualist.models import DualEncoder

    return DualEncoder.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("name", ["ddp", "ddp-grad-cache"])
def test_two_process_training_logs_and_selects_like_one_process(two_process_runs, one_process_run, name):
    got, want = two_process_runs / name, one_process_run
    for file in ("metrics.jsonl", "eval.jsonl"):
        a, b = _rows(got, file), _rows(want, file)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b):
            for key, value in rb.items():
                assert ra[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (file, ra["step"], key)
    best = [json.loads((got / f"best-{rank}.json").read_text()) for rank in range(WORLD)]
    assert best[0] == best[1] == json.loads((want / "checkpoints" / "step-3" / "trainer_state.json").read_text())["best_step"]
    meta = json.loads((got / "dualist.json").read_text())
    assert meta["resolved"]["processes"] == WORLD and meta["status"] == "done"
    for key, value in _weights(want / "final").items():
        torch.testing.assert_close(_weights(got / "final")[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_runs, one_process_run, tiny_beir, bert, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(two_process_runs / "ddp", run)
    for name in ("checkpoints/step-3", "final", "model"):  # as if killed after the step-2 checkpoint
        shutil.rmtree(run / name)
    _train(tiny_beir, bert, run, resume=True)
    assert [r["step"] for r in _rows(run, "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((run / "dualist.json").read_text())["resolved"]["processes"] == 1
    final = _weights(run / "final")
    for key, value in _weights(one_process_run / "final").items():
        torch.testing.assert_close(final[key], value, rtol=1e-3, atol=1e-4, msg=key)


# --------------------------------------------------------------------------- gradient caching
@pytest.mark.parametrize("in_batch", [True, False])
def test_gradient_caching_gives_the_loss_and_gradients_of_one_pass(tiny_beir, bert, in_batch):
    from dualist.losses import build_loss
    from dualist.losses.in_batch import WithInBatchOneHot
    from dualist.training import ExampleSource, student_step
    from dualist.training.grad_cache import GradCacheStep

    ds, run, ts = _setup(tiny_beir)
    batch = next(iter(ExampleSource(ds, "train", run, _config(batch_size=6), teacher_scores=ts).batches(0)))
    loss_fn = WithInBatchOneHot(build_loss("m3se")) if in_batch else build_loss("margin_mse")
    model = _student(bert)
    one_pass = student_step(model, batch, loss_fn, in_batch_negatives=in_batch)
    (one_pass * 0.5).backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    cached = GradCacheStep(loss_fn, chunk_size=4, in_batch_negatives=in_batch)
    loss = cached.forward_backward(model, batch, lambda loss: (loss * 0.5).backward())
    assert loss.item() == pytest.approx(one_pass.item(), rel=1e-5)
    got = _grads(model)
    assert set(got) == set(want)
    for key, grad in want.items():
        torch.testing.assert_close(got[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_gradient_caching_replays_dropout_masks(tiny_beir, tiny_bert):
    """With dropout on, the second pass must see the first pass's masks, or the cached embedding gradients
    belong to other embeddings than the ones backpropagated."""
    from dualist.losses import build_loss
    from dualist.training import ExampleSource
    from dualist.training.grad_cache import GradCacheStep

    ds, run, ts = _setup(tiny_beir)
    batch = next(iter(ExampleSource(ds, "train", run, _config(batch_size=4), teacher_scores=ts).batches(0)))
    model = _student(tiny_bert).train()
    seen: list[torch.Tensor] = []
    embed = model.embed_docs

    def recording(texts):
        out = embed(texts)
        seen.append(out.detach().clone())
        return out

    model.embed_docs = recording  # type: ignore[method-assign]
    GradCacheStep(build_loss("kl"), chunk_size=100).forward_backward(model, batch, lambda loss: loss.backward())
    first, again = seen
    torch.testing.assert_close(first, again)


def test_grad_cache_is_for_dual_encoders_only(tiny_train, bert, tmp_path):
    from dualist.errors import ConfigError
    from dualist.models import CrossEncoderConfig
    from dualist.training import train_teacher

    ds, run = tiny_train
    with pytest.raises(ConfigError, match="grad_cache_chunk"):
        train_teacher(ds, "train", run, CrossEncoderConfig(model=str(bert)), _config(grad_cache_chunk=2), tmp_path)


# --------------------------------------------------------------------------- sharded encoding and scoring
def _index_files(folder: Path) -> tuple[list, np.ndarray, dict]:
    return (json.loads((folder / "ids.json").read_text()), np.load(folder / "embeddings.npy"),
            json.loads((folder / "params.json").read_text()))


def _index(beir: Path, student: Path, out: Path, *extra: str) -> int:
    from dualist.cli import main

    return main(["index", "--data", str(beir), "--model", str(student), "--batch-size", "8", "--out", str(out), *extra])


def test_two_process_and_two_shard_indexes_equal_the_one_process_index(two_process_shards, tiny_beir, saved_models,
                                                                        tmp_path):
    student = saved_models[0]
    assert _index(tiny_beir, student, tmp_path / "one") == 0
    assert _index(tiny_beir, student, tmp_path / "shards", "--shard", "1/2") == 0
    assert not (tmp_path / "shards").exists()  # one shard of two: no index yet
    assert _index(tiny_beir, student, tmp_path / "shards", "--shard", "0/2") == 0
    ids, emb, params = _index_files(tmp_path / "one")
    for folder in (two_process_shards / "index", tmp_path / "shards"):
        got_ids, got_emb, got_params = _index_files(folder)
        assert got_ids == ids and got_params == params
        np.testing.assert_allclose(got_emb, emb, rtol=0, atol=1e-6)
        assert not (folder.parent / f"{folder.name}.shards").exists()


def _parquet(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.to_pydict(), table.schema.metadata


def test_sharded_teacher_scores_equal_the_one_process_file(two_process_shards, tiny_beir, saved_models, tmp_path):
    from dualist.models import CrossEncoder
    from dualist.training import score_candidates

    ds, run, _ = _setup(tiny_beir)

    def score(out: str, **kwargs):  # a fresh teacher each time, as each process loads one (a used tokenizer
        teacher = CrossEncoder.from_pretrained(saved_models[1])  # saves another tokenizer.json: another fingerprint)
        return score_candidates(teacher, ds, "train", run, tmp_path / out, depth=10, shard_size=64, batch_size=8,
                                **kwargs)

    one = score("one.parquet")
    assert score("two.parquet", shard=(1, 2)) is None
    two = score("two.parquet", shard=(0, 2))
    assert two is not None and two.as_dict() == one.as_dict()
    want = _parquet(tmp_path / "one.parquet")
    assert len(want[0]["qid"]) > 2 * 64  # several shards, so each process had some
    for path in (tmp_path / "two.parquet", two_process_shards / "scores.parquet"):
        assert _parquet(path) == want
        assert not path.with_name(path.name + ".parts").exists()


def test_score_teacher_cli_shards(tiny_beir, saved_models, tmp_path):
    from dualist.cli import main
    from dualist.data import write_trec_run

    ds, run, _ = _setup(tiny_beir)
    write_trec_run(run, tmp_path / "run.trec", tag="bm25")
    args = ["score-teacher", "--data", str(tiny_beir), "--teacher", str(saved_models[1]), "--candidates",
            str(tmp_path / "run.trec"), "--depth", "5", "--batch-size", "8"]
    assert main([*args, "--out", str(tmp_path / "one.parquet")]) == 0
    assert main([*args, "--out", str(tmp_path / "two.parquet"), "--shard", "0/2"]) == 0
    assert main([*args, "--out", str(tmp_path / "two.parquet"), "--shard", "1/2"]) == 0
    assert _parquet(tmp_path / "two.parquet")[0] == _parquet(tmp_path / "one.parquet")[0]
    assert main([*args, "--out", str(tmp_path / "x.parquet"), "--shard", "2/2"]) == 2

"""The training loop on a toy model: schedule, resume, determinism, accumulation, checkpoints, best model."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dualist._io import read_json, read_meta, write_json
from dualist.errors import ConfigError, StaleArtifactError
from dualist.training import TrainConfig, latest_checkpoint, lr_at, train_loop, warmup_steps_for

N, C, DIM = 24, 4, 8  # examples, candidates per example, features


pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(nn.Module):
    """A tiny scorer with a LayerNorm (no weight decay) and dropout (exercises the RNG state)."""

    def __init__(self, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(DIM, 16)
        self.norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(dropout)
        # no bias: softmax over candidates ignores a shift, so its gradient would be pure rounding noise
        # (which Adam's first step blows up to +-lr)
        self.out = nn.Linear(16, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.relu(self.norm(self.proj(x))))).squeeze(-1)

    def save_pretrained(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(Path(path) / "model.safetensors"))
        write_json(Path(path) / "config.json", {"dropout": self.drop.p})

    @classmethod
    def from_pretrained(cls, path) -> Toy:
        model = cls(read_json(Path(path) / "config.json")["dropout"])
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return model


# fixed data: the positive (column 0) has a higher first feature
_g = torch.Generator().manual_seed(0)
X = torch.randn(N, C, DIM, generator=_g)
X[:, 0, 0] += 2.0


def make_batches(batch_size: int, seed: int = 0):
    """Batches of an epoch: a pure function of (seed, epoch), as train_loop requires."""
    def batches(epoch: int):
        order = np.random.default_rng([seed, epoch]).permutation(N)
        for start in range(0, N, batch_size):
            yield X[torch.from_numpy(order[start:start + batch_size])]
    return batches


def step_fn(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    scores = model(batch)  # (B, C)
    return nn.functional.cross_entropy(scores, torch.zeros(len(batch), dtype=torch.long))


def run(out: Path, *, dropout: float = 0.1, crash_at_call: int | None = None, loop: dict | None = None,
        resume: bool = False, **cfg) -> tuple[Toy, object]:
    """Train a fresh toy model (seeded) with TrainConfig(**cfg) and train_loop(**loop); optionally raise
    inside the n-th step_fn call, as a kill would."""
    cfg = {"lr": 0.05, "batch_size": 4, "device": "cpu", "warmup_ratio": 0.2, **cfg}
    config = TrainConfig(**cfg)
    torch.manual_seed(config.seed)
    model = Toy(dropout)
    calls = [0]

    def fn(model, batch):
        calls[0] += 1
        if crash_at_call is not None and calls[0] == crash_at_call:
            raise KeyboardInterrupt("simulated kill")
        return step_fn(model, batch)

    result = train_loop(model, make_batches(config.batch_size), fn, config, out,
                        steps_per_epoch=math.ceil(N / config.batch_size), resume=resume, **(loop or {}))
    return model, result


def metrics(out: Path, drop=("elapsed_s",)) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def same_weights(a: nn.Module, b: nn.Module, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol, rtol=0) for k in sa)


# ------------------------------------------------------------------------------------------- schedule
def test_lr_schedule_by_hand():
    # 10 steps, 2 of warmup, peak 1.0: 1/2, 2/2, then (10 - s) / 8 for s = 2..9
    got = [lr_at(s, 10, 1.0, 2) for s in range(10)]
    want = [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert got == pytest.approx(want)
    assert lr_at(10, 10, 1.0, 2) == 0.0 and lr_at(50, 10, 1.0, 2) == 0.0
    assert [lr_at(s, 4, 2.0, 0) for s in range(4)] == pytest.approx([2.0, 1.5, 1.0, 0.5])  # no warmup
    assert warmup_steps_for(30, 0.1) == 3 and warmup_steps_for(9, 0.1) == 1 and warmup_steps_for(9, 0.0) == 0


def test_metrics_log_one_row_per_optimizer_step_with_the_schedule(tmp_path):
    _, result = run(tmp_path, epochs=2, grad_accum=2)  # 6 micro-batches -> 3 steps per epoch
    rows = metrics(tmp_path, drop=())
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert set(rows[0]) == {"step", "epoch", "loss", "lr", "grad_norm", "elapsed_s"}
    warmup = warmup_steps_for(6, 0.2)
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(s, 6, 0.05, warmup) for s in range(6)])
    assert result.steps == 6 and result.model_dir == tmp_path / "model"
    meta = read_meta(tmp_path)
    assert meta["stage"] == "train" and meta["config"]["train"]["grad_accum"] == 2
    assert meta["status"] == "done" and meta["resolved"]["total_steps"] == 6


def test_the_loss_goes_down(tmp_path):
    run(tmp_path, epochs=6, dropout=0.0)
    losses = [r["loss"] for r in metrics(tmp_path)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_weight_decay_spares_biases_and_layernorm(tmp_path):
    from dualist.training.loop import _build_optimizer

    model = Toy()
    groups = _build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.proj.weight), id(model.out.weight)}


# ------------------------------------------------------------------------------------ resume & determinism
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    # 6 micro-batches x accum 2 = 3 steps per epoch, 3 epochs = 9 steps; checkpoints at 2, 3, 4, 6, 8, 9.
    cfg = {"epochs": 3, "grad_accum": 2, "checkpoint_every": 2, "probe_every": 2, "keep_checkpoints": 2}
    loop = {"probes": [lambda m, step: {"w": float(m.out.weight.sum())}],
            "eval_fn": lambda m: {"ndcg@10": float(m.norm.bias.sum())}}
    full, _ = run(tmp_path / "full", loop=loop, **cfg)
    # killed while computing step 6 (call 11 = its first micro-batch): step 5 was logged, the newest
    # checkpoint is step 4, in the middle of epoch 1, so resuming must skip that epoch's first 2 batches
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash_at_call=11, loop=loop, **cfg)
    assert latest_checkpoint(tmp_path / "cut").name == "step-4"
    assert read_json(tmp_path / "cut/checkpoints/step-4/trainer_state.json")["batch_in_epoch"] == 2
    assert [r["step"] for r in metrics(tmp_path / "cut")] == [1, 2, 3, 4, 5]
    resumed, result = run(tmp_path / "cut", resume=True, loop=loop, **cfg)
    assert result.steps == 9
    assert same_weights(full, resumed, atol=1e-6)
    assert metrics(tmp_path / "full") == metrics(tmp_path / "cut")  # step 5 rewritten, not duplicated
    for name in ("probes.jsonl", "eval.jsonl"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "cut" / name).read_text()
    # the saved models agree too
    assert same_weights(Toy.from_pretrained(tmp_path / "full/final"), Toy.from_pretrained(tmp_path / "cut/final"))


def test_resume_past_the_end_extends_training(tmp_path):
    """max_steps then resume with more steps: same data order, the schedule is recomputed for the new end."""
    run(tmp_path, max_steps=3, checkpoint_every=3)
    assert latest_checkpoint(tmp_path).name == "step-3"
    _, result = run(tmp_path, max_steps=5, resume=True)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and result.steps == 5
    assert rows[3]["lr"] == pytest.approx(lr_at(3, 5, 0.05, warmup_steps_for(5, 0.2)))


def test_resume_refuses_other_settings(tmp_path):
    run(tmp_path, max_steps=2)
    with pytest.raises(StaleArtifactError, match=r"lr: 0\.05 -> 0\.01"):
        run(tmp_path, max_steps=4, resume=True, lr=0.01)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a, _ = run(tmp_path / "a", max_steps=3)
    b, _ = run(tmp_path / "b", max_steps=3, resume=True)
    assert same_weights(a, b)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, _ = run(tmp_path / "a", epochs=2)
    b, _ = run(tmp_path / "b", epochs=2)
    c, _ = run(tmp_path / "c", epochs=2, seed=7)
    assert same_weights(a, b)
    assert not same_weights(a, c, atol=1e-4)
    assert not torch.are_deterministic_algorithms_enabled()  # the loop restores the global setting


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    small, _ = run(tmp_path / "a", dropout=0.0, max_steps=1, batch_size=4, grad_accum=2, max_grad_norm=0)
    big, _ = run(tmp_path / "b", dropout=0.0, max_steps=1, batch_size=8, grad_accum=1, max_grad_norm=0)
    assert same_weights(small, big, atol=1e-6)
    torch.manual_seed(42)
    start = Toy(0.0)
    assert not same_weights(start, big, atol=1e-4)  # the step did move the weights


def test_an_epoch_ends_with_a_shorter_accumulation_group(tmp_path):
    # 6 micro-batches with accum 4: each epoch makes a step of 4 micro-batches, then one of 2
    _, result = run(tmp_path, epochs=2, grad_accum=4, dropout=0.0)
    assert [(r["step"], r["epoch"]) for r in metrics(tmp_path)] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    assert result.steps == 4


def test_steps_per_epoch_must_match_the_batches(tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="yielded 6 batches, expected steps_per_epoch=7"):
        train_loop(Toy(), make_batches(4), step_fn, config, tmp_path, steps_per_epoch=7)
    with pytest.raises(ValueError, match="more than steps_per_epoch=5"):
        train_loop(Toy(), make_batches(4), step_fn, TrainConfig(epochs=2, batch_size=4, device="cpu"), tmp_path,
                   steps_per_epoch=5)


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_are_complete_and_pruned(tmp_path):
    run(tmp_path, epochs=2, checkpoint_every=2, keep_checkpoints=2)  # steps 2, 4, ... 12 (epoch ends 6, 12)
    ckpts = sorted((tmp_path / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step-10", "step-12"]
    for p in ckpts:
        assert {f.name for f in p.iterdir()} >= {"model", "optimizer.pt", "scheduler.json", "rng.pt",
                                                 "trainer_state.json"}
        state = read_json(p / "trainer_state.json")
        assert state["step"] == int(p.name[5:]) and state["config"]["checkpoint_every"] == 2
    assert read_json(ckpts[-1] / "trainer_state.json")["epoch"] == 2  # finished: next epoch, batch 0
    for name in ("final", "model"):
        assert (tmp_path / name / "model.safetensors").exists()
    from dualist.training.checkpoints import file_umask as _umask

    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~_umask()  # not left private by mkdtemp


def test_a_crash_while_saving_leaves_no_half_checkpoint(tmp_path):
    saves = [0]

    def flaky_save(model, path):
        saves[0] += 1
        model.save_pretrained(path)
        if saves[0] == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, max_steps=6, checkpoint_every=2, loop={"save_fn": flaky_save})
    dirs = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert dirs == ["step-2"]  # step-4 was never renamed into place; its temporary folder is gone
    (tmp_path / "checkpoints" / ".step-6.xyz.tmp").mkdir()  # as if killed mid-write
    a, _ = run(tmp_path, max_steps=6, checkpoint_every=2, resume=True)
    assert not list((tmp_path / "checkpoints").glob(".*"))
    b, _ = run(tmp_path / "fresh", max_steps=6, checkpoint_every=2)
    assert same_weights(a, b, atol=1e-6)


def test_fresh_start_replaces_an_earlier_run(tmp_path):
    run(tmp_path, max_steps=4, checkpoint_every=1, keep_checkpoints=0)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 4  # 0 keeps them all
    run(tmp_path, max_steps=2)
    assert [r["step"] for r in metrics(tmp_path)] == [1, 2]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-2"]


# ----------------------------------------------------------------------------------- evaluation & probes
def test_eval_every_evaluates_inside_an_epoch_and_can_pick_that_step(tmp_path):
    scores = iter([0.5, 0.9, 0.1])
    _, result = run(tmp_path, epochs=1, eval_every=4,
                    loop={"eval_fn": lambda m: {"ndcg@10": next(scores)}})
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 4, 6]  # the start, every 4 steps, and the epoch end
    assert result.best_step == 4


def test_best_checkpoint_follows_select_metric(tmp_path):
    scores = iter([0.1, 0.2, 0.9, 0.5])
    snapshots = {}

    def eval_fn(model):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"ndcg@10": next(scores), "mrr@10": 0.0}

    _, result = run(tmp_path, epochs=3, loop={"eval_fn": eval_fn})
    assert result.best_metric == 0.9 and result.best_step == 12 and result.best_dir == tmp_path / "best"
    best = Toy.from_pretrained(tmp_path / "best")
    assert all(torch.equal(best.state_dict()[k], v) for k, v in snapshots[2].items())
    chosen = Toy.from_pretrained(result.model_dir)
    assert same_weights(best, chosen)
    assert not same_weights(chosen, Toy.from_pretrained(tmp_path / "final"), atol=1e-6)
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["ndcg@10"]) for e in evals] == [(0, 0.1), (6, 0.2), (12, 0.9), (18, 0.5)]
    assert read_json(tmp_path / "checkpoints/step-18/trainer_state.json")["best_step"] == 12


def test_a_run_whose_dev_score_only_falls_keeps_its_starting_model(tmp_path):
    scores = iter([0.7, 0.6, 0.5, 0.4])  # step 0, then every epoch end: training only hurts on dev
    _, result = run(tmp_path, epochs=3, loop={"eval_fn": lambda m: {"ndcg@10": next(scores)}})
    assert result.best_step == 0 and result.best_metric == 0.7
    chosen, final = Toy.from_pretrained(result.model_dir), Toy.from_pretrained(result.final_dir)
    assert not same_weights(chosen, final, atol=1e-6)  # training did move the weights ...
    meta = read_meta(tmp_path)
    assert meta["best_step"] == 0 and meta["kept_start"] is True  # ... and the record says the start was kept


@pytest.mark.parametrize(("scores", "best_step"), [
    ([0.7, 0.705, 0.709, 0.6], 0),   # gains within the margin never replace the start
    ([0.7, 0.705, 0.72, 0.6], 12),   # a gain beyond it does
    ([0.7, 0.72, 0.725, 0.6], 6),    # ... and a later one must clear the margin over that checkpoint
])
def test_a_checkpoint_replaces_the_kept_one_only_by_more_than_select_min_delta(tmp_path, scores, best_step):
    it = iter(scores)
    _, result = run(tmp_path, epochs=3, select_min_delta=0.01, loop={"eval_fn": lambda m: {"ndcg@10": next(it)}})
    assert result.best_step == best_step and result.best_metric == scores[best_step // 6]
    assert read_meta(tmp_path)["kept_start"] is (best_step == 0)


def test_select_min_delta_zero_keeps_any_gain_and_a_negative_one_is_refused(tmp_path):
    it = iter([0.7, 0.7001, 0.6, 0.6])
    _, result = run(tmp_path / "a", epochs=3, loop={"eval_fn": lambda m: {"ndcg@10": next(it)}})
    assert result.best_step == 6
    with pytest.raises(ConfigError, match="select_min_delta"):
        TrainConfig(select_min_delta=-0.1)


# Per-query dev values of 20 queries at steps 0, 6, 12 and 18 (evaluations at the start and each epoch end):
_START = np.linspace(0.2, 0.8, 20)
_SWING = np.where(np.arange(20) % 2 == 0, 1.0, -0.9)  # +x on half the queries, -0.9x on the other half
_DEV = [
    _START,
    _START + 0.1 * _SWING,           # mean +0.005, a coin's worth of gains and losses: noise
    _START + 0.05,                   # every query +0.05: a real gain
    _START + 0.05 + 0.2 * _SWING,    # mean +0.01 over step 12, but noise again
]


def per_query_eval(values):
    """An eval_fn returning, step after step, the means and per-query values of ``values``."""
    from dualist.evaluation import QueryMetrics

    it = iter(values)

    def eval_fn(model):
        v = next(it)
        return QueryMetrics({"ndcg@10": float(v.mean())}, {"ndcg@10": {f"q{i}": float(x) for i, x in enumerate(v)}})
    return eval_fn


@pytest.mark.parametrize(("alpha", "best_step"), [(None, 18), (0.05, 12)])
def test_select_alpha_replaces_the_kept_checkpoint_only_on_a_significant_per_query_gain(tmp_path, alpha, best_step):
    _, result = run(tmp_path, epochs=3, select_alpha=alpha, loop={"eval_fn": per_query_eval(_DEV)})
    assert result.best_step == best_step and result.best_metric == pytest.approx(_DEV[best_step // 6].mean())
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    if alpha is None:
        assert all("select_p" not in e for e in evals)
    else:  # each later evaluation records its p against the checkpoint kept at that point
        assert "select_p" not in evals[0]
        assert evals[1]["select_p"] > 0.05 and evals[2]["select_p"] < 0.001 and evals[3]["select_p"] > 0.05


def test_select_alpha_keeps_the_start_when_no_gain_is_significant(tmp_path):
    values = [_START, _START + 0.1 * _SWING, _START + 0.2 * _SWING, _START - 0.01]
    _, result = run(tmp_path, epochs=3, select_alpha=0.05, loop={"eval_fn": per_query_eval(values)})
    assert result.best_step == 0 and read_meta(tmp_path)["kept_start"] is True


def test_select_alpha_survives_a_resume(tmp_path):
    cfg = {"epochs": 3, "select_alpha": 0.05}
    # killed in epoch 2 (call 15): the newest checkpoint is step 12's, which keeps step 12's per-query values
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, crash_at_call=15, loop={"eval_fn": per_query_eval(_DEV)}, **cfg)
    saved = read_json(tmp_path / "checkpoints/step-12/trainer_state.json")
    assert saved["best_step"] == 12 and saved["best_per_query"]["q3"] == pytest.approx(_DEV[2][3])
    _, result = run(tmp_path, resume=True, loop={"eval_fn": per_query_eval(_DEV[3:])}, **cfg)
    assert result.best_step == 12  # step 18 is tested against the restored step-12 values, not replaced


def test_select_alpha_needs_per_query_values_and_a_level_in_0_1(tmp_path):
    with pytest.raises(ConfigError, match="per-query"):
        run(tmp_path, epochs=1, select_alpha=0.05, loop={"eval_fn": lambda m: {"ndcg@10": 0.5}})
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="select_alpha"):
            TrainConfig(select_alpha=bad)


def test_the_start_is_kept_equal_to_the_model_before_training(tmp_path):
    seen = []

    def eval_fn(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"ndcg@10": 1.0 if len(seen) == 1 else 0.0}

    _, result = run(tmp_path, epochs=2, loop={"eval_fn": eval_fn})
    chosen = Toy.from_pretrained(result.model_dir)
    assert all(torch.equal(chosen.state_dict()[k], v) for k, v in seen[0].items())
    assert not all(torch.equal(seen[0][k], v) for k, v in seen[-1].items())


def test_eval_start_off_evaluates_only_after_steps(tmp_path):
    _, result = run(tmp_path, epochs=2, eval_start=False, loop={"eval_fn": lambda m: {"ndcg@10": 0.5}})
    evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [6, 12] and result.best_step == 6


def test_missing_select_metric_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mrr@10.*ndcg@10"):
        run(tmp_path, epochs=1, loop={"eval_fn": lambda m: {"mrr@10": 1.0}})


def test_probes_run_at_start_every_n_steps_and_at_the_end(tmp_path):
    def weight_sum(model, step):
        assert not model.training
        return {"w": float(model.out.weight.sum())}

    run(tmp_path, max_steps=5, probe_every=2, loop={"probes": [weight_sum]})
    rows = [json.loads(line) for line in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4, 5] and rows[0]["probe"] == "weight_sum"


def test_config_validation():
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ConfigError, match="neg_rank_max"):
        TrainConfig(neg_rank_min=10, neg_rank_max=5)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        from dualist.training.runtime import resolve_amp as _resolve_amp
        _resolve_amp("fp16", torch.device("cpu"))


def test_tensorboard_gets_the_same_scalars_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    logged = []

    class FakeWriter:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            logged.append((tag, step))

        def close(self):
            logged.append(("closed", self.logdir))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    run(tmp_path, max_steps=2, loop={"eval_fn": lambda m: {"ndcg@10": 0.5}})
    assert ("train/loss", 1) in logged and ("train/lr", 2) in logged and ("eval/ndcg@10", 2) in logged
    assert logged[-1] == ("closed", str(tmp_path / "tb"))


def test_a_non_finite_loss_stops_training_with_advice(tmp_path):
    def nan_loss(model, batch):
        return step_fn(model, batch) * float("nan")

    with pytest.raises(FloatingPointError, match="loss is nan at step 1.*lower train.lr"):
        train_loop(Toy(), make_batches(4), nan_loss, TrainConfig(device="cpu", batch_size=4), tmp_path,
                   steps_per_epoch=6)


def test_fingerprints_leave_out_settings_that_do_not_change_the_result():
    """Gradient checkpointing changes memory, not the model: finished stages stay valid when it is toggled."""
    from dualist._io import fingerprint_obj

    plain, recomputed = TrainConfig(max_steps=5), TrainConfig(max_steps=5, gradient_checkpointing=True)
    assert fingerprint_obj(["stage", plain]) == fingerprint_obj(["stage", recomputed])
    assert fingerprint_obj(plain) != fingerprint_obj(TrainConfig(max_steps=6))
    # the same as before the field existed, so upgrading keeps old outputs
    later = {f.name for f in dataclasses.fields(TrainConfig) if "fingerprint" in f.metadata}
    assert {"gradient_checkpointing", "max_positives", "eval_every"} <= later
    legacy = {k: v for k, v in dataclasses.asdict(plain).items() if k not in later}
    assert fingerprint_obj(plain) == fingerprint_obj(legacy)
    # a setting added later counts only once it is set
    assert fingerprint_obj(TrainConfig(max_steps=5, max_positives=3)) != fingerprint_obj(plain)
    with pytest.raises(ConfigError, match="max_positives must be >= 0"):
        TrainConfig(max_positives=-1)


def test_written_configs_still_record_every_setting(tmp_path):
    write_json(tmp_path / "c.json", TrainConfig(gradient_checkpointing=True))
    assert read_json(tmp_path / "c.json")["gradient_checkpointing"] is True

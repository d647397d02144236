"""Student training throughput: dualist's loop vs sentence-transformers' trainer, Margin-MSE distillation.

Both sides train all-MiniLM-L6-v2 (the packaged ``minilm-l6``) on the **same batches**: dualist's
``ExampleSource`` draws the SciFact train examples (query, positive, 7 BM25 negatives, batch 16)
and the peer gets exactly those rows, in that order (sequential sampler), as
``(query, positive, negative_1..7, label=[t_pos, t_neg_1..7])`` for
``sentence_transformers.losses.MarginMSELoss``. Teacher scores are synthetic but identical on both
sides. Same lr (linear decay, no warmup), weight decay, clipping, seed and sequence length (128 for
queries and documents).

Each training run is a separate child process (alternating dualist, peer, dualist, ...), which
gives both its throughput (queries/s over the optimizer steps after the first) and its own peak RSS.

Check that both computed the same thing: a short extra run of each side with dropout switched off
(a copy of the backbone with dropout 0) must give the same loss at every step (relative difference
below ``--loss-rtol``); the timed runs (dropout on) report both loss curves.

    python bench/bench_train.py                  # 5 steps x 3 repeats per side (~10 min on 2 cores)
    python bench/bench_train.py --steps 20       # longer curves
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import benchlib as C  # beside this script: Python puts a script's own folder on sys.path

SIDES = ("dualist", "peer")
# -bf16: bf16 autocast (dualist amp=bf16, peer bf16=True); -ckpt: dualist gradient_checkpointing=True;
# -lean: dualist lean_activations=True (attention dropout and GELU recomputed in the backward pass)
VARIANTS = ("dualist", "peer", "dualist-bf16", "peer-bf16", "dualist-ckpt", "dualist-bf16-ckpt", "dualist-lean",
            "dualist-bf16-lean", "dualist-bf16-lean-ckpt1", "dualist-bf16-lean-ckpt2", "dualist-lean-ckpt1",
            "dualist-lean-ckpt2")
# the float32 ones are what a CPU without native bf16 (AVX2) should train with: bf16 is emulated there
# -ckptN: gradient checkpointing of the first N layers only (TrainConfig.checkpoint_layers)


def build_parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(C.DEFAULT_SCIFACT), help="BEIR folder (SciFact)")
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per run (first one is warm-up)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--negatives", type=int, default=7)
    p.add_argument("--max-length", type=int, default=128, help="query and document length (tokens)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--check-steps", type=int, default=3, help="steps of the dropout-free equivalence run "
                                                             "(0: skip it)")
    p.add_argument("--loss-rtol", type=float, default=2e-3, help="max relative loss difference per step "
                                                               "in the dropout-free run")
    p.add_argument("--variants", default="dualist,peer",
                   help="comma-separated runs to time, from: " + ", ".join(VARIANTS)
                        + " (the -bf16 ones train under bf16 autocast, the -ckpt ones recompute "
                          "activations (gradient checkpointing), the -lean ones use lean attention "
                          "(TrainConfig.lean_activations); each is compared with 'peer')")
    p.add_argument("--inputs", default=None, help=argparse_suppress())
    p.add_argument("--model", default=None, help=argparse_suppress())
    return p


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


# -------------------------------------------------------------------------------- shared inputs

def teacher_score(qid: str, did: str, rank: int | None) -> float:
    """Synthetic teacher: decreasing with BM25 rank plus a fixed per-pair jitter; positives on top."""
    h = int(hashlib.blake2b(f"{qid}\t{did}".encode(), digest_size=4).hexdigest(), 16) / 2**32
    base = 10.0 if rank is None else 8.0 - 0.04 * rank
    return round(base + 1.5 * (h - 0.5), 4)


def make_inputs(args, workdir: Path) -> Path:
    """BM25 top-100 of the train queries and the synthetic teacher scores, written once for all runs."""
    from dualist.candidates.bm25 import BM25Retriever
    from dualist.data.trec import rank_docs

    ds = C.load_scifact(args.data)
    run = BM25Retriever().index(ds).search(ds.queries_for("train"), k=100)
    qrels = ds.qrels_for("train")
    scores: dict[str, dict[str, float]] = {}
    for qid, docs in run.items():
        ranked = rank_docs(docs)
        scores[qid] = {d: teacher_score(qid, d, r + 1) for r, (d, _) in enumerate(ranked)}
    for qid, rels in qrels.items():
        for d, rel in rels.items():
            if rel > 0:
                scores.setdefault(qid, {})[d] = teacher_score(qid, d, None)
    path = workdir / "inputs.json"
    path.write_text(json.dumps({"run": run, "teacher": scores}))
    return path


def no_dropout_copy(workdir: Path) -> str:
    """The packaged MiniLM saved again with dropout 0 (for the deterministic equivalence run)."""
    import shutil

    src = Path(C.minilm_path())
    dst = workdir / "minilm-no-dropout"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["hidden_dropout_prob"] = 0.0
    cfg["attention_probs_dropout_prob"] = 0.0
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(dst)


def train_config(args, steps: int, amp: str = "off", checkpointing: int | bool = False, lean: bool = False):
    from dualist.training.config import TrainConfig

    return TrainConfig(batch_size=args.batch_size, max_steps=steps, lr=args.lr, weight_decay=0.01,
                       warmup_ratio=0.0, max_grad_norm=1.0, seed=42, num_negatives=args.negatives,
                       negatives="range", neg_rank_min=1, neg_rank_max=100, log_every=1, device="cpu",
                       amp=amp, gradient_checkpointing=bool(checkpointing), lean_activations=lean,
                       checkpoint_layers=0 if checkpointing is True else int(checkpointing))


def load_inputs(args):
    from dualist.training.scoring import TeacherScores

    ds = C.load_scifact(args.data)
    data = json.loads(Path(args.inputs).read_text())
    return ds, data["run"], TeacherScores(data["teacher"])


# -------------------------------------------------------------------------------- the two sides

def run_dualist(args, steps: int, bf16: bool = False, checkpointing: int | bool = False, lean: bool = False) -> dict:
    from dualist.models import DualEncoderConfig
    from dualist.training.student import train_student

    ds, run, teacher = load_inputs(args)
    model_cfg = DualEncoderConfig(model=args.model or "minilm-l6", query_max_length=args.max_length,
                                  doc_max_length=args.max_length)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        config = train_config(args, steps, "bf16" if bf16 else "off", checkpointing, lean)
        train_student(ds, "train", run, model_cfg, config, out, loss="margin_mse", teacher_scores=teacher)
        total = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    ends = [r["elapsed_s"] for r in rows]
    return {"losses": [r["loss"] for r in rows], "step_end_s": ends, "total_s": total}


def run_peer(args, steps: int, bf16: bool = False) -> dict:
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback

    from dualist.training.examples import ExampleSource

    ds, run, teacher = load_inputs(args)
    source = ExampleSource(ds, "train", run, train_config(args, steps), teacher_scores=teacher)
    cols: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(args.negatives)},
                             "label": []}
    for b, batch in enumerate(source.batches(0)):
        if b >= steps:
            break
        for i in range(len(batch)):
            cols["query"].append(batch.queries[i])
            cols["positive"].append(batch.docs[i][0])
            for j in range(args.negatives):
                cols[f"negative_{j + 1}"].append(batch.docs[i][j + 1])
            cols["label"].append(batch.teacher_scores[i].tolist())
    train = datasets.Dataset.from_dict(cols)

    model = SentenceTransformer(args.model or C.minilm_path(), device="cpu")
    model.max_seq_length = args.max_length
    loss = MarginMSELoss(model)

    def sequential(dataset, batch_size, drop_last, **_):
        return DefaultBatchSampler(SequentialSampler(range(len(dataset))), batch_size=batch_size,
                                   drop_last=drop_last)

    class Recorder(TrainerCallback):
        def __init__(self):
            self.start, self.ends, self.losses = None, [], []

        def on_train_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.ends.append(time.perf_counter() - self.start)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as out:
        targs = Args(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=steps,
                     learning_rate=args.lr, warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0,
                     lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                     use_cpu=True, bf16=bf16, seed=42, dataloader_num_workers=0, disable_tqdm=True,
                     batch_sampler=sequential)
        rec = Recorder()
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train, loss=loss,
                                             callbacks=[rec])
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    del torch
    return {"losses": rec.losses, "step_end_s": rec.ends, "total_s": total}


def queries_per_s(result: dict, batch_size: int) -> float:
    """Throughput over the steps after the first (the first one warms allocators and caches)."""
    ends = result["step_end_s"]
    if len(ends) < 2:
        return batch_size * len(ends) / ends[-1]
    return batch_size * (len(ends) - 1) / (ends[-1] - ends[0])


def child_main(args) -> None:
    C.setup_env(args.threads)
    fn = run_dualist if args.rss_side.startswith("dualist") else run_peer
    kw = {"bf16": "-bf16" in args.rss_side}
    ckpt = re.search(r"-ckpt(\d*)$", args.rss_side)
    if ckpt:
        kw["checkpointing"] = int(ckpt.group(1)) if ckpt.group(1) else True
    if "-lean" in args.rss_side:
        kw["lean"] = True
    C.emit_child_result(fn(args, args.steps, **kw))


def main() -> None:
    args = C.parse(build_parser())
    if args.rss_side:
        child_main(args)
        return
    C.setup_env(args.threads)
    info = C.machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="dualist-bench-train-"))
    inputs = make_inputs(args, workdir)
    extra = ["--inputs", str(inputs)]

    def child(side, steps, model=None):
        argv = [sys.executable, str(Path(__file__).resolve()), *args.passthrough, *extra,
                "--steps", str(steps), "--rss-side", side]
        if model:
            argv += ["--model", model]
        rss, out = C.run_child(argv)
        res = C.child_result(out)
        res["rss"] = rss
        res["qps"] = queries_per_s(res, args.batch_size)
        print(f"  {side:17s} {res['qps']:6.3f} q/s  peak RSS {C.gib(rss)}  losses "
              + " ".join(f"{x:.4f}" for x in res["losses"]), flush=True)
        return res

    check = "equivalence run skipped"
    check_ok = None
    if args.check_steps:
        print(f"dropout-free equivalence run ({args.check_steps} steps per side)", flush=True)
        plain = no_dropout_copy(workdir)
        a = child("dualist", args.check_steps, plain)
        b = child("peer", args.check_steps, plain)
        rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a["losses"], b["losses"])]
        check_ok = len(a["losses"]) == len(b["losses"]) and max(rel) <= args.loss_rtol
        check = (f"dropout-free losses per step: max rel diff {max(rel):.1e} "
                 f"({'OK' if check_ok else 'FAIL'} <= {args.loss_rtol:g})")
        print("  " + check, flush=True)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or "peer" not in variants or len(variants) < 2:
        raise SystemExit(f"--variants: choose 'peer' and at least one more of {VARIANTS}; got {variants}")
    print(f"timed runs: {args.steps} steps, {args.repeats} repeats per variant, alternating", flush=True)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            results[v].append(child(v, args.steps))

    qps = {v: C.median([x["qps"] for x in results[v]]) for v in variants}
    rss = {v: max(x["rss"] for x in results[v]) for v in variants}
    curves = {v: results[v][0]["losses"] for v in variants}
    goal, rss_goal = C.train_goal()
    rows = []
    for v in variants:
        if v == "peer":
            continue
        diffs = [abs(x - y) for x, y in zip(curves[v], curves["peer"])]
        curve_note = (f"; dropout-on curves vs peer: mean |diff| {sum(diffs) / len(diffs):.4f} "
                      f"(loss ~{sum(curves['peer']) / len(curves['peer']):.3f})")
        rows.append(C.Row(f"training throughput, {v} vs peer", "queries/s", qps[v], qps["peer"], goal=goal,
                          dualist_rss=rss[v], peer_rss=rss["peer"], check=check + curve_note,
                          extra={"loss_curves": {v: curves[v], "peer": curves["peer"]}, "check_ok": check_ok,
                                 "rss_ratio": rss[v] / rss["peer"],
                                 "all_qps": {v: [x["qps"] for x in results[v]],
                                             "peer": [x["qps"] for x in results["peer"]]}}))
        print(f"peak RSS {v} / peer = {rss[v] / rss['peer']:.2f} (goal <= {rss_goal:g}: "
              f"{'met' if rss[v] / rss['peer'] <= rss_goal else 'NOT met'})")
    C.report("bench_train: MiniLM-L6, Margin-MSE, batch %d, 1 pos + %d neg, length %d"
             % (args.batch_size, args.negatives, args.max_length), rows, info, args)
    if check_ok is False:
        sys.exit(1)


if __name__ == "__main__":
    main()

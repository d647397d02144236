"""Stage helpers shared by the CLI and ``dualist repro``."""

from __future__ import annotations

import pytest

from dualist.candidates import bm25_run
from dualist.data import load_beir
from dualist.errors import ConfigError
from dualist.evaluation import evaluate
from dualist.evaluation.modes import rerank
from dualist.models import DualEncoder
from dualist.stages import dev_eval_fn


def test_dev_eval_fn_on_a_sample_of_queries_scores_those_queries_only(tiny_beir, tiny_bert):
    ds = load_beir(tiny_beir)
    run = bm25_run(ds, "dev", k=10)
    model = DualEncoder(model=str(tiny_bert), doc_max_length=48, query_max_length=16).eval()
    picked = sorted(ds.queries_for("dev"))[:2]
    got = dev_eval_fn(ds, "dev", run, depth=10, query_ids=picked)(model)
    alone = rerank(model, ds, {q: ds.queries[q] for q in picked}, run, depth=10, show_progress=False)
    want = evaluate({q: ds.qrels_for("dev")[q] for q in picked}, alone, ["ndcg@10", "mrr@10"]).mean
    assert got == pytest.approx(dict(want))
    # each query's value too, for a significance rule between checkpoints (TrainConfig.select_alpha)
    per_query = evaluate({q: ds.qrels_for("dev")[q] for q in picked}, alone, ["ndcg@10", "mrr@10"]).per_query
    assert set(got.per_query) == {"ndcg@10", "mrr@10"}
    assert got.per_query["ndcg@10"] == pytest.approx(per_query["ndcg@10"]) and len(got.per_query["ndcg@10"]) == 2
    everything = dev_eval_fn(ds, "dev", run, depth=10)(model)
    full = rerank(model, ds, ds.queries_for("dev"), run, depth=10, show_progress=False)
    assert everything == pytest.approx(dict(evaluate(ds.qrels_for("dev"), full, ["ndcg@10", "mrr@10"]).mean))
    with pytest.raises(ConfigError, match="not judged queries of split 'dev'"):
        dev_eval_fn(ds, "dev", run, query_ids=["no-such-query"])


def test_dev_eval_fn_with_a_memo_reranks_equal_weights_once(tiny_beir, tiny_bert, monkeypatch):
    import torch

    import dualist.evaluation
    import dualist.evaluation.modes
    from dualist.evaluation.memo import RerankMemo

    ds = load_beir(tiny_beir)
    run = bm25_run(ds, "dev", k=10)
    calls = []
    real = dualist.evaluation.modes.rerank

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(dualist.evaluation.modes, "rerank", counted)
    monkeypatch.setattr(dualist.evaluation, "rerank", counted)

    def model() -> DualEncoder:
        return DualEncoder(model=str(tiny_bert), doc_max_length=48, query_max_length=16).eval()

    memo = RerankMemo()
    first = dev_eval_fn(ds, "dev", run, depth=10, memo=memo)(model())
    # another eval_fn of the same evaluation (another student), another model of the same weights
    assert dev_eval_fn(ds, "dev", run, depth=10, memo=memo)(model()) == first and len(calls) == 1
    assert memo.hits == 1 and len(memo) == 1
    changed = model()
    with torch.no_grad():
        changed.query_model.encoder.layer[-1].output.dense.weight.mul_(1.5)
    dev_eval_fn(ds, "dev", run, depth=10, memo=memo)(changed)
    assert len(calls) == 2  # other weights
    dev_eval_fn(ds, "dev", run, depth=5, memo=memo)(model())
    assert len(calls) == 3  # the same weights, other candidates: the top 5
    picked = sorted(ds.queries_for("dev"))[:2]
    dev_eval_fn(ds, "dev", run, depth=10, query_ids=picked, memo=memo)(model())
    assert len(calls) == 4  # other queries
    other = DualEncoder(model=str(tiny_bert), doc_max_length=24, query_max_length=16).eval()
    dev_eval_fn(ds, "dev", run, depth=10, memo=memo)(other)
    assert len(calls) == 5  # the same weights, other settings: documents cut at 24 tokens
    without = dev_eval_fn(ds, "dev", run, depth=10)
    assert without(model()) == first and without(model()) == first and len(calls) == 7  # no memo: every call


def test_a_saved_and_loaded_model_finds_its_run_in_the_memo(tiny_beir, tiny_bert, tmp_path):
    from dualist.evaluation.memo import RerankMemo

    ds = load_beir(tiny_beir)
    run = bm25_run(ds, "dev", k=10)
    de = DualEncoder(model=str(tiny_bert), doc_max_length=48, query_max_length=16).eval()
    memo = RerankMemo()
    made = memo.rerank(de, ds, ds.queries_for("dev"), run, depth=8)
    de.save_pretrained(tmp_path / "saved")
    loaded = DualEncoder.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.model != de.config.model  # where it came from does not count, its weights do
    assert memo.rerank(loaded, ds, ds.queries_for("dev"), run, depth=8) is made and memo.hits == 1
    ds.corpus[next(iter(made[next(iter(made))]))]["text"] += " changed"
    memo.rerank(loaded, ds, ds.queries_for("dev"), run, depth=8)
    assert memo.hits == 1 and len(memo) == 2  # a candidate's text changed: re-ranked again


def test_candidates_are_the_same_when_computed_and_when_resumed(tiny_beir, tmp_path):
    """A query BM25 finds nothing for must not be in the first run and missing from the resumed one."""
    from dualist.data import read_trec_run
    from dualist.stages import CandidatesConfig, candidates_stage

    ds = load_beir(tiny_beir)
    lost = sorted(ds.queries_for("dev"))[0]
    ds.queries[lost] = "zzzunknownword qqqnothing"  # no term of it is in the corpus
    first = read_trec_run(candidates_stage(ds, CandidatesConfig("dev", k=5), tmp_path / "dev.trec"))
    again = read_trec_run(candidates_stage(ds, CandidatesConfig("dev", k=5), tmp_path / "dev.trec"))
    assert lost not in first and first == again
    assert len(first) == len(ds.queries_for("dev")) - 1


def test_candidates_replaced_by_an_unfinished_run_are_not_taken_as_done(tiny_beir, tmp_path, monkeypatch):
    """k=5 finished, then a k=3 run rewrote the file and was killed before its marker: k=5 must recompute."""
    import dualist.data.trec
    from dualist.data import read_trec_run
    from dualist.stages import CandidatesConfig, candidates_stage

    def run_candidates(k):
        return read_trec_run(candidates_stage(ds, CandidatesConfig("dev", k=k), out))

    ds = load_beir(tiny_beir)
    out = tmp_path / "dev.trec"
    first = run_candidates(5)
    real_write = dualist.data.trec.write_trec_run

    def write_then_die(*args, **kwargs):
        real_write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(dualist.data.trec, "write_trec_run", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_candidates(3)
    monkeypatch.setattr(dualist.data.trec, "write_trec_run", real_write)
    assert max(len(docs) for docs in read_trec_run(out).values()) == 3  # the killed run's output
    assert run_candidates(5) == first


def test_train_qrels_replace_the_training_judgements_and_are_found_where_a_dataset_ships_them(tiny_beir, tmp_path):
    import shutil

    from dualist.errors import DataError
    from dualist.stages import dataset_fingerprint, graded_train_qrels, load_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_beir, data)
    assert graded_train_qrels(data) is None
    plain = load_dataset(data)
    graded = {q: {d: 2 for d in docs} for q, docs in list(plain.qrels_for("train").items())[:3]}
    (data / "extra").mkdir()
    path = data / "extra" / "train.graded-2-1-0.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs in graded.items() for d, g in docs.items()))
    assert graded_train_qrels(data) == path
    ds = load_dataset(data, train_qrels=path)
    assert ds.qrels_for("train") == graded and ds.qrels_for("test") == plain.qrels_for("test")
    assert dataset_fingerprint(ds, "train") != dataset_fingerprint(plain, "train")
    leak = next(iter(plain.qrels_for("test")))
    bad = tmp_path / "leak.tsv"
    bad.write_text(f"{leak}\td000\t1\n")
    with pytest.raises(DataError, match="another split"):
        load_dataset(data, train_qrels=bad)
    bad.write_text("nosuchquery\td000\t1\n")
    with pytest.raises(DataError, match="not in the dataset"):
        load_dataset(data, train_qrels=bad)


@pytest.mark.parametrize("dtype", ["int8", "onnx-fp32", "onnx-int8"])
def test_the_memo_tells_reduced_precision_copies_of_other_weights_apart(tiny_beir, tiny_bert, dtype):
    """An int8 copy keeps its weights in packed parameters and an ONNX copy in an ONNX Runtime session:
    the memo must neither fail on them nor give one copy the run of another's weights."""
    import torch

    from dualist.evaluation.memo import RerankMemo
    from dualist.models.frozen_prefix import weights_fingerprint

    if dtype.startswith("onnx"):
        pytest.importorskip("onnxruntime")
    ds = load_beir(tiny_beir)
    run = bm25_run(ds, "dev", k=10)
    de = DualEncoder(model=str(tiny_bert), doc_max_length=48, query_max_length=16).eval()
    other = DualEncoder(model=str(tiny_bert), doc_max_length=48, query_max_length=16).eval()
    with torch.no_grad():
        other.query_model.encoder.layer[-1].output.dense.weight.mul_(1.5)
    copy, again, changed = de.quantized(dtype), de.quantized(dtype), other.quantized(dtype)
    assert weights_fingerprint(copy) == weights_fingerprint(again)
    assert weights_fingerprint(copy) != weights_fingerprint(changed)
    memo = RerankMemo()
    made = memo.rerank(copy, ds, ds.queries_for("dev"), run, depth=8)
    assert memo.rerank(again, ds, ds.queries_for("dev"), run, depth=8) is made and memo.hits == 1
    theirs = memo.rerank(changed, ds, ds.queries_for("dev"), run, depth=8)
    assert theirs is not made and memo.hits == 1 and len(memo) == 2
    memo.rerank(de, ds, ds.queries_for("dev"), run, depth=8)
    assert memo.hits == 1 and len(memo) == 3  # the fp32 model is another key than its copy


def _evaluation_inputs(ds, tmp_path):
    from dualist.data import write_trec_run

    paths = {}
    for split in ("test", "dev", "train"):
        paths[split] = tmp_path / f"{split}.trec"
        write_trec_run(bm25_run(ds, split, k=10), paths[split])
    return paths


def test_an_evaluation_of_the_same_weights_is_reused_under_the_new_name(tiny_beir, tiny_bert, tmp_path, caplog):
    """A student that kept its start has the zero-shot DE's weights: with a memo its evaluation is the
    zero-shot one, renamed, and equal to what evaluating it afresh gives."""
    import json

    import torch

    from dualist.evaluation.memo import RerankMemo
    from dualist.models import DualEncoderConfig
    from dualist.stages import EvaluationConfig, evaluation_stage

    ds = load_beir(tiny_beir)
    cands = _evaluation_inputs(ds, tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    config = DualEncoderConfig(model=str(tiny_bert), doc_max_length=48, query_max_length=16)
    start = DualEncoder(config)
    kept = start.save_pretrained(tmp_path / "kept")
    moved = DualEncoder(config)
    with torch.no_grad():
        next(moved.parameters()).add_(0.01)
    moved = moved.save_pretrained(tmp_path / "moved")

    def evaluate_as(name, model, memo, out_dir=tmp_path / "results"):
        cfg = EvaluationConfig(name=name, model=model, test_candidates=cands["test"], dev_candidates=cands["dev"],
                               train_candidates=cands["train"], rerank_depth=10, dev_depth=10, gap_queries=4,
                               runs_dir=runs)
        return json.loads(evaluation_stage(ds, cfg, out_dir / f"{name}.json", rerank_memo=memo).read_text())

    caplog.set_level("INFO")
    memo = RerankMemo()
    zeroshot = evaluate_as("zeroshot", config, memo)
    reused = evaluate_as("kept", kept, memo)
    assert "kept has the weights of zeroshot" in caplog.text
    assert reused == {**zeroshot, "key": "kept"}
    # the same figures as evaluating it afresh, without the memo
    fresh = evaluate_as("kept", kept, None, tmp_path / "fresh")
    for section in ("rerank_test", "rerank_dev", "retrieval_test", "retrieval_dev", "hybrid_test"):
        assert fresh[section]["mean"] == pytest.approx(reused[section]["mean"], abs=1e-6), section
    # its run files, under its own name and tag
    rerank = (runs / "test.kept.rerank.trec").read_text().splitlines()
    original = (runs / "test.zeroshot.rerank.trec").read_text().splitlines()
    assert rerank == [line.rsplit(" ", 1)[0] + " kept" for line in original] and rerank[0].endswith(" kept")
    assert (runs / "test.kept.hybrid.trec").read_text() == (runs / "test.zeroshot.hybrid.trec").read_text()
    # other weights are evaluated, not reused
    caplog.clear()
    evaluate_as("moved", moved, memo)
    assert "evaluation is reused" not in caplog.text
    # a later process finds the zero-shot evaluation already done and still reuses it for a twin
    caplog.clear()
    again = RerankMemo()
    evaluate_as("zeroshot", config, again)
    evaluate_as("twin", kept, again)
    assert "twin has the weights of zeroshot" in caplog.text

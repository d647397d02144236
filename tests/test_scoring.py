"""The teacher score cache: round trip, resumable shards, stale-cache detection."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from dualist.data import rank_docs
from dualist.errors import StaleArtifactError
from dualist.training import MissingScoreError, TeacherScores, candidate_pairs, score_candidates
from dualist.training.checkpoints import file_umask as _umask
from dualist.training.scoring import teacher_fingerprint


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeTeacher:
    """Scores by word overlap (+ a per-version offset); counts the pairs it scores; can fail on purpose."""

    def __init__(self, version: str = "v1", fail_on_call: int | None = None):
        self.version = version
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.pairs = 0

    def score(self, queries, docs, batch_size=64, show_progress=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.pairs += len(queries)
        offset = 10.0 if self.version == "v1" else 20.0
        return torch.tensor([offset + len(set(q.split()) & set(d.lower().split())) + len(d) / 1000
                             for q, d in zip(queries, docs)]).numpy()

    def save_pretrained(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "weights.txt").write_text(self.version)


def test_round_trip_and_cache_hit(tiny_train, tmp_path):
    ds, run = tiny_train
    out = tmp_path / "scores" / "train.teacher.parquet"
    teacher = FakeTeacher()
    scores = score_candidates(teacher, ds, "train", run, out, depth=3, shard_size=10)
    qrels = ds.qrels_for("train")
    expected = {(q, d) for q in run for d, _ in rank_docs(run[q])[:3]} | {
        (q, d) for q in run for d, rel in qrels[q].items() if rel > 0}
    assert {(q, d) for q, docs in scores.as_dict().items() for d in docs} == expected
    assert len(scores) == teacher.pairs == len(expected)
    table = pq.read_table(out)
    assert table.column_names == ["qid", "did", "score"] and table.num_rows == len(expected)
    q, d = table.column("qid")[0].as_py(), table.column("did")[0].as_py()
    want = float(FakeTeacher().score([ds.queries[q]], [ds.doc_text(d)])[0])
    assert scores.lookup(q, d) == pytest.approx(want, rel=1e-6)
    assert scores.meta["depth"] == 3 and scores.meta["split"] == "train"
    loaded = TeacherScores.load(out)
    assert loaded.as_dict() == scores.as_dict() and loaded.fingerprint == scores.fingerprint
    assert not out.with_name(out.name + ".parts").exists()
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not left private by mkstemp
    # up to date: loaded, not scored again
    again = FakeTeacher()
    assert score_candidates(again, ds, "train", run, out, depth=3, shard_size=10).as_dict() == scores.as_dict()
    assert again.pairs == 0


def test_resume_after_a_kill_skips_finished_shards(tiny_train, tmp_path):
    ds, run = tiny_train
    out = tmp_path / "s.parquet"
    total = len(candidate_pairs(ds, "train", run, depth=4))
    with pytest.raises(KeyboardInterrupt):
        score_candidates(FakeTeacher(fail_on_call=4), ds, "train", run, out, depth=4, shard_size=16)
    parts = out.with_name(out.name + ".parts")
    assert not out.exists() and len(list(parts.glob("shard-*.parquet"))) == 3
    second = FakeTeacher()
    resumed = score_candidates(second, ds, "train", run, out, depth=4, shard_size=16)
    assert second.pairs == total - 3 * 16
    reference = score_candidates(FakeTeacher(), ds, "train", run, tmp_path / "ref.parquet", depth=4, shard_size=16)
    assert resumed.as_dict() == reference.as_dict()
    assert not parts.exists()


def test_partial_shards_of_other_inputs_are_discarded(tiny_train, tmp_path):
    ds, run = tiny_train
    out = tmp_path / "s.parquet"
    with pytest.raises(KeyboardInterrupt):
        score_candidates(FakeTeacher("v1", fail_on_call=2), ds, "train", run, out, depth=4, shard_size=16)
    v2 = FakeTeacher("v2")
    scores = score_candidates(v2, ds, "train", run, out, depth=4, shard_size=16)
    assert v2.pairs == len(scores)  # nothing reused from v1's shard
    assert min(scores.as_dict()["q000"].values()) >= 20.0


def test_a_cache_from_another_teacher_or_candidate_set_is_stale(tiny_train, tmp_path):
    ds, run = tiny_train
    out = tmp_path / "s.parquet"
    score_candidates(FakeTeacher("v1"), ds, "train", run, out, depth=4)
    with pytest.raises(StaleArtifactError, match=r"teacher model.*Delete the file, or pass --force"):
        score_candidates(FakeTeacher("v2"), ds, "train", run, out, depth=4)
    with pytest.raises(StaleArtifactError, match=r"depth: 4 in the file, 5 now"):
        score_candidates(FakeTeacher("v1"), ds, "train", run, out, depth=5)
    other_run = {q: dict(list(docs.items())[:-1]) for q, docs in run.items()}
    with pytest.raises(StaleArtifactError, match=r"candidate run"):
        score_candidates(FakeTeacher("v1"), ds, "train", other_run, out, depth=4)
    forced = score_candidates(FakeTeacher("v2"), ds, "train", run, out, depth=4, force=True)
    assert min(forced.as_dict()["q000"].values()) >= 20.0
    assert TeacherScores.load(out).meta["teacher"] == forced.meta["teacher"]


def test_missing_pair_says_why(tiny_train, tmp_path):
    ds, run = tiny_train
    scores = score_candidates(FakeTeacher(), ds, "train", run, tmp_path / "s.parquet", depth=2)
    deep = next(d for d, _ in rank_docs(run["q000"])[2:] if ds.qrels_for("train")["q000"].get(d, 0) <= 0)
    with pytest.raises(KeyError, match=rf"'q000' and document '{deep}'.*top-2 candidates plus its positives"):
        scores.lookup("q000", deep)
    with pytest.raises(MissingScoreError, match="not scored at all"):
        scores.lookup("q999", deep)


def test_teacher_fingerprint_is_the_same_for_a_model_and_its_saved_folder(tiny_bert, tmp_path):
    from dualist.models import CrossEncoder, CrossEncoderConfig

    torch.manual_seed(0)
    teacher = CrossEncoder(CrossEncoderConfig(model=str(tiny_bert), max_length=32))
    fp = teacher_fingerprint(teacher)
    assert teacher_fingerprint(teacher) == fp
    # scoring leaves its truncation setting in the fast tokenizer's state (and in a saved tokenizer.json);
    # that is not the model, so it must not make cached scores look stale
    teacher.score(["a query"] * 2, ["one document", "another document here"])
    assert teacher_fingerprint(teacher) == fp
    teacher.save_pretrained(tmp_path / "t")
    assert teacher_fingerprint(CrossEncoder.from_pretrained(tmp_path / "t")) == fp
    with torch.no_grad():
        next(teacher.parameters()).add_(1e-3)
    assert teacher_fingerprint(teacher) != fp


def test_max_positives_scores_the_best_graded_first_and_a_cap_that_removes_nothing_keeps_the_cache(tmp_path):
    from dualist.data import Dataset
    from dualist.training.config import TrainConfig
    from dualist.training.examples import ExampleSource

    corpus = {f"d{i}": {"title": "", "text": f"word{i} shared"} for i in range(8)}
    ds = Dataset(name="graded", path=None, corpus=corpus, queries={"q1": "shared word1", "q2": "shared word5"},
                 qrels={"train": {"q1": {"d3": 1, "d1": 2, "d2": 1, "d9": 2}, "q2": {"d5": 1}}})
    run = {"q1": {"d0": 3.0, "d4": 2.0}, "q2": {"d6": 3.0, "d7": 2.0}}
    pairs = candidate_pairs(ds, "train", run, depth=1, max_positives=2)
    # d9 is judged but not in the corpus; d1 has the top grade; d3 precedes d2 in qrels order
    assert pairs == [("q1", "d0"), ("q1", "d1"), ("q1", "d3"), ("q2", "d6"), ("q2", "d5")]
    # training takes the positives in the same order: the first, or the first max_positives
    def trained(**kw):
        cfg = TrainConfig(num_negatives=1, negatives="range", neg_rank_min=1, neg_rank_max=2, **kw)
        return sorted((e.qid, e.positive) for e in ExampleSource(ds, "train", run, cfg).examples(0))

    assert trained(positives="first") == [("q1", "d1"), ("q2", "d5")]
    assert trained(max_positives=2) == [("q1", "d1"), ("q1", "d3"), ("q2", "d5")]
    assert trained() == [("q1", "d1"), ("q1", "d2"), ("q1", "d3"), ("q2", "d5")]
    with pytest.raises(ValueError, match="at least 1"):
        candidate_pairs(ds, "train", run, max_positives=0)

    out = tmp_path / "s.parquet"
    full = score_candidates(FakeTeacher(), ds, "train", run, out, depth=1)
    assert ("q1", "d2") in full
    # a cap of 3 removes nothing (q1 has 3 positives in the corpus): same fingerprint, the cache is reused
    again = FakeTeacher()
    assert score_candidates(again, ds, "train", run, out, depth=1, max_positives=3).fingerprint == full.fingerprint
    assert again.pairs == 0
    # a cap of 2 removes d2: other inputs, so the cache is stale
    with pytest.raises(StaleArtifactError, match="positives"):
        score_candidates(FakeTeacher(), ds, "train", run, out, depth=1, max_positives=2)
    capped = score_candidates(FakeTeacher(), ds, "train", run, tmp_path / "c.parquet", depth=1, max_positives=2)
    assert ("q1", "d2") not in capped and ("q1", "d3") in capped and len(capped) == 5


def test_combine_scores_joins_caches_and_its_fingerprint_follows_theirs(tiny_train, tmp_path):
    from dualist.training import combine_scores

    ds, run = tiny_train
    qids = sorted(run)
    first = {q: run[q] for q in qids[:5]}
    second = {q: run[q] for q in qids[5:9]}
    a = score_candidates(FakeTeacher(), ds, "train", first, tmp_path / "a.parquet", depth=3)
    b = score_candidates(FakeTeacher(), ds, "train", second, tmp_path / "b.parquet", depth=3)
    both = combine_scores([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "ab.parquet", split="train")
    assert both.as_dict() == {**a.as_dict(), **b.as_dict()} and len(both) == len(a) + len(b)
    assert TeacherScores.load(tmp_path / "ab.parquet").as_dict() == both.as_dict()
    assert both.meta["split"] == "train" and both.meta["depth"] == 3 and both.meta["pairs"] == len(both)
    # its fingerprint follows its parts: another second part gives another one
    c = score_candidates(FakeTeacher(), ds, "train", {q: run[q] for q in qids[5:10]}, tmp_path / "c.parquet", depth=3)
    assert c.fingerprint != b.fingerprint
    ac = combine_scores([tmp_path / "a.parquet", tmp_path / "c.parquet"], tmp_path / "ac.parquet", split="train")
    assert ac.fingerprint != both.fingerprint
    # a pair in both parts keeps the first part's score
    overlap = combine_scores([tmp_path / "c.parquet", tmp_path / "b.parquet"], tmp_path / "cb.parquet", split="train")
    assert overlap.as_dict() == c.as_dict()
    assert both.meta["teacher"] == a.meta["teacher"]
    # caches of two teachers (fold-teachers and the teacher) join too, under neither's fingerprint alone
    v2 = score_candidates(FakeTeacher("v2"), ds, "train", second, tmp_path / "v2.parquet", depth=3)
    mixed = combine_scores([tmp_path / "a.parquet", tmp_path / "v2.parquet"], tmp_path / "x.parquet", split="train")
    assert mixed.as_dict() == {**a.as_dict(), **v2.as_dict()}
    assert mixed.meta["teacher"] not in (a.meta["teacher"], v2.meta["teacher"]) and mixed.fingerprint != both.fingerprint

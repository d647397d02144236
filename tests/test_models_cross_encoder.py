"""CrossEncoder: forward == score, order, determinism, save/load, Hugging Face and sentence-transformers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from dualist.errors import ConfigError
from dualist.models import CrossEncoder, CrossEncoderConfig
from dualist.testing import TOPICS


def _pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [w for ws in TOPICS.values() for w in ws]
    queries = [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(n)]
    docs = [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(n)]
    return queries, docs


@pytest.fixture(scope="module")
def ce(tiny_bert) -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder(model=str(tiny_bert), max_length=48).eval()


def test_forward_shape_and_grad(ce):
    q, d = _pairs(5)
    ce.train()
    logits = ce(q, d)
    ce.eval()
    assert logits.shape == (5,) and logits.requires_grad
    logits.sum().backward()
    assert ce.model.classifier.weight.grad is not None
    ce.zero_grad()


def test_forward_matches_score(ce):
    q, d = _pairs(23)
    with torch.no_grad():
        trained = ce(q, d).numpy()
    scores = ce.score(q, d, batch_size=4)
    assert scores.dtype == np.float32 and scores.shape == (23,)
    np.testing.assert_allclose(scores, trained, atol=1e-5)
    assert np.std(scores) > 0  # not a constant head


def test_score_order_preserved(ce):
    q, d = _pairs(31, seed=2)
    scores = ce.score(q, d, batch_size=3)
    perm = np.random.default_rng(1).permutation(31)
    shuffled = ce.score([q[i] for i in perm], [d[i] for i in perm], batch_size=5)
    np.testing.assert_allclose(shuffled, scores[perm], atol=1e-5)
    assert ce.score([], []).shape == (0,)


def test_pairs_must_align(ce):
    with pytest.raises(ValueError, match="pair up"):
        ce.score(["a"], ["b", "c"])


def test_truncation_cuts_the_document(ce):
    query = "protein folding"
    doc = " ".join(["enzyme"] * 200)
    enc = ce._tokenize_pairs([query], [doc])
    ids = enc["input_ids"][0]
    assert len(ids) == 48
    assert ce.tokenizer.decode(ids[1:3]) == "protein folding"
    # A query longer than max_length still scores (it is cut too) instead of failing.
    long_query = " ".join(["climate"] * 100)
    with torch.no_grad():
        forward = ce([long_query, query], [doc, doc]).numpy()
    np.testing.assert_allclose(ce.score([long_query, query], [doc, doc]), forward, atol=1e-5)


def test_deterministic_given_seed(tiny_bert):
    q, d = _pairs(6)

    def build():
        torch.manual_seed(123)
        return CrossEncoder(model=str(tiny_bert), max_length=48).score(q, d)

    np.testing.assert_array_equal(build(), build())
    torch.manual_seed(7)
    assert np.abs(CrossEncoder(model=str(tiny_bert), max_length=48).score(q, d) - build()).max() > 1e-4


def test_num_layers(tiny_bert):
    model = CrossEncoder(CrossEncoderConfig(model=str(tiny_bert), num_layers=1, max_length=48))
    assert len(model.model.bert.encoder.layer) == 1 and model.model.config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match="between 1 and 2"):
        CrossEncoder(model=str(tiny_bert), num_layers=5)


def test_save_load_round_trip(ce, tmp_path):
    path = ce.save_pretrained(tmp_path / "teacher")
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    meta = json.loads((path / "dualist.json").read_text())
    assert meta["model_class"] == "CrossEncoder" and meta["config"]["max_length"] == 48
    loaded = CrossEncoder.from_pretrained(path)
    assert loaded.config.max_length == 48
    q, d = _pairs(17)
    # Same weights and inputs; the mean-pool bmm may round differently in the last bit (~1e-9).
    np.testing.assert_allclose(loaded.score(q, d), ce.score(q, d), rtol=0, atol=1e-6)


@pytest.fixture
def cls_ce(tiny_bert):
    torch.manual_seed(0)
    return CrossEncoder(model=str(tiny_bert), max_length=48, pooling="cls").eval()


def test_transformers_loads_saved_teacher(cls_ce, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ce = cls_ce
    path = ce.save_pretrained(tmp_path / "teacher")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    q, d = _pairs(4)
    with torch.no_grad():
        logits = model(**tokenizer(q, d, padding=True, truncation="only_second", max_length=48,
                                   return_tensors="pt")).logits[:, 0].numpy()
    np.testing.assert_allclose(logits, ce.score(q, d), atol=1e-5)


def test_sentence_transformers_loads_saved_teacher(cls_ce, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    ce = cls_ce
    path = ce.save_pretrained(tmp_path / "teacher")
    st_model = st.CrossEncoder(str(path), device="cpu", local_files_only=True)
    q, d = _pairs(6)
    theirs = st_model.predict(list(zip(q, d)))
    np.testing.assert_allclose(theirs, ce.score(q, d), atol=1e-5)  # raw logits, no sigmoid


def test_mean_pooling_head_is_the_default_and_differs_from_cls(tiny_bert, tmp_path):
    torch.manual_seed(0)
    mean = CrossEncoder(model=str(tiny_bert), max_length=48).eval()
    assert mean.config.pooling == "mean"
    torch.manual_seed(0)
    cls = CrossEncoder(model=str(tiny_bert), max_length=48, pooling="cls").eval()
    q, d = _pairs(4)
    assert np.abs(mean.score(q, d) - cls.score(q, d)).max() > 1e-4
    np.testing.assert_allclose(mean(q, d).detach().numpy(), mean.score(q, d), atol=1e-5)
    again = CrossEncoder.from_pretrained(mean.save_pretrained(tmp_path / "m"))
    assert again.config.pooling == "mean"
    np.testing.assert_allclose(again.score(q, d), mean.score(q, d), atol=1e-6)


def test_mean_pooled_minilm_separates_unrelated_pairs_from_the_start():
    """all-MiniLM-L6-v2's [CLS] state barely depends on the input; the mean-pooled head must."""
    torch.manual_seed(0)
    q = ["what causes cancer"] * 2
    d = ["tumor cells grow uncontrollably due to mutations", "the weather in paris is sunny today"]
    mean = CrossEncoder(model="minilm-l6", num_layers=2, max_length=64)
    cls = CrossEncoder(model="minilm-l6", num_layers=2, max_length=64, pooling="cls")
    spread_mean = abs(float(np.diff(mean.score(q, d))[0]))
    spread_cls = abs(float(np.diff(cls.score(q, d))[0]))
    assert spread_mean > 10 * spread_cls


# --------------------------------------------------------------------------- pooling="cosine"
def _segment_cosine(ce: CrossEncoder, queries: list[str], docs: list[str]) -> np.ndarray:
    """The cosine head by hand, from token type ids: mean query-token vs mean document-token state."""
    out = []
    for q, d in zip(queries, docs):
        enc = ce.tokenizer([q], [d], truncation="only_second", max_length=48, return_tensors="pt")
        with torch.no_grad():
            h = ce.model.bert(**enc).last_hidden_state[0]
        ids, types = enc["input_ids"][0], enc["token_type_ids"][0]
        words = (ids != ce.tokenizer.cls_token_id) & (ids != ce.tokenizer.sep_token_id)
        u, v = h[words & (types == 0)].mean(0), h[words & (types == 1)].mean(0)
        out.append(float(torch.nn.functional.cosine_similarity(u, v, dim=0)))
    return np.asarray(out)


@pytest.fixture(scope="module")
def cosine_ce(tiny_bert) -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder(model=str(tiny_bert), max_length=48, pooling="cosine", temperature=0.1).eval()


def test_cosine_teacher_starts_as_the_backbones_segment_similarity(cosine_ce):
    q, d = _pairs(9, seed=4)
    assert not cosine_ce.model.classifier.weight.any() and not cosine_ce.model.classifier.bias.any()
    np.testing.assert_allclose(cosine_ce.score(q, d, batch_size=4), _segment_cosine(cosine_ce, q, d) / 0.1,
                               atol=1e-4)


def test_cosine_teacher_trains_both_parts_and_round_trips(cosine_ce, tmp_path):
    q, d = _pairs(6, seed=5)
    ce = CrossEncoder.from_pretrained(cosine_ce.save_pretrained(tmp_path / "start"))
    assert ce.config.pooling == "cosine" and ce.config.temperature == 0.1
    np.testing.assert_allclose(ce.score(q, d), cosine_ce.score(q, d), atol=1e-6)  # the zero head stays zero
    ce.train()
    ce(q, d).sum().backward()
    assert ce.model.classifier.weight.grad.abs().sum() > 0  # the linear part learns
    assert ce.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        ce.model.classifier.weight.copy_(torch.randn_like(ce.model.classifier.weight))  # as if trained
    ce.eval()
    loaded = CrossEncoder.from_pretrained(ce.save_pretrained(tmp_path / "trained"))
    np.testing.assert_allclose(loaded.score(q, d), ce.score(q, d), atol=1e-6)
    assert not np.allclose(loaded.score(q, d), cosine_ce.score(q, d), atol=1e-3)


def test_segments_split_at_the_first_separator_without_token_types(cosine_ce):
    tok = cosine_ce.tokenizer
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    # BERT's [CLS] q q [SEP] d d d [SEP] [PAD] and a RoBERTa-like <s> q </s></s> d </s>
    ids = torch.tensor([[cls, 40, 41, sep, 50, 51, 52, sep, pad],
                        [cls, 40, sep, sep, 50, sep, pad, pad, pad]])
    mask = (ids != pad).long()
    query, doc = cosine_ce._segments({"input_ids": ids, "attention_mask": mask})
    assert query.tolist() == [[0, 1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0]]
    assert doc.tolist() == [[0, 0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0]]


# --------------------------------------------------------------------------- pooling="dual"
@pytest.fixture(scope="module")
def dual_ce(tiny_bert) -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder(model=str(tiny_bert), max_length=48, pooling="dual", temperature=0.1).eval()


@pytest.mark.parametrize("packed", [True, False])
def test_dual_teacher_starts_as_the_backbones_dual_encoder(dual_ce, tiny_bert, packed):
    from dualist.models import DualEncoder

    rng = random.Random(6)
    words = [w for ws in TOPICS.values() for w in ws]
    q = [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(9)]
    d = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(9)]  # short: nothing is cut
    de = DualEncoder(model=str(tiny_bert), pooling="mean", normalize=True, similarity="dot", temperature=0.1).eval()
    expected = (de.encode_queries(q) * de.encode_docs(d)).sum(1) / 0.1
    dual_ce.packed_inference = packed
    try:
        np.testing.assert_allclose(dual_ce.score(q, d, batch_size=4), expected, atol=1e-4)
    finally:
        dual_ce.packed_inference = True
    # and the segment cosine of the joint reading (pooling="cosine") is another score
    cosine = CrossEncoder(model=str(tiny_bert), max_length=48, pooling="cosine", temperature=0.1).eval()
    assert not np.allclose(cosine.score(q, d), expected, atol=1e-2)


def test_dual_teacher_reads_the_query_and_the_document_alone(dual_ce):
    tok = dual_ce.tokenizer
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    ids = torch.tensor([[cls, 40, 41, sep, 50, 51, 52, sep, pad],
                        [cls, 40, sep, sep, 50, sep, pad, pad, pad]])  # BERT's and a RoBERTa-like pair
    batch = {"input_ids": ids, "attention_mask": (ids != pad).long(), "token_type_ids": torch.ones_like(ids)}
    query, doc = dual_ce._alone(batch)
    assert query["input_ids"].tolist() == [[cls, 40, 41, sep], [cls, 40, sep, pad]]
    assert query["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert doc["input_ids"].tolist() == [[cls, 50, 51, 52, sep], [cls, 50, sep, pad, pad]]
    assert doc["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert not doc["token_type_ids"].any()  # read alone, a document is segment 0, as a dual-encoder reads it


def test_dual_teacher_cuts_the_document_as_in_the_pair_trains_both_parts_and_round_trips(dual_ce, tmp_path):
    q, d = _pairs(6, seed=7)  # documents up to 40 words: the 48-token pair cuts some
    ce = CrossEncoder.from_pretrained(dual_ce.save_pretrained(tmp_path / "start"))
    assert ce.config.pooling == "dual" and ce.config.temperature == 0.1
    np.testing.assert_allclose(ce.score(q, d), dual_ce.score(q, d), atol=1e-6)
    pair = ce._tokenize_pairs(q, d, padding=True, return_tensors="pt")
    _, doc = ce._alone(pair)
    assert int(doc["attention_mask"].sum(1).max()) < 48  # the document alone is no longer than in the pair
    ce.train()
    ce(q, d).sum().backward()
    assert ce.model.classifier.weight.grad.abs().sum() > 0  # the zero-started joint part learns
    assert ce.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        ce.model.classifier.weight.copy_(torch.randn_like(ce.model.classifier.weight))
    ce.eval()
    loaded = CrossEncoder.from_pretrained(ce.save_pretrained(tmp_path / "trained"))
    np.testing.assert_allclose(loaded.score(q, d), ce.score(q, d), atol=1e-5)
    assert not np.allclose(loaded.score(q, d), dual_ce.score(q, d), atol=1e-3)


def test_cosine_pooling_checks_its_temperature(tiny_bert):
    with pytest.raises(ConfigError, match="temperature"):
        CrossEncoder(model=str(tiny_bert), pooling="cosine", temperature=0.0)

"""Packed inference (dualist.models.packed): the Hugging Face forward's numbers, used where it qualifies."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

import dualist.models.precision as common_module
import dualist.models.cross_encoder as ce_module
import dualist.models.dual_encoder as de_module
from dualist.models import CrossEncoder, DualEncoder
from dualist.models.cpu import cpu_features
import dualist.models.packed as packed_module
from dualist.models.packed import onednn_available, packable, packed_forward
from dualist.testing import TOPICS, make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for ws in TOPICS.values() for w in ws]
    return [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def body(tiny_bert):
    return AutoModel.from_pretrained(str(tiny_bert)).eval()


def _batch(lengths: list[int], vocab: int, seed: int = 0, types: bool = False):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=g)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    tt = (torch.arange(width) >= torch.tensor(lengths)[:, None] // 2).long() * mask if types else None
    return ids, mask, tt


@pytest.mark.parametrize("rows", [1024, 7])  # one block, and blocks that cut through sequences
@pytest.mark.parametrize("lengths", [[9, 9, 9, 9], [12, 12, 7, 7, 7, 3], [17, 4, 11, 2, 16]])
def test_packed_forward_equals_the_hugging_face_forward(body, rows, lengths):
    ids, mask, tt = _batch(lengths, body.config.vocab_size, types=True)
    with torch.inference_mode():
        ref = body(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        out = packed_forward(body, ids, mask, tt, rows=rows)
        first = packed_forward(body, ids, mask, tt, cls_only=True, rows=rows)
    real = mask.bool()
    assert out.shape == ref.shape
    assert (out - ref)[real].abs().max() < 1e-5
    assert not out[~real].any()  # padding comes back as zeros
    assert first.shape == (len(lengths), body.config.hidden_size)
    assert (first - ref[:, 0]).abs().max() < 1e-5
    # token types matter, so the comparison above would catch them being dropped
    with torch.inference_mode():
        assert (packed_forward(body, ids, mask) - out)[real].abs().max() > 1e-4


needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("rows", [1024, 7])
def test_onednn_linears_compute_the_same_layers(body, monkeypatch, rows):
    tails: list[int] = []
    real_tail = packed_module._onednn_tail
    monkeypatch.setattr(packed_module, "_onednn_tail", lambda *a: tails.append(1) or real_tail(*a))
    ids, mask, tt = _batch([12, 12, 7, 3], body.config.vocab_size, types=True)
    with torch.inference_mode():
        ref = body(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        plain = packed_forward(body, ids, mask, tt, rows=rows, onednn=False)
        assert tails == []
        fast = packed_forward(body, ids, mask, tt, rows=rows, onednn=True)
        assert len(tails) == len(body.encoder.layer) * -(-int(mask.sum()) // rows)  # every layer, every block
        first = packed_forward(body, ids, mask, tt, cls_only=True, rows=rows, onednn=True)
    real = mask.bool()
    assert (fast - ref)[real].abs().max() < 1e-5
    assert (fast - plain)[real].abs().max() < 1e-5
    assert (first - ref[:, 0]).abs().max() < 1e-5


@needs_onednn
def test_onednn_path_reads_the_weights_at_each_call(tiny_bert, tmp_path):
    body = AutoModel.from_pretrained(str(tiny_bert)).eval()
    ids, mask, _ = _batch([9, 5], body.config.vocab_size, seed=3)
    real = mask.bool()
    with torch.inference_mode():
        before = packed_forward(body, ids, mask, onednn=True)
    layer = body.encoder.layer[0]
    prepacked = packed_module._PREPACKED[layer][3]
    with torch.inference_mode():
        again = packed_forward(body, ids, mask, onednn=True)
    assert packed_module._PREPACKED[layer][3] is prepacked  # nothing changed: the prepacked copy is reused
    assert torch.equal(again, before)

    def changed_and_right(change) -> None:
        nonlocal before
        with torch.no_grad():
            change()
        with torch.inference_mode():
            after = packed_forward(body, ids, mask, onednn=True)
            ref = body(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (after - before)[real].abs().max() > 1e-3
        assert (after - ref)[real].abs().max() < 1e-5
        before = after

    def in_place():  # e.g. an optimizer step between two evaluations
        for layer in body.encoder.layer:
            layer.intermediate.dense.weight.mul_(1.5)
            layer.attention.self.key.bias.add_(0.5)

    other = AutoModel.from_pretrained(str(make_tiny_bert(tmp_path / "other", seed=7))).eval()
    changed_and_right(in_place)
    changed_and_right(lambda: body.load_state_dict(other.state_dict()))
    changed_and_right(lambda: setattr(body.encoder.layer[1].output.dense, "weight",
                                      torch.nn.Parameter(other.encoder.layer[1].output.dense.weight * 2)))


def test_onednn_asked_for_where_torch_has_none_is_refused(body, monkeypatch):
    monkeypatch.setattr(packed_module, "onednn_available", lambda: False)
    monkeypatch.setattr(packed_module, "_onednn_tail", lambda *a: pytest.fail("oneDNN path taken"))
    ids, mask, _ = _batch([4, 3], body.config.vocab_size)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="no oneDNN linear"):
            packed_forward(body, ids, mask, onednn=True)
        ref = body(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (packed_forward(body, ids, mask) - ref)[mask.bool()].abs().max() < 1e-5  # the modules' path


def test_onednn_path_only_for_plain_float32_bert_layers(tiny_bert):
    from transformers import AutoConfig

    from dualist.models.precision import reduced_precision
    from dualist.training.lean_activations import enable_lean_activations

    body = AutoModel.from_pretrained(str(tiny_bert)).eval()
    assert all(packed_module._onednn_layer(layer, 64) is not None for layer in body.encoder.layer)
    int8 = reduced_precision(AutoModel.from_pretrained(str(tiny_bert)), "int8")
    lean = AutoModel.from_pretrained(str(tiny_bert))
    enable_lean_activations(lean)
    relu = AutoModel.from_config(AutoConfig.from_pretrained(str(tiny_bert), hidden_act="relu"))
    tanh_gelu = AutoModel.from_config(AutoConfig.from_pretrained(str(tiny_bert), hidden_act="gelu_new"))
    for other in (int8, lean.eval(), relu.eval(), tanh_gelu.eval()):
        assert packable(other)
        assert all(packed_module._onednn_layer(layer, 64) is None for layer in other.encoder.layer)
    ids, mask, _ = _batch([6, 4], relu.config.vocab_size)
    with torch.inference_mode():  # the fallback (its own modules) computes that activation
        ref = relu(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (packed_forward(relu, ids, mask) - ref)[mask.bool()].abs().max() < 1e-5


def test_packed_forward_refuses_left_padding_and_empty_rows(body):
    ids, mask, _ = _batch([5, 3], body.config.vocab_size)
    with pytest.raises(ValueError, match="right padding"):
        packed_forward(body, ids, mask.flip(1))
    with pytest.raises(ValueError, match="no tokens"):
        packed_forward(body, ids, torch.zeros_like(mask))
    assert packed_forward(body, ids[:0], mask[:0]).shape == (0, ids.shape[1], body.config.hidden_size)
    assert packed_forward(body, ids[:0], mask[:0], cls_only=True).shape == (0, body.config.hidden_size)


def test_packable_only_for_bert_bodies_in_eval_mode_on_cpu(body, tiny_bert):
    assert packable(body)
    body.train()
    try:
        assert not packable(body)  # dropout would be skipped
    finally:
        body.eval()
    body.config.position_embedding_type = "relative_key"  # older transformers: relative positions
    try:
        assert not packable(body)
    finally:
        del body.config.position_embedding_type
    assert not packable(torch.nn.Linear(2, 2))
    half = AutoModel.from_pretrained(str(tiny_bert)).eval().to(torch.float16)
    assert not packable(half)


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_reduced_precision_copies_pack_too(tiny_bert, monkeypatch, dtype):
    de = DualEncoder(model=str(tiny_bert), doc_max_length=32)
    low = de.quantized(dtype)
    assert packable(low.doc_model)
    texts = _texts(10, seed=5)
    low.packed_inference = False
    ref = low.encode_docs(texts, batch_size=4)
    low.packed_inference = True
    calls = _count_calls(monkeypatch, de_module)
    out = low.encode_docs(texts, batch_size=4)
    assert len(calls) == 3
    # bf16: the same modules on the same rows; int8: each row block quantized with its own scale
    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > (0.999 if dtype == "bf16" else 0.98)
    fp32 = de.encode_docs(texts)
    assert ((out * fp32).sum(1) / np.linalg.norm(out, axis=1)).min() > (0.999 if dtype == "bf16" else 0.95)


def test_lean_activation_layout_still_packs_to_the_same_numbers(tiny_bert):
    from dualist.training.lean_activations import enable_lean_activations

    plain = AutoModel.from_pretrained(str(tiny_bert)).eval()
    lean = AutoModel.from_pretrained(str(tiny_bert))
    enable_lean_activations(lean)
    lean.eval()
    assert packable(lean)
    ids, mask, _ = _batch([8, 5, 5], plain.config.vocab_size)
    with torch.inference_mode():
        ref = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        out = packed_forward(lean, ids, mask)
    assert (out - ref)[mask.bool()].abs().max() < 1e-5


def _count_calls(monkeypatch, module) -> list[int]:
    calls: list[int] = []
    real = module.packed_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "packed_forward", counting)
    return calls


def test_dual_encoder_encodes_through_packed_path_with_the_same_embeddings(tiny_bert, monkeypatch):
    de = DualEncoder(model=str(tiny_bert), doc_max_length=24)
    texts = _texts(13, seed=1)
    de.packed_inference = False
    ref = de.encode_docs(texts, batch_size=4)
    ref_q = de.encode_queries(texts[:5])
    de.packed_inference = True
    calls = _count_calls(monkeypatch, de_module)
    out = de.encode_docs(texts, batch_size=4)
    assert len(calls) == 4  # every batch took the packed path
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(de.encode_queries(texts[:5]), ref_q, atol=1e-6)


def test_dual_encoder_with_a_prefix_cache_packs_the_layers_above_it(tiny_bert, monkeypatch):
    from dualist.models import packed as packed_module

    de = DualEncoder(model=str(tiny_bert), doc_max_length=24)
    texts = _texts(13, seed=2)
    de.packed_inference = False
    ref = de.encode_docs(texts, batch_size=4)
    de.packed_inference = True
    de.cache_prefix(1)
    calls = _count_calls(monkeypatch, de_module)
    blocks = []
    real = packed_module.packed_layers
    monkeypatch.setattr(packed_module, "packed_layers", lambda body, x, lengths, **kw: blocks.append(
        (kw["layers"], int(sum(lengths)))) or real(body, x, lengths, **kw))
    np.testing.assert_allclose(de.encode_docs(texts, batch_size=4), ref, atol=1e-5)
    assert calls == []  # not the whole body: the frozen block once per text, the block above per batch
    below, above = [n for s, n in blocks if s == slice(0, 1)], [n for s, n in blocks if s == slice(1, None)]
    assert len(above) == 4 and len(below) == 4 and sum(below) == sum(above)  # 13 new texts in 4 batches
    blocks.clear()
    np.testing.assert_allclose(de.encode_docs(texts, batch_size=5), ref, atol=1e-5)
    assert [s for s, _ in blocks] == [slice(1, None)] * 3  # every text cached: the upper block only


def _scored_both_ways(ce, monkeypatch, q, d):
    """``(packed scores, Hugging Face forward's scores, packed_forward calls)``, in batches of 4
    (11 pairs: 3 batches, each of which must take the packed path)."""
    ce.packed_inference = False
    ref = ce.score(q, d, batch_size=4)
    ce.packed_inference = True
    calls = _count_calls(monkeypatch, ce_module)
    out = ce.score(q, d, batch_size=4)
    # one packed pass per batch; pooling="dual" adds the query's and the document's own
    assert len(calls) == 3 * (3 if getattr(ce.config, "pooling", None) == "dual" else 1)
    return out, ref, calls


@pytest.mark.parametrize("pooling", ["cls", "mean", "cosine", "dual"])
def test_cross_encoder_scores_through_packed_path_with_the_same_logits(tiny_bert, monkeypatch, pooling):
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=40, pooling=pooling).eval()
    if pooling in ("cosine", "dual"):  # give the zero-initialised head something to add
        torch.nn.init.normal_(ce.model.classifier.weight)
    q, d = _texts(11, seed=2), _texts(11, seed=3)
    out, ref, calls = _scored_both_ways(ce, monkeypatch, q, d)
    spread = float(ref.max() - ref.min())
    assert spread > 0
    np.testing.assert_allclose(out, ref, atol=1e-5 * max(1.0, spread))
    before = len(calls)
    with torch.no_grad():  # the training path keeps the Hugging Face forward (gradients, dropout)
        ce(q[:2], d[:2])
    assert len(calls) == before


def test_cross_encoder_other_heads_keep_the_hugging_face_forward(tiny_bert, monkeypatch):
    ce = CrossEncoder(model=str(tiny_bert), max_length=40, pooling="cls").eval()
    assert ce._packable()
    ce.model.classifier = torch.nn.Sequential(ce.model.classifier)  # not the plain BERT head
    assert not ce._packable()
    calls = _count_calls(monkeypatch, ce_module)
    ce.score(_texts(3), _texts(3, seed=4))
    assert calls == []


def test_packed_minilm_matches_hugging_face_on_real_weights():
    """All-MiniLM-L6-v2 (packaged): hidden states and the [CLS]-only path against the HF forward."""
    from dualist.models import resolve_model

    path = resolve_model("minilm-l6")
    body = AutoModel.from_pretrained(path).eval()
    de = DualEncoder(model="minilm-l6")
    texts = ["A man is eating food.", "Protein folding determines enzyme function in cells. " * 6, "sleep"]
    batch = de.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = body(**batch).last_hidden_state
        out = packed_forward(body, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], rows=16)
        first = packed_forward(body, batch["input_ids"], batch["attention_mask"], cls_only=True)
    real = batch["attention_mask"].bool()
    assert (out - ref)[real].abs().max() < 1e-4
    assert (first - ref[:, 0]).abs().max() < 1e-4
    clf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    assert packable(clf.bert)


@pytest.mark.parametrize("dtype,full_range", [("int8", True), ("int8", False), ("bf16", None)])
def test_cross_encoder_reduced_precision_copies_pack_with_a_cls_head(tiny_bert, monkeypatch, dtype, full_range):
    # int8 copies keep bf16 down-projections where the CPU has bf16; that must not turn packing off
    monkeypatch.setattr(common_module, "native_cpu_bf16", lambda: True)
    if full_range is not None:  # 8-bit activations (VNNI CPUs) and 7-bit ones (AVX2: no VNNI)
        if full_range and not cpu_features().vnni:
            pytest.skip("full-range int8 saturates without VNNI; this CPU runs the 7-bit case only")
        monkeypatch.setattr(common_module, "full_range_int8", lambda: full_range)
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=40, pooling="cls").eval()
    # BERT's 0.02 init leaves a tiny random model's [CLS] state nearly input-independent (scores
    # spread ~0.01), so int8 rounding swamps the ranking (r 0.875 with 7-bit activations, where
    # full range gave 0.977); wider weights give the scores a real spread to compare
    with torch.no_grad():
        for name, weight in ce.model.named_parameters():
            if weight.dim() == 2 and "embeddings" not in name:
                torch.nn.init.normal_(weight, std=0.1)
        torch.nn.init.normal_(ce.model.classifier.weight)
    low = ce.quantized(dtype)
    assert low._packable()
    if full_range is not None:
        assert {m.reduce_range for m in low.model.modules() if hasattr(m, "reduce_range")} == {not full_range}
    out, ref, _ = _scored_both_ways(low, monkeypatch, _texts(11, seed=2), _texts(11, seed=3))
    assert out.dtype == np.float32
    assert float(ref.max() - ref.min()) > 0.5
    # bf16: the same modules on the same rows; int8: each row block quantized with its own scale
    assert np.corrcoef(out, ref)[0, 1] > (0.999 if dtype == "bf16" else 0.99)


@needs_onednn
@pytest.mark.parametrize("capability, takes_onednn", [("AVX512", True), ("AVX2", False), ("DEFAULT", False)])
def test_the_default_products_follow_the_cpu_class(body, monkeypatch, capability, takes_onednn):
    import dualist.models.cpu as cpu_module

    features = cpu_module.CpuFeatures(capability=capability, vnni=False, bf16=False, capped=False)
    monkeypatch.setattr(cpu_module, "cpu_features", lambda: features)
    calls = []
    real = packed_module._onednn_tail
    monkeypatch.setattr(packed_module, "_onednn_tail", lambda *a: calls.append(1) or real(*a))
    ids, mask, _ = _batch([5, 3], body.config.vocab_size)
    with torch.inference_mode():
        out = packed_forward(body, ids, mask)
        ref = body(input_ids=ids, attention_mask=mask).last_hidden_state
    assert bool(calls) == takes_onednn and packed_module.onednn_products() == takes_onednn
    assert (out - ref)[mask.bool()].abs().max() < 1e-5  # the same hidden states either way

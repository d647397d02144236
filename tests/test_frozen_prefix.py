"""Frozen bottom layers (TrainConfig.freeze_layers) and the prefix cache that computes them once per text."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dualist.errors import ConfigError, DualistError
from dualist.models import CrossEncoder, DualEncoder
from dualist.models.backbone import freeze_bottom, transformer_layers
from dualist.models.frozen_prefix import PrefixCache
from dualist.testing import TOPICS
from dualist.training import ExampleSource, TrainConfig, student_step, train_student, train_teacher


pytestmark = pytest.mark.usefixtures("one_thread")


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for ws in TOPICS.values() for w in ws]
    return [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(n)]


def _student(bert, **kw) -> DualEncoder:
    return DualEncoder(model=str(bert), query_max_length=16, doc_max_length=48, temperature=0.05, **kw)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- freeze_bottom
def test_freeze_bottom_fixes_the_embeddings_and_the_first_layers(tiny_bert):
    de = _student(tiny_bert)
    layers = transformer_layers(de.query_model)
    n_bottom = sum(1 for m in (de.query_model.embeddings, layers[0]) for _ in m.parameters())
    assert freeze_bottom(de, 1) == n_bottom
    assert not any(p.requires_grad for p in de.query_model.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert freeze_bottom(de, 1) == 0  # a second call changes nothing
    assert freeze_bottom(de, 0) == 0


def test_frozen_layers_never_drop_out_while_the_model_trains(tiny_bert):
    outputs: dict[str, list[torch.Tensor]] = {"frozen": [], "free": []}

    def capture(key):
        return lambda module, args, out: outputs[key].append((out[0] if isinstance(out, tuple) else out).detach())

    frozen, free = _student(tiny_bert), _student(tiny_bert)
    freeze_bottom(frozen, 1)
    for key, model in (("frozen", frozen), ("free", free)):
        transformer_layers(model.query_model)[0].register_forward_hook(capture(key))
        model.train()
        texts = _texts(4)
        model.embed_docs(texts)
        model.embed_docs(texts)
    assert torch.equal(*outputs["frozen"])  # eval mode inside a training model
    assert not torch.equal(*outputs["free"])  # the tiny BERT has dropout: the check can tell
    assert frozen.training and frozen.query_model.encoder.layer[1].training


def test_freeze_bottom_refuses_what_it_cannot_do(tiny_bert):
    with pytest.raises(ConfigError, match="at most 1"):
        freeze_bottom(_student(tiny_bert), 2)  # the tiny BERT has 2 layers: one must train
    with pytest.raises(ConfigError, match=">= 0"):
        freeze_bottom(_student(tiny_bert), -1)
    with pytest.raises(ConfigError, match="no Hugging Face backbone"):
        freeze_bottom(torch.nn.Linear(2, 2), 1)


# --------------------------------------------------------------------------- the cache at inference
@pytest.mark.parametrize("shared", [True, False])
def test_cached_prefix_gives_the_uncached_embeddings(tiny_bert, shared):
    de = _student(tiny_bert, shared=shared)
    docs, queries = _texts(11), _texts(5, seed=1)
    plain_d, plain_q = de.encode_docs(docs, batch_size=4), de.encode_queries(queries)
    cache = de.cache_prefix(1)
    np.testing.assert_allclose(de.encode_docs(docs, batch_size=4), plain_d, atol=1e-5)
    np.testing.assert_allclose(de.encode_queries(queries), plain_q, atol=1e-5)
    # one entry per distinct text and tower (a shared tower keeps queries and documents apart by length)
    assert len(cache) == len(set(docs)) + len(set(queries)) and cache.misses == len(cache)
    # a second pass (other batch widths: batch_size 3) computes nothing below the cut
    np.testing.assert_allclose(de.encode_docs(docs, batch_size=3), plain_d, atol=1e-5)
    assert cache.misses == len(cache) and cache.hits == len(docs)


@pytest.mark.parametrize("first", ["training path", "packed inference"])
def test_the_padded_and_packed_paths_share_one_cache(tiny_bert, first):
    """States computed by either path serve the other: both keep one text's unpadded tokens."""
    de = _student(tiny_bert)
    docs = _texts(9, seed=2)
    plain = de.encode_docs(docs, batch_size=4)
    cache = de.cache_prefix(1)

    def padded() -> np.ndarray:
        with torch.no_grad():
            return de.eval().embed_docs(docs).numpy()

    def packed() -> np.ndarray:
        return de.encode_docs(docs, batch_size=4)

    runs = (padded, packed) if first == "training path" else (packed, padded)
    for run in runs:
        np.testing.assert_allclose(run(), plain, atol=1e-5)
    assert cache.misses == len(set(docs)) and cache.hits == len(docs)


@pytest.mark.parametrize("path", ["training path", "packed inference"])
def test_a_text_repeated_in_one_batch_goes_through_the_frozen_layers_once(tiny_bert, path):
    de = _student(tiny_bert)
    a, b = _texts(2, seed=4)
    docs = [a, b, a, a, b]
    plain = de.encode_docs(docs, batch_size=8)
    cache = de.cache_prefix(1)
    if path == "training path":
        with torch.no_grad():
            got = de.eval().embed_docs(docs).numpy()
    else:
        got = de.encode_docs(docs, batch_size=8)
    np.testing.assert_allclose(got, plain, atol=1e-5)
    assert cache.misses == 2 and cache.hits == 3 and len(cache) == 2


def test_without_packed_inference_the_cache_takes_the_padded_path(tiny_bert, monkeypatch):
    de = _student(tiny_bert)
    docs = _texts(5, seed=3)
    plain = de.encode_docs(docs)
    cache = de.cache_prefix(1)
    de.packed_inference = False
    called = []
    monkeypatch.setattr(PrefixCache, "packed_last_hidden_state", lambda *a, **k: called.append(1))
    np.testing.assert_allclose(de.encode_docs(docs), plain, atol=1e-5)
    assert called == [] and cache.misses == len(set(docs))


def test_a_full_cache_keeps_nothing_more_and_stays_exact(tiny_bert):
    de = _student(tiny_bert)
    docs = _texts(6)
    plain = de.encode_docs(docs)
    cache = de.cache_prefix(1, max_bytes=1)
    np.testing.assert_allclose(de.encode_docs(docs), plain, atol=1e-5)
    assert len(cache) == 0 and cache.nbytes == 0 and cache.misses == len(docs)


def test_a_shared_cache_refuses_other_frozen_weights(tiny_bert, tmp_path):
    from dualist.testing import make_tiny_bert

    cache = _student(tiny_bert).cache_prefix(1)
    other = _student(make_tiny_bert(tmp_path / "other", seed=1))
    with pytest.raises(DualistError, match="other frozen weights"):
        other.cache_prefix(1, cache)
    assert other.prefix_cache is None
    with pytest.raises(ConfigError, match="PrefixCache of 2 layers"):
        _student(tiny_bert).cache_prefix(1, PrefixCache(2))
    same = _student(tiny_bert)
    assert same.cache_prefix(1, cache) is cache  # the same start: the same frozen weights


def test_a_quantized_copy_does_not_reuse_fp32_states(tiny_bert):
    de = _student(tiny_bert)
    de.cache_prefix(1)
    de.encode_docs(_texts(3))
    low = de.quantized("int8")
    assert low.prefix_cache is None and de.prefix_cache is not None
    with pytest.raises(DualistError, match="fp32 model"):
        low.cache_prefix(1)


# --------------------------------------------------------------------------- the cache in training
def test_cached_training_step_equals_the_uncached_one(tiny_train, tiny_bert):
    """Same loss and gradients, dropout on in the trained layer: the cache only skips recomputation."""
    from dualist.losses import build_loss

    ds, run = tiny_train
    cfg = TrainConfig(batch_size=6, num_negatives=3, device="cpu", seed=3)
    batch = next(iter(ExampleSource(ds, "train", run, cfg).batches(0)))
    loss_fn = build_loss("onehot")
    results = []
    for cached in (False, True):
        de = _student(tiny_bert).train()
        freeze_bottom(de, 1)
        if cached:
            de.cache_prefix(1)
            de.encode_docs([ds.doc_text(d) for d in ds.corpus])  # fill it, as the dev evaluations do
        torch.manual_seed(0)
        loss = student_step(de, batch, loss_fn)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in de.named_parameters() if p.grad is not None}
        if cached:
            assert de.prefix_cache.hits >= len(set(batch.queries))  # the step ran from cached states
        results.append((loss.item(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a and all(".layer.1." in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6)


def test_student_trained_with_frozen_layers_keeps_them_and_shares_a_cache(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    start = _student(tiny_bert)
    cfg = TrainConfig(max_steps=6, batch_size=8, num_negatives=3, lr=1e-2, device="cpu", freeze_layers=1)
    path = train_student(ds, "train", run, start.config, cfg, tmp_path, loss="onehot")
    trained = DualEncoder.from_pretrained(path)
    before, after = _state(start), _state(trained)
    bottom = [k for k in before if k.startswith(("query_model.embeddings.", "query_model.encoder.layer.0."))]
    top = [k for k in before if k.startswith("query_model.encoder.layer.1.")]
    assert bottom and top
    assert all(torch.equal(before[k], after[k]) for k in bottom)
    assert any(not torch.equal(before[k], after[k]) for k in top)
    # the corpus through the frozen layers once, for the start and the student alike
    docs = [ds.doc_text(d) for d in ds.corpus]
    plain = trained.encode_docs(docs)
    cache = start.cache_prefix(1)
    start.encode_docs(docs)
    trained.cache_prefix(1, cache)
    np.testing.assert_allclose(trained.encode_docs(docs), plain, atol=1e-5)
    assert cache.misses == len(set(docs)) and cache.hits == len(docs)


def test_students_of_one_start_share_a_cache_and_train_as_with_their_own(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    start = _student(tiny_bert)
    cfg = TrainConfig(max_steps=5, batch_size=8, num_negatives=3, lr=1e-2, device="cpu", freeze_layers=1)
    shared = PrefixCache(1)
    train_student(ds, "train", run, start.config, cfg, tmp_path / "a", loss="onehot", prefix_cache=shared)
    seen, kept = shared.misses, len(shared)
    assert kept > 0
    # a second student of the same start meets the same batches: every text is already there
    b = train_student(ds, "train", run, start.config, cfg, tmp_path / "b", loss="onehot", prefix_cache=shared)
    assert shared.misses == seen and len(shared) == kept and shared.hits > 0
    own = train_student(ds, "train", run, start.config, cfg, tmp_path / "c", loss="onehot")
    shared_weights, own_weights = _state(DualEncoder.from_pretrained(b)), _state(DualEncoder.from_pretrained(own))
    for name in own_weights:
        torch.testing.assert_close(shared_weights[name], own_weights[name], rtol=1e-5, atol=1e-6)


def test_a_cache_without_frozen_layers_is_refused(tiny_train, tiny_bert, tmp_path):
    ds, run = tiny_train
    cfg = TrainConfig(max_steps=1, batch_size=8, num_negatives=3, device="cpu")
    with pytest.raises(ConfigError, match="freeze_layers is 0"):
        train_student(ds, "train", run, _student(tiny_bert).config, cfg, tmp_path, loss="onehot",
                      prefix_cache=PrefixCache(1))
    assert not (tmp_path / "model").exists()


def test_teacher_trained_with_frozen_layers_keeps_them(tiny_train, tiny_bert, tmp_path):
    from dualist.models import CrossEncoderConfig

    ds, run = tiny_train
    mcfg = CrossEncoderConfig(model=str(tiny_bert), max_length=64)
    cfg = TrainConfig(max_steps=4, batch_size=8, num_negatives=3, lr=1e-2, device="cpu", freeze_layers=1)
    torch.manual_seed(cfg.seed)
    start = _state(CrossEncoder(mcfg))
    after = _state(CrossEncoder.from_pretrained(train_teacher(ds, "train", run, mcfg, cfg, tmp_path)))
    bottom = [k for k in start if ".embeddings." in k or ".encoder.layer.0." in k]
    assert bottom and all(torch.equal(start[k], after[k]) for k in bottom)
    assert not torch.equal(start["model.classifier.weight"], after["model.classifier.weight"])

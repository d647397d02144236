"""DualEncoder: shapes, pooling, towers, inference == training path, save/load, sentence-transformers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from dualist.errors import ConfigError, DualistError
from dualist.models import DualEncoder, DualEncoderConfig
from dualist.testing import TOPICS

QUERIES = ["protein folding", "climate warming ocean", "vaccine", "brain memory synapse neuron cortex"]
DOCS = [
    "enzyme binding study of amino peptide folding",
    "ocean carbon emission",
    "sleep",
    "the tumor cell results show reduced metastasis with chemotherapy in patients and data analysis",
    "dna sequencing mutation",
]


def _texts(n: int, seed: int = 0) -> list[str]:
    """Texts of very different lengths, so length sorting really reorders them."""
    rng = random.Random(seed)
    words = [w for ws in TOPICS.values() for w in ws]
    return [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def de(tiny_bert) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(model=str(tiny_bert), doc_max_length=64, query_max_length=16).eval()


def test_config_overrides_and_validation(tiny_bert):
    cfg = DualEncoderConfig(model=str(tiny_bert), doc_max_length=64)
    model = DualEncoder(cfg, temperature=0.5)
    assert model.config.temperature == 0.5 and model.config.doc_max_length == 64
    assert cfg.temperature == 1.0  # the caller's config is not mutated
    with pytest.raises(ConfigError, match="unknown key"):
        DualEncoder(cfg, temprature=0.5)
    with pytest.raises(ConfigError, match="temperature"):
        DualEncoder(cfg, temperature=0)
    with pytest.raises(ConfigError, match="pooling"):
        DualEncoder(cfg, pooling="max")


def test_shapes_and_unit_norm(de):
    q = de.embed_queries(QUERIES)
    d = de.embed_docs(DOCS)
    assert q.shape == (4, 32) and d.shape == (5, 32)
    assert q.requires_grad and q.device == de.device
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(4))
    enc = de.encode_docs(DOCS)
    assert enc.dtype == np.float32 and enc.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(enc, axis=1), 1.0, atol=1e-5)
    assert de.encode_docs([]).shape == (0, 32)


def test_unnormalized_embeddings_are_not_unit(tiny_bert):
    model = DualEncoder(model=str(tiny_bert), normalize=False, doc_max_length=64)
    norms = np.linalg.norm(model.encode_docs(DOCS), axis=1)
    assert np.abs(norms - 1).max() > 1e-2


def test_embed_rejects_single_string(de):
    with pytest.raises(TypeError, match="single string"):
        de.encode_docs("just one text")


def test_encode_matches_embed(de):
    texts = _texts(20)
    with torch.no_grad():
        trained = de.embed_docs(texts).numpy()
        trained_q = de.embed_queries(texts).numpy()
    np.testing.assert_allclose(de.encode_docs(texts, batch_size=3), trained, atol=1e-5)
    np.testing.assert_allclose(de.encode_queries(texts, batch_size=7), trained_q, atol=1e-5)


def test_encode_restores_mode(de):
    de.train()
    de.encode_docs(DOCS)
    assert de.training and de.doc_model.training
    de.eval()


def test_encode_order_preserved(de):
    texts = _texts(37, seed=1)
    emb = de.encode_docs(texts, batch_size=4)
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = de.encode_docs([texts[i] for i in perm], batch_size=5)
    np.testing.assert_allclose(shuffled, emb[perm], atol=1e-5)
    one_by_one = np.stack([de.encode_docs([t])[0] for t in texts[:6]])
    np.testing.assert_allclose(one_by_one, emb[:6], atol=1e-5)


def test_query_and_doc_lengths_differ(de):
    long_text = " ".join(["protein"] * 40)
    assert not np.allclose(de.encode_queries([long_text]), de.encode_docs([long_text]), atol=1e-4)
    short = "protein folding"
    np.testing.assert_allclose(de.encode_queries([short]), de.encode_docs([short]), atol=1e-6)


def test_cls_and_mean_pooling_differ(tiny_bert):
    mean = DualEncoder(model=str(tiny_bert), pooling="mean", doc_max_length=64).encode_docs(DOCS)
    cls = DualEncoder(model=str(tiny_bert), pooling="cls", doc_max_length=64).encode_docs(DOCS)
    assert np.abs(mean - cls).max() > 1e-3


def test_temperature_scales_scores(tiny_bert):
    a = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    b = DualEncoder(model=str(tiny_bert), doc_max_length=64, temperature=0.05)
    sa, sb = a.score(QUERIES[:2], DOCS[:2]), b.score(QUERIES[:2], DOCS[:2])
    np.testing.assert_allclose(sb, sa / 0.05, rtol=1e-5)
    q, d = a.embed_queries(QUERIES), a.embed_docs(DOCS)
    torch.testing.assert_close(b.similarity(q, d), a.similarity(q, d) / 0.05)


def test_similarity_shapes(de):
    q = torch.randn(3, 32)
    cands = torch.randn(3, 4, 32)
    corpus = torch.randn(10, 32)
    s = de.similarity(q, cands)
    assert s.shape == (3, 4)
    torch.testing.assert_close(s[1, 2], q[1] @ cands[1, 2])
    full = de.similarity(q, corpus)
    assert full.shape == (3, 10)
    torch.testing.assert_close(full[2, 7], q[2] @ corpus[7])
    with pytest.raises(ValueError, match=r"\(B, C, 32\)"):
        de.similarity(q, torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match="B=3"):
        de.similarity(q, torch.randn(2, 4, 32))


def test_cosine_similarity_ignores_norm(tiny_bert):
    model = DualEncoder(model=str(tiny_bert), normalize=False, similarity="cosine", doc_max_length=64)
    q = torch.tensor([[3.0, 4.0]])
    d = torch.tensor([[[6.0, 8.0], [0.0, 2.0]]])
    torch.testing.assert_close(model.similarity(q, d), torch.tensor([[1.0, 0.8]]))
    qe, de_ = model.encode_queries(QUERIES), model.encode_docs(DOCS)
    s = model.score_embeddings(qe, de_)
    assert s.shape == (4, 5) and np.abs(s).max() <= 1 + 1e-5


def test_score_matches_score_embeddings(de):
    queries = [QUERIES[0], QUERIES[0], QUERIES[1]]
    docs = [DOCS[0], DOCS[1], DOCS[0]]
    full = de.score_embeddings(de.encode_queries(QUERIES), de.encode_docs(DOCS))
    np.testing.assert_allclose(de.score(queries, docs), [full[0, 0], full[0, 1], full[1, 0]], atol=1e-5)
    with torch.no_grad():
        expected = de.similarity(de.embed_queries(QUERIES), de.embed_docs(DOCS)).numpy()
    np.testing.assert_allclose(full, expected, atol=1e-5)


def test_shared_vs_separate_towers(tiny_bert):
    shared = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    assert shared.query_model is shared.doc_model
    two = DualEncoder(model=str(tiny_bert), shared=False, doc_max_length=64)
    assert two.query_model is not two.doc_model
    n_shared = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in two.parameters()) == 2 * n_shared
    # Same start; a step on the doc tower leaves the query tower alone.
    np.testing.assert_allclose(two.encode_queries(QUERIES), two.encode_docs(QUERIES), atol=1e-6)
    before = two.encode_queries(QUERIES)
    with torch.no_grad():
        for p in two.doc_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    np.testing.assert_allclose(two.encode_queries(QUERIES), before, atol=1e-6)
    assert np.abs(two.encode_docs(QUERIES) - before).max() > 1e-3


def test_gradients_flow(tiny_bert):
    model = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    scores = model.similarity(model.embed_queries(QUERIES[:2]), model.embed_docs(DOCS[:4]).view(2, 2, -1))
    scores[:, 0].sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_deterministic_given_seed(tiny_bert):
    def run():
        torch.manual_seed(0)
        model = DualEncoder(model=str(tiny_bert), doc_max_length=64).train()  # dropout on
        return model.embed_docs(DOCS).detach()

    torch.testing.assert_close(run(), run())


def test_save_load_round_trip(de, tmp_path):
    path = de.save_pretrained(tmp_path / "student")
    for name in ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
                 "1_Pooling/config.json", "2_Normalize", "config_sentence_transformers.json", "dualist.json"):
        assert (path / name).exists(), name
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    meta = json.loads((path / "dualist.json").read_text())
    assert meta["config"]["doc_max_length"] == 64 and meta["model_class"] == "DualEncoder"
    assert json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    loaded = DualEncoder.from_pretrained(path)
    assert loaded.config.query_max_length == 16 and loaded.config.model == str(path)
    texts = _texts(12)
    np.testing.assert_array_equal(loaded.encode_docs(texts), de.encode_docs(texts))
    np.testing.assert_array_equal(loaded.encode_queries(texts), de.encode_queries(texts))
    assert DualEncoder.from_pretrained(path, temperature=0.1).config.temperature == 0.1


def test_save_load_separate_towers(tiny_bert, tmp_path):
    model = DualEncoder(model=str(tiny_bert), shared=False, doc_max_length=64)
    with torch.no_grad():
        for p in model.doc_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = model.save_pretrained(tmp_path / "two")
    assert (path / "query" / "modules.json").exists() and (path / "doc" / "model.safetensors").exists()
    loaded = DualEncoder.from_pretrained(path)
    assert loaded.query_model is not loaded.doc_model
    np.testing.assert_array_equal(loaded.encode_queries(QUERIES), model.encode_queries(QUERIES))
    np.testing.assert_array_equal(loaded.encode_docs(DOCS), model.encode_docs(DOCS))
    with pytest.raises(ConfigError, match="two towers"):
        DualEncoder.from_pretrained(path, shared=True)


def test_num_layers_student(tiny_bert, tmp_path):
    model = DualEncoder(model=str(tiny_bert), num_layers=1, doc_max_length=64)
    assert model.query_model.config.num_hidden_layers == 1
    loaded = DualEncoder.from_pretrained(model.save_pretrained(tmp_path / "s"))
    assert loaded.query_model.config.num_hidden_layers == 1
    np.testing.assert_array_equal(loaded.encode_docs(DOCS), model.encode_docs(DOCS))


@pytest.mark.parametrize("pooling,normalize,similarity", [("mean", True, "dot"), ("cls", False, "cosine")])
def test_sentence_transformers_loads_saved_student(tiny_bert, tmp_path, pooling, normalize, similarity):
    st = pytest.importorskip("sentence_transformers")
    model = DualEncoder(model=str(tiny_bert), pooling=pooling, normalize=normalize, similarity=similarity,
                        doc_max_length=64)
    path = model.save_pretrained(tmp_path / "student")
    st_model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
    assert st_model.max_seq_length == 64
    assert st_model.similarity_fn_name == similarity
    texts = _texts(10) + DOCS
    ours = model.encode_docs(texts)
    theirs = st_model.encode(texts, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() <= 1e-5
    # And back: a plain sentence-transformers folder loads with its pooling/normalize/similarity.
    st_model.save(str(tmp_path / "st"))
    back = DualEncoder.from_pretrained(tmp_path / "st")
    assert (back.config.pooling, back.config.normalize, back.config.similarity) == (pooling, normalize, similarity)
    assert np.abs(back.encode_docs(texts) - theirs).max() <= 1e-5


def test_quantized_is_close_and_inference_only(tiny_bert):
    model = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    q8 = model.quantized()
    texts = _texts(8)
    fp32, int8 = model.encode_docs(texts), q8.encode_docs(texts)
    cosine = (fp32 * int8).sum(1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.95
    assert not isinstance(q8.query_model.encoder.layer[0].attention.self.query, torch.nn.Linear)  # int8 now
    assert isinstance(model.query_model.encoder.layer[0].attention.self.query, torch.nn.Linear)  # original untouched
    with pytest.raises(DualistError, match="inference only"):
        q8.embed_docs(texts)
    with pytest.raises(DualistError, match="cannot be saved"):
        q8.save_pretrained("unused")


def test_from_pretrained_rejects_model_override(de, tmp_path):
    path = de.save_pretrained(tmp_path / "s")
    with pytest.raises(ConfigError, match="model"):
        DualEncoder.from_pretrained(path, model="minilm-l6")


def test_packaged_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from dualist.models import resolve_model

    texts = ["A man is eating food.", "Protein folding determines enzyme function in cells."]
    ours = DualEncoder(model="minilm-l6").encode_docs(texts)
    theirs = st.SentenceTransformer(resolve_model("minilm-l6"), device="cpu").encode(texts)
    assert ours.shape == (2, 384)
    assert np.abs(ours - theirs).max() <= 1e-5

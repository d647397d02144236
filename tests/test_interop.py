"""Models dualist saves, read by sentence-transformers: the same numbers, or a refusal that says why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualist.models import CrossEncoder, DualEncoder
from dualist.testing import TOPICS

st = pytest.importorskip("sentence_transformers")

LONG_QUERY = " ".join(TOPICS["protein"] * 3 + TOPICS["brain"] * 3)  # ~36 tokens, over a query length of 8
DOCS = [" ".join(TOPICS["protein"] * 2), "ocean warming carbon emission study results", " ".join(TOPICS["sleep"])]


def test_sentence_transformer_embeds_long_queries_like_dualist(tiny_bert, tmp_path):
    """encode_query / encode_document truncate at the student's own query / document lengths."""
    de = DualEncoder(model=str(tiny_bert), query_max_length=8, doc_max_length=24)
    de.save_pretrained(tmp_path / "de")
    model = st.SentenceTransformer(str(tmp_path / "de"), device="cpu")
    queries = [LONG_QUERY, "protein folding"]
    assert len(de.tokenizer(LONG_QUERY)["input_ids"]) > 8
    np.testing.assert_allclose(model.encode_query(queries), de.encode_queries(queries), atol=1e-5)
    np.testing.assert_allclose(model.encode_document(DOCS), de.encode_docs(DOCS), atol=1e-5)
    # a folder without dualist.json (a plain sentence-transformers model) keeps both lengths too
    (tmp_path / "de" / "dualist.json").unlink()
    plain = DualEncoder.from_pretrained(tmp_path / "de")
    np.testing.assert_allclose(plain.encode_queries(queries), de.encode_queries(queries), atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cosine", "dual"])
def test_sentence_transformers_refuses_a_teacher_it_would_score_differently(tiny_bert, tmp_path, pooling):
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=64, pooling=pooling)
    ce.save_pretrained(tmp_path / "ce")
    with pytest.raises((ImportError, ValueError), match="dualist"):
        st.CrossEncoder(str(tmp_path / "ce"), device="cpu")
    again = CrossEncoder.from_pretrained(tmp_path / "ce")  # dualist itself still loads it, unchanged
    q = ["protein folding"] * len(DOCS)
    np.testing.assert_allclose(again.score(q, DOCS), ce.score(q, DOCS), atol=1e-6)


def test_cls_teacher_still_loads_in_sentence_transformers(tiny_bert, tmp_path):
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=64, pooling="cls")
    ce.save_pretrained(tmp_path / "ce")
    q = ["protein folding"] * len(DOCS)
    scores = st.CrossEncoder(str(tmp_path / "ce"), device="cpu").predict(list(zip(q, DOCS)))
    np.testing.assert_allclose(scores, ce.score(q, DOCS), atol=1e-5)

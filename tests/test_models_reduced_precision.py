"""quantized(dtype="int8" | "bf16") copies of both models: close to fp32, inference only, originals untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dualist.errors import ConfigError, DualistError
from dualist.models import CrossEncoder, DualEncoder
from dualist.models._common import Float32Head
from dualist.testing import TOPICS


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for ws in TOPICS.values() for w in ws]
    return [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_dual_encoder_reduced_precision_is_close(tiny_bert, dtype):
    model = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    low = model.quantized(dtype)
    texts = _texts(9)
    fp32, approx = model.encode_docs(texts), low.encode_docs(texts, batch_size=4)
    assert approx.dtype == np.float32 and approx.shape == fp32.shape
    cosine = (fp32 * approx).sum(1) / np.linalg.norm(approx, axis=1)
    assert cosine.min() > (0.95 if dtype == "int8" else 0.999)
    assert not np.array_equal(fp32, approx)  # it did run in reduced precision
    assert low.inference_dtype == dtype and low.quantized_int8 == (dtype == "int8")
    assert model.inference_dtype is None and model.query_model.dtype == torch.float32  # original untouched
    with pytest.raises(DualistError, match="inference only"):
        low.embed_docs(texts)
    with pytest.raises(DualistError, match="cannot be saved"):
        low.save_pretrained("unused")


def test_dual_encoder_bf16_weights_and_unshared_towers(tiny_bert):
    model = DualEncoder(model=str(tiny_bert), shared=False)
    low = model.quantized("bf16")
    assert low.query_model.dtype == torch.bfloat16 and low.doc_model.dtype == torch.bfloat16
    assert low.query_model is not low.doc_model
    q = low.encode_queries(_texts(3, seed=1))
    assert q.dtype == np.float32 and np.isfinite(q).all()


def test_unknown_precision_is_rejected(tiny_bert):
    with pytest.raises(ConfigError, match="int8, bf16"):
        DualEncoder(model=str(tiny_bert)).quantized("fp8")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_cross_encoder_reduced_precision_is_close(tiny_bert, dtype, pooling):
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=48, pooling=pooling).eval()
    low = ce.quantized(dtype)
    q, d = _texts(12, seed=2), _texts(12, seed=3)
    fp32, approx = ce.score(q, d), low.score(q, d, batch_size=5)
    assert approx.dtype == np.float32 and approx.shape == (12,)
    spread = float(fp32.max() - fp32.min())
    assert np.abs(fp32 - approx).max() < 0.1 * spread + 1e-3
    assert len(np.unique(approx)) == len(np.unique(fp32))  # a float32 head: no bf16 ties
    if dtype == "bf16":
        assert isinstance(low.model.classifier, Float32Head)
        assert low.model.classifier.weight.dtype == torch.float32
    assert isinstance(ce.model.classifier, torch.nn.Linear)  # original untouched
    assert ce.model.classifier.weight.dtype == torch.float32
    with pytest.raises(DualistError, match="inference only"):
        low(q, d)
    with pytest.raises(DualistError, match="cannot be saved"):
        low.save_pretrained("unused")

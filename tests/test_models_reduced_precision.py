"""quantized(dtype=...) copies of both models (torch int8 / bf16, ONNX Runtime fp32 / int8): close to fp32,
inference only, originals untouched."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from dualist.errors import ConfigError, DualistError
from dualist.models import CrossEncoder, DualEncoder
from dualist.models.precision import Float32Head
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


@pytest.mark.parametrize("pooling", ["mean", "cls", "cosine", "dual"])
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


# --------------------------------------------------------------------------- ONNX Runtime copies

@pytest.fixture
def needs_onnx():
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'dualist[onnx]')")


@pytest.mark.parametrize("shared", [True, False])
def test_dual_encoder_onnx_fp32_gives_the_torch_embeddings(tiny_bert, needs_onnx, shared):
    model = DualEncoder(model=str(tiny_bert), doc_max_length=64, shared=shared)
    fast = model.quantized("onnx-fp32")
    docs, queries = _texts(9), _texts(5, seed=4)
    # batch 4 over texts of 1 to 40 words: several padded widths through one exported graph
    np.testing.assert_allclose(fast.encode_docs(docs, batch_size=4), model.encode_docs(docs), atol=1e-5)
    np.testing.assert_allclose(fast.encode_queries(queries), model.encode_queries(queries), atol=1e-5)
    assert (fast.query_model is fast.doc_model) == shared
    assert fast.inference_dtype == "onnx-fp32" and model.inference_dtype is None
    assert fast.query_model.fused.get("Attention") == 2  # the tiny BERT's two layers, fused
    with pytest.raises(DualistError, match="inference only"):
        fast.embed_queries(queries)
    with pytest.raises(DualistError, match="cannot be saved"):
        fast.save_pretrained("unused")
    assert model.embed_docs(docs[:2]).requires_grad  # the original still trains


def test_dual_encoder_onnx_int8_is_close(tiny_bert, needs_onnx):
    model = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    texts = _texts(9)
    fp32, approx = model.encode_docs(texts), model.quantized("onnx-int8").encode_docs(texts, batch_size=4)
    cosine = (fp32 * approx).sum(1) / np.linalg.norm(approx, axis=1)
    assert cosine.min() > 0.95
    assert not np.allclose(fp32, approx, atol=1e-5)  # it did run with int8 weights


@pytest.mark.parametrize("pooling", ["mean", "cls", "cosine", "dual"])
def test_cross_encoder_onnx_scores(tiny_bert, needs_onnx, pooling):
    torch.manual_seed(0)
    ce = CrossEncoder(model=str(tiny_bert), max_length=48, pooling=pooling).eval()
    q, d = _texts(12, seed=2), _texts(12, seed=3)
    fp32 = ce.score(q, d)
    np.testing.assert_allclose(ce.quantized("onnx-fp32").score(q, d, batch_size=5), fp32, atol=1e-5)
    approx = ce.quantized("onnx-int8").score(q, d, batch_size=5)
    spread = float(fp32.max() - fp32.min())
    # A random tiny BERT's [CLS] state barely depends on the input (a score spread of ~1e-4 with
    # pooling="cls"), so the int8 error of that state reaches every score as about the same shift.
    # A shift shared by all scores changes no ranking and no margin: compare what is left of the error.
    error = (fp32 - approx) - (fp32 - approx).mean()
    assert np.abs(error).max() < 0.1 * spread + 1e-3
    assert np.abs(fp32 - approx).max() > 0  # it did run with int8 weights
    assert isinstance(ce.model.classifier, torch.nn.Linear)  # original untouched
    with pytest.raises(DualistError, match="inference only"):
        ce.quantized("onnx-fp32")(q, d)


def test_onnx_copy_without_onnxruntime_says_what_to_install(tiny_bert, monkeypatch):
    import dualist.models.onnx_runtime as ort_module

    monkeypatch.setattr(ort_module, "onnx_available", lambda: False)
    with pytest.raises(DualistError, match=r"pip install 'dualist\[onnx\]'"):
        DualEncoder(model=str(tiny_bert)).quantized("onnx-fp32")


def test_reduced_precision_refuses_onnx(tiny_bert):
    from dualist.models.precision import reduced_precision

    with pytest.raises(ConfigError, match="quantized"):
        reduced_precision(DualEncoder(model=str(tiny_bert)).query_model, "onnx-int8")


def test_onnx_body_threads_default_to_torch_and_can_be_set(tiny_bert, needs_onnx):
    from dualist.models.onnx_runtime import OnnxBody

    body = DualEncoder(model=str(tiny_bert)).query_model.eval()
    assert OnnxBody(body).session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    one = OnnxBody(body, threads=1)
    assert one.session.get_session_options().intra_op_num_threads == 1
    ids = torch.tensor([[2, 7, 9, 3]])
    out = one(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    np.testing.assert_allclose(out.numpy(), body(input_ids=ids, attention_mask=torch.ones_like(ids))
                               .last_hidden_state.detach().numpy(), atol=1e-5)


def test_int8_splits_off_outlier_channels(monkeypatch):
    """A few input channels far larger than the rest are multiplied in float32 (LLM.int8-style), so
    they no longer set the quantization step of every other channel."""
    import dualist.models.precision as common

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64))
    x = torch.randn(256, 32)
    x[:, 5] *= 40.0  # one outlier channel, as MiniLM's channel 99
    with torch.no_grad():
        exact = model(x)
        low = common.reduced_precision(copy.deepcopy(model), "int8")
        assert hasattr(low[0], "float_weight")  # the int8 layer keeps float columns for outliers
        split_error = (low(x) - exact).abs().max()
        monkeypatch.setattr(common, "OUTLIER_RATIO", float("inf"))
        plain_error = (low(x) - exact).abs().max()
    assert split_error < plain_error / 3
    assert split_error > 0  # still int8


def test_int8_keeps_down_projections_out_of_int8():
    from dualist.models.precision import Bf16Linear, native_cpu_bf16, reduced_precision

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                                torch.nn.Linear(8, 1))
    low = reduced_precision(copy.deepcopy(model), "int8")
    assert hasattr(low[0], "float_weight")  # up-projection: int8
    assert isinstance(low[2], Bf16Linear if native_cpu_bf16() else torch.nn.Linear)  # down-projection
    assert isinstance(low[3], torch.nn.Linear) and low[3].weight.dtype == torch.float32  # 1-output head
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert (low(x) - model(x)).abs().max() < 0.05


# --------------------------------------------------------------------------- --precision names

@pytest.mark.parametrize("installed, expected", [(True, "onnx-int8"), (False, "int8")])
def test_precision_int8_is_the_fastest_int8_copy_installed(monkeypatch, installed, expected):
    import dualist.models.onnx_runtime as onnx_runtime
    from dualist.models.precision import describe_choice, resolve_precision

    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: installed)
    assert resolve_precision("int8") == expected
    assert ("onnx-int8" in describe_choice("int8")) == installed
    assert ("pip install 'dualist[onnx]'" in describe_choice("int8")) == (not installed)
    # the other names are the copy they name, whatever is installed
    for name, copy_name in {"torch-int8": "int8", "fp32": "fp32", "bf16": "bf16", "onnx-fp32": "onnx-fp32",
                            "onnx-int8": "onnx-int8"}.items():
        assert resolve_precision(name) == copy_name
        assert describe_choice(name) == ""
    with pytest.raises(ConfigError, match="torch-int8"):
        resolve_precision("int4")


def test_load_model_says_which_int8_copy_it_loaded(tiny_bert, tmp_path, needs_onnx, caplog):
    from dualist.stages import load_model

    DualEncoder(model=str(tiny_bert), doc_max_length=32).save_pretrained(tmp_path / "de")
    with caplog.at_level("INFO", logger="dualist.stages.inputs"):
        fast = load_model(tmp_path / "de", precision="int8")
    assert fast.inference_dtype == "onnx-int8"
    assert "--precision int8: ONNX Runtime's int8 copy" in caplog.text
    assert "onnx-int8, ONNX Runtime" in caplog.text  # the path line names the copy that runs
    torch_copy = load_model(tmp_path / "de", precision="torch-int8")
    assert torch_copy.inference_dtype == "int8" and torch_copy.quantized_int8

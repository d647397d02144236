"""Lean activations: the plain model's math and gradients, less saved memory, a working switch."""

from __future__ import annotations

import pytest
import torch

from dualist.errors import ConfigError
from dualist.models import DualEncoder
from dualist.training import TrainConfig, train_student
from dualist.training.lean_activations import ActivationLinear, LeanAttention, enable_lean_activations


def _reference(q, k, v, mask, scale, p):
    """The unfused path, autograd all the way, drawing its dropout mask as LeanAttention does."""
    probs = torch.softmax((q @ k.transpose(-1, -2)).float() * scale + mask, dim=-1)
    keep = torch.rand_like(probs) >= p
    return (probs * keep / (1 - p)).to(v.dtype) @ v


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_lean_attention_matches_the_unfused_path_and_its_gradients(p):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, requires_grad=True) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 7)
    mask[0, ..., 5:] = torch.finfo(torch.float32).min  # two padded keys in the first sequence
    grad = torch.randn(2, 3, 7, 4)
    torch.manual_seed(1)
    out = LeanAttention.apply(q, k, v, mask, 0.5, p)
    out.backward(grad)
    lean_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.manual_seed(1)  # the same dropout mask
    ref = _reference(q, k, v, mask, 0.5, p)
    ref.backward(grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, t in zip(lean_grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-6)
    if p:
        assert (out - (torch.softmax(q @ k.transpose(-1, -2) * 0.5 + mask, -1) @ v)).abs().max() > 1e-3


def test_lean_attention_under_bf16_autocast_returns_bf16_and_close_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
        out = LeanAttention.apply(qb, kb, vb, None, 8 ** -0.5, 0.0)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    lean = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    for got, t in zip(lean, (q, k, v)):
        assert (got - t.grad).abs().max() < 0.05 * t.grad.abs().max() + 1e-2


def _saved_bytes(model: DualEncoder, texts: list[str]) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.embed_docs(texts)
    return sum(seen.values())


def test_enabled_model_saves_less_and_evaluates_the_same(tiny_bert):
    texts = [" ".join(["protein folding enzyme"] * 10), "ocean warming", "sleep and memory consolidation"]
    model = DualEncoder(model=str(tiny_bert), doc_max_length=48)
    attention = [m for m in model.modules() if type(m).__name__.endswith("SelfAttention")]
    assert attention
    for m in attention:
        m.dropout.p = 0.1  # as MiniLM's attention_probs_dropout_prob
    before = model.encode_docs(texts)
    model.train()
    default_bytes = _saved_bytes(model, texts)
    assert enable_lean_activations(model) == {"attention": 1, "feed_forward": 2}
    lean_bytes = _saved_bytes(model, texts)
    assert lean_bytes < 0.9 * default_bytes
    model.eval()
    torch.testing.assert_close(torch.from_numpy(model.encode_docs(texts)), torch.from_numpy(before))


def test_train_config_lean_activations_trains(tiny_beir, tiny_bert, tmp_path):
    from dualist.candidates import bm25_run
    from dualist.data import load_beir
    from dualist.models import DualEncoderConfig

    ds = load_beir(tiny_beir)
    run = bm25_run(ds, "train", k=10)
    cfg = TrainConfig(max_steps=3, batch_size=4, num_negatives=3, neg_rank_max=10, lean_activations=True,
                      log_every=1)
    path = train_student(ds, "train", run, DualEncoderConfig(model=str(tiny_bert), doc_max_length=48), cfg,
                         tmp_path / "student", loss="onehot")
    assert DualEncoder.from_pretrained(path).encode_queries(["protein"]).shape[0] == 1
    assert (tmp_path / "student/metrics.jsonl").read_text().count("\n") == 3


def test_lean_activations_need_a_backbone():
    with pytest.raises(ConfigError, match="lean_activations"):
        enable_lean_activations(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("bf16", [False, True])
def test_without_dropout_the_lean_model_has_the_plain_models_loss_and_gradients(tiny_bert, bf16):
    """Attention dropout 0 takes the fused path; the GELU moved into ActivationLinear must change nothing."""
    texts = [" ".join(["protein folding enzyme"] * 10), "ocean warming", "sleep and memory consolidation"]

    def loss_and_grads(lean: bool):
        torch.manual_seed(0)
        model = DualEncoder(model=str(tiny_bert), doc_max_length=48)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if lean:
            enable_lean_activations(model)
            assert any(isinstance(m, ActivationLinear) for m in model.modules())
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.embed_docs(texts).float().pow(3).sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_grads(False)
    lean_loss, lean = loss_and_grads(True)
    assert plain.keys() == lean.keys() and plain  # the same parameters, under the same names
    tol = {"rtol": 2e-2, "atol": 2e-3} if bf16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(lean_loss, plain_loss, **tol)
    for name in plain:
        torch.testing.assert_close(lean[name], plain[name], **tol, msg=name)


def test_lean_attention_in_batch_slices_is_the_same_function(monkeypatch):
    """Slices of one sequence each: outputs and gradients equal the unfused path's (no dropout)."""
    import dualist.training.lean_activations as lean

    monkeypatch.setattr(lean, "_CHUNK_ELEMENTS", 1)  # one batch row per slice
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 4, requires_grad=True) for _ in range(3))
    mask = torch.zeros(3, 1, 1, 5)
    mask[1, ..., 3:] = torch.finfo(torch.float32).min
    grad = torch.randn(3, 2, 5, 4)
    out = LeanAttention.apply(q, k, v, mask, 0.5, 1e-12)  # dropout on (the lean path), dropping nothing
    out.backward(grad)
    lean_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = torch.softmax(q @ k.transpose(-1, -2) * 0.5 + mask, dim=-1) @ v
    ref.backward(grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, t in zip(lean_grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-6)

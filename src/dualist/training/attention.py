"""Lean attention for training: attention dropout without keeping the ``(B, H, L, L)`` float tensors.

PyTorch's fused CPU attention kernel (flash) has no dropout, so a BERT-like model training with
attention dropout (MiniLM: 0.1) falls back to the unfused path, which keeps the softmax output, the
dropped-out probabilities and a copy for the batched matmul: three float tensors of
``batch x heads x length x length`` per layer, about a third of all saved activations for MiniLM-L6
at length 128. :class:`LeanAttention` keeps only the dropout mask (one byte per element) and the
layer's query, key and value, and recomputes scores and softmax in the backward pass (one extra
``Q K^T`` and softmax per layer, a few percent of the step).

The math is that of the unfused path: ``dropout(softmax(Q K^T * scale + mask)) V``, with the same
inverted-dropout scaling; only the random stream of the dropout masks differs, so losses agree with
the default attention exactly without dropout and within noise with it. In evaluation mode, or with
dropout 0, :func:`lean_attention_forward` is PyTorch's ``scaled_dot_product_attention``.

:func:`enable_lean_attention` switches every Hugging Face backbone inside a model to it
(``TrainConfig.lean_attention``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from dualist.errors import ConfigError

__all__ = ["LeanAttention", "lean_attention_forward", "enable_lean_attention", "LEAN_ATTENTION"]

LEAN_ATTENTION = "dualist_lean"


class LeanAttention(torch.autograd.Function):
    """``dropout(softmax(q @ k^T * scale + mask), p) @ v`` keeping only q, k, v and a boolean mask.

    ``q, k, v``: ``(B, H, L, d)`` (any float dtype; scores and softmax run in float32);
    ``mask``: additive float mask broadcastable to ``(B, H, L, L)``, or None.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float, p: float) -> torch.Tensor:
        probs = _probs(q, k, mask, scale)
        keep = torch.rand_like(probs) >= p
        dropped = probs.mul_(keep).div_(1.0 - p)
        out = torch.matmul(dropped.to(v.dtype), v)
        ctx.save_for_backward(q, k, v, keep, mask)
        ctx.scale, ctx.p = scale, p
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, keep, mask = ctx.saved_tensors
        scale, p = ctx.scale, ctx.p
        probs = _probs(q, k, mask, scale)
        dropped = (probs * keep).div_(1.0 - p)
        grad_v = torch.matmul(dropped.to(grad_out.dtype).transpose(-1, -2), grad_out)
        del dropped
        grad_probs = torch.matmul(grad_out, v.transpose(-1, -2)).float().mul_(keep).div_(1.0 - p)
        # softmax backward: dS = P * (dP - sum(dP * P))
        grad_scores = probs.mul_(grad_probs.sub_((grad_probs * probs).sum(-1, keepdim=True)))
        del grad_probs
        grad_scores = grad_scores.to(q.dtype)
        grad_q = torch.matmul(grad_scores, k).mul_(scale)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q).mul_(scale)
        return grad_q, grad_k, grad_v.to(v.dtype), None, None, None


def _probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(scale)
    if mask is not None:
        scores.add_(mask.float())
    return torch.softmax(scores, dim=-1)


def lean_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None,
                           dropout: float = 0.0, **_kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function (``AttentionInterface``): ``(B, L, H, d)`` output, no weights."""
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~attention_mask, torch.finfo(query.dtype).min)
    if module.training and dropout > 0 and torch.is_grad_enabled():
        out = LeanAttention.apply(query, key, value, attention_mask, scale, dropout)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scale)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(LEAN_ATTENTION, lean_attention_forward)
    # masks as the unfused path takes them: additive float, 0 where attended
    ALL_MASK_ATTENTION_FUNCTIONS.register(LEAN_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _backbones(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from transformers import PreTrainedModel

    chosen: list[torch.nn.Module] = []
    for m in model.modules():  # outermost first; a model nested in a chosen one is switched with it
        if isinstance(m, PreTrainedModel) and not any(m is sub for b in chosen for sub in b.modules()):
            chosen.append(m)
            yield m


def enable_lean_attention(model: torch.nn.Module) -> dict[int, str]:
    """Switch every Hugging Face backbone in ``model`` to lean attention; returns ``{id: previous}``.

    The choice is not saved with the model (transformers keeps it out of ``config.json``), and in
    evaluation mode the lean function is plain ``scaled_dot_product_attention``.

    Raises :class:`~dualist.errors.ConfigError` when ``model`` holds no backbone whose attention
    can be switched (transformers' ``set_attn_implementation``).
    """
    _register()
    previous: dict[int, str] = {}
    for backbone in _backbones(model):
        setter = getattr(backbone, "set_attn_implementation", None)
        if setter is None:
            continue
        before = backbone.config._attn_implementation
        with contextlib.suppress(ValueError, NotImplementedError):
            setter(LEAN_ATTENTION)
            previous[id(backbone)] = before
    if not previous:
        raise ConfigError(f"train.lean_attention: {type(model).__name__} holds no Hugging Face backbone whose "
                          "attention can be switched; set it to false")
    return previous

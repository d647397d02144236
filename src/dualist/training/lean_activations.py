"""Lean activations for training: keep less for the backward pass, recompute what is cheap.

Two places hold most of a BERT-like layer's saved activations that are cheap to recompute:

- **Attention with dropout.** PyTorch's fused CPU attention kernel (flash) has no dropout, so a
  model training with attention dropout (MiniLM: 0.1) falls back to the unfused path, which keeps
  the softmax output, the dropped-out probabilities and a copy for the batched matmul: three float
  tensors of ``batch x heads x length x length`` per layer, about a third of all saved activations
  for MiniLM-L6 at length 128. :class:`LeanAttention` keeps only the dropout mask (one byte per
  element) and the layer's query, key and value, and recomputes scores and softmax in the backward
  pass (one extra ``Q K^T`` and softmax per layer).
- **The feed-forward activation.** ``output.dense(gelu(intermediate.dense(x)))`` keeps both the
  GELU's input (for its derivative) and its output (for the weight gradient of ``output.dense``).
  :class:`ActivationLinear` keeps the input only and recomputes the GELU in the backward pass.

The math is unchanged: ``dropout(softmax(Q K^T * scale + mask)) V`` with the same inverted-dropout
scaling, and the same activation and linear layer. Only the random stream of the attention dropout
masks differs, so losses agree with the default path exactly without dropout and within noise with
it. In evaluation mode, or with dropout 0, :func:`lean_attention_forward` is PyTorch's
``scaled_dot_product_attention``.

:func:`enable_lean_activations` switches every Hugging Face backbone inside a model to both
(``TrainConfig.lean_activations``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from dualist.errors import ConfigError
from dualist.models.backbone import hf_backbones

__all__ = ["LeanAttention", "ActivationLinear", "lean_attention_forward", "enable_lean_activations",
           "LEAN_ATTENTION"]

LEAN_ATTENTION = "dualist_lean"


# Score elements (batch x heads x length x length) computed at once: the float32 temporaries of one
# layer's attention stay near 16 MB each instead of growing with the batch, in both passes.
_CHUNK_ELEMENTS = 1 << 22


class LeanAttention(torch.autograd.Function):
    """``dropout(softmax(q @ k^T * scale + mask), p) @ v`` keeping only q, k, v and a boolean mask.

    ``q, k, v``: ``(B, H, L, d)`` (any float dtype; scores and softmax run in float32);
    ``mask``: additive float mask broadcastable to ``(B, H, L, L)``, or None. Both passes run over
    slices of the batch, so their float32 temporaries stay small.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float, p: float) -> torch.Tensor:
        keep = torch.empty((*q.shape[:-1], k.shape[-2]), dtype=torch.bool, device=q.device)
        outs = []
        for rows in _batch_slices(q, k):
            probs = _probs(q[rows], k[rows], _rows(mask, rows, q.shape[0]), scale)
            kept = torch.rand_like(probs) >= p
            keep[rows] = kept
            outs.append(torch.matmul(probs.mul_(kept).div_(1.0 - p).to(v.dtype), v[rows]))
        ctx.save_for_backward(q, k, v, keep, mask)
        ctx.scale, ctx.p = scale, p
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, keep, mask = ctx.saved_tensors
        scale, p = ctx.scale, ctx.p
        grads: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for rows in _batch_slices(q, k):
            qs, ks, vs, gs, kept = q[rows], k[rows], v[rows], grad_out[rows], keep[rows]
            probs = _probs(qs, ks, _rows(mask, rows, q.shape[0]), scale)
            dropped = (probs * kept).div_(1.0 - p)
            grad_v = torch.matmul(dropped.to(gs.dtype).transpose(-1, -2), gs)
            del dropped
            grad_probs = torch.matmul(gs, vs.transpose(-1, -2)).float().mul_(kept).div_(1.0 - p)
            # softmax backward: dS = P * (dP - sum(dP * P))
            grad_scores = probs.mul_(grad_probs.sub_((grad_probs * probs).sum(-1, keepdim=True)))
            del grad_probs
            grad_scores = grad_scores.to(qs.dtype)
            grads.append((torch.matmul(grad_scores, ks).mul_(scale),
                          torch.matmul(grad_scores.transpose(-1, -2), qs).mul_(scale), grad_v.to(v.dtype)))
        grad_q, grad_k, grad_v = (torch.cat(parts) for parts in zip(*grads))
        return grad_q, grad_k, grad_v, None, None, None


def _batch_slices(q: torch.Tensor, k: torch.Tensor) -> list[slice]:
    per_row = max(1, q.shape[1] * q.shape[2] * k.shape[2])
    step = max(1, _CHUNK_ELEMENTS // per_row)
    return [slice(i, min(q.shape[0], i + step)) for i in range(0, q.shape[0], step)]


def _rows(mask: torch.Tensor | None, rows: slice, batch: int) -> torch.Tensor | None:
    """The mask rows of a batch slice (a mask broadcast over the batch is used whole)."""
    return mask[rows] if mask is not None and mask.shape[0] == batch and batch > 1 else mask


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


class _ActivationLinear(torch.autograd.Function):
    """``linear(act(x), weight, bias)`` keeping ``x`` only; ``act(x)`` is recomputed in the backward pass."""

    # No autocast decorators: forward runs under the caller's autocast like any op, and backward
    # casts explicitly to the dtype the forward computed in, on any device.
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                act: torch.nn.Module) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.act = act
        return F.linear(act(x), weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            h = ctx.act(x)
        w = weight.to(h.dtype)
        g = grad_out.to(h.dtype)
        grad_h = torch.matmul(g, w)
        flat_g = g.reshape(-1, g.shape[-1])
        grad_w = torch.matmul(flat_g.t(), h.detach().reshape(-1, h.shape[-1])).to(weight.dtype)
        grad_b = flat_g.sum(0).to(bias.dtype) if bias is not None else None
        (grad_x,) = torch.autograd.grad(h, x, grad_h)
        return grad_x, grad_w, grad_b, None


class ActivationLinear(torch.nn.Module):
    """``linear(act(x))`` that keeps only ``x`` for the backward pass (shares ``linear``'s parameters).

    In evaluation mode, or without gradients, it is plain ``linear(act(x))``.
    """

    def __init__(self, linear: torch.nn.Linear, act: torch.nn.Module):
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.act = act
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return _ActivationLinear.apply(x, self.weight, self.bias, self.act)
        return F.linear(self.act(x), self.weight, self.bias)


def _fuse_feed_forward(module: torch.nn.Module) -> bool:
    """``intermediate`` (dense + activation) then ``output.dense``, as in BERT-like layers: move the
    activation into an :class:`ActivationLinear` in place of ``output.dense``."""
    inter, out = getattr(module, "intermediate", None), getattr(module, "output", None)
    act = getattr(inter, "intermediate_act_fn", None)
    dense = getattr(out, "dense", None)
    if not isinstance(act, torch.nn.Module) or not isinstance(dense, torch.nn.Linear) or list(act.parameters()):
        return False
    inter.intermediate_act_fn = torch.nn.Identity()
    out.dense = ActivationLinear(dense, act)
    return True


def enable_lean_activations(model: torch.nn.Module) -> dict[str, int]:
    """Switch every Hugging Face backbone in ``model`` to lean attention and fused feed-forward activations.

    Returns how many backbones switched their attention and how many feed-forward blocks were
    fused. The weights and their names (``state_dict``) are unchanged, so checkpoints and saved
    models are those of the plain model; the attention choice is not saved (transformers keeps it
    out of ``config.json``). Raises :class:`~dualist.errors.ConfigError` when ``model`` holds no
    backbone whose attention can be switched.
    """
    _register()
    attention = 0
    for backbone in hf_backbones(model):
        setter = getattr(backbone, "set_attn_implementation", None)
        if setter is None:
            continue
        with contextlib.suppress(ValueError, NotImplementedError):
            setter(LEAN_ATTENTION)
            attention += 1
    if not attention:
        raise ConfigError(f"train.lean_activations: {type(model).__name__} holds no Hugging Face backbone whose "
                          "attention can be switched; set it to false")
    fused = sum(_fuse_feed_forward(m) for m in list(model.modules()))
    return {"attention": attention, "feed_forward": fused}

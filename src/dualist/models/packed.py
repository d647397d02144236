"""Packed inference for BERT bodies on CPU: the same function, less memory traffic.

The Hugging Face forward of a BERT layer runs each operation over the whole padded batch: with 64
documents of 256 tokens, the feed-forward activation alone is a 100 MB tensor, written, read by
the GELU, written again and read by the next matrix product, and every such tensor is a fresh
allocation that the kernel must fault in. On a CPU those passes, not the arithmetic, are what
separates the model's speed from its matrix products' (measured on MiniLM-L6, 64 x 256 tokens,
2 cores: the GELU alone took 18% of the forward, bias copies 10%). :func:`packed_forward`
computes the same layers with three changes:

- **packed tokens.** Padding positions are dropped before the first layer: every per-token
  operation (projections, layer norms, feed-forward) runs on the real tokens only, and attention
  runs per run of equal-length sequences, with no mask (there is nothing to mask).
- **row blocks.** After attention, the rest of a layer (output block, feed-forward, their
  residuals and layer norms) and the next layer's query/key/value projections run on ``rows``
  tokens at a time, so their intermediates stay in cache.
- **only what is read.** With ``cls_only`` (a ``[CLS]``-pooled head), the last layer computes
  attention, the output block and the feed-forward for the first token of each sequence only.
- **oneDNN products.** Where the torch build has oneDNN's prepacked linear (x86 CPU wheels;
  :func:`onednn_available`) and the CPU runs AVX-512 (:func:`onednn_products`; on AVX2 ``addmm``
  was faster), the plain float32 BERT layers (``Linear``, ``LayerNorm``, the exact
  erf GELU) run their products through it instead of ``addmm``: the query/key/value projections as
  one product, the GELU and the residual additions fused into the products. MiniLM's shapes at
  1,024 rows ran at 192-204 GFLOP/s there against 135-160 with ``addmm`` (2 Zen 4 cores), and
  SciFact encoding 15% faster (``bench/RESULTS.md``).

Without oneDNN everything but attention is the layer's own modules, called on row blocks
(embeddings, ``attention.output``, ``intermediate``, ``output``; the query/key/value ``Linear``
layers as one ``addmm`` each); with it, the same operations on the same weights, prepacked once
per layer (a copy of its Linear weights, 42 MB for MiniLM-L6) and packed again whenever a weight
is replaced or changed in place (each call compares tensor identities and version counters), so a
model that trains between two calls is never stale. The arithmetic is the Hugging Face forward's: in float32 outputs agree up to the
rounding of differently blocked matrix products (max abs difference ~1e-5 on MiniLM's hidden
states, ~1e-7 on its normalised embeddings; ``tests/test_models_packed.py``). The bf16 and
torch-int8 copies of ``quantized()`` pack too, with their own modules called as they are (int8
quantizes each row block's activations with its own scale, not the whole batch's).

:func:`packable` says whether a body qualifies: a ``BertModel`` (``model_type == "bert"``) with
absolute positions, not a decoder, on CPU, in evaluation mode, with float32 or bf16 parameters and
the standard layer modules. Anything else (ONNX bodies, other architectures, GPUs) keeps the
Hugging Face forward. ``DualEncoder`` and ``CrossEncoder`` use it for inference (``encode_*``,
``score``) unless their ``packed_inference`` attribute is set to False; a ``DualEncoder`` with a
:class:`~dualist.models.frozen_prefix.PrefixCache` runs :func:`packed_layers` from the cached states
of its frozen blocks.

>>> import tempfile, pathlib
>>> from dualist.testing import make_tiny_bert
>>> from transformers import AutoModel
>>> body = AutoModel.from_pretrained(make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")).eval()
>>> ids = torch.tensor([[101, 7, 8, 9, 102], [101, 5, 102, 0, 0]])
>>> mask = (ids != 0).long()
>>> packable(body)
True
>>> with torch.inference_mode():
...     ref = body(input_ids=ids, attention_mask=mask).last_hidden_state
...     out = packed_forward(body, ids, mask)
>>> bool((out - ref)[mask.bool()].abs().max() < 1e-5), bool(out[1, 3:].abs().max() == 0)
(True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import weakref

import torch
import torch.nn.functional as F

__all__ = ["packable", "packed_forward", "packed_embeddings", "packed_layers", "prefix_lengths", "unpack",
           "onednn_available", "onednn_products", "DEFAULT_ROWS"]

DEFAULT_ROWS = 1024
"""Tokens per row block: a block's feed-forward activation is ``rows x intermediate_size`` floats
(6 MB for MiniLM), small enough to stay in cache, large enough for full-speed matrix products."""


def _standard_layer(layer: torch.nn.Module, hidden: int) -> bool:
    """A BERT layer of the usual modules: self-attention (query/key/value, ``hidden`` wide in all), its
    output block, the feed-forward blocks; no cross-attention, absolute positions."""
    attention = getattr(layer, "attention", None)
    attn = getattr(attention, "self", None)
    if attn is None or getattr(attention, "output", None) is None:
        return False
    if getattr(layer, "crossattention", None) is not None or getattr(attn, "is_decoder", False) \
            or getattr(attn, "is_causal", False):
        return False
    if getattr(attn, "position_embedding_type", "absolute") != "absolute":
        return False
    if getattr(attn, "all_head_size", None) != hidden:
        return False
    return all(isinstance(getattr(attn, n, None), torch.nn.Module) for n in ("query", "key", "value")) \
        and isinstance(getattr(layer, "intermediate", None), torch.nn.Module) \
        and isinstance(getattr(layer, "output", None), torch.nn.Module)


def packable(body: torch.nn.Module) -> bool:
    """True when :func:`packed_forward` computes ``body``'s forward (see the module docstring)."""
    config = getattr(body, "config", None)
    embeddings = getattr(body, "embeddings", None)
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if config is None or embeddings is None or not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return False
    if getattr(config, "model_type", None) != "bert" or getattr(config, "is_decoder", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or body.training:
        return False
    tensors = [*body.parameters(), *body.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        return False
    if any(p.dtype not in (torch.float32, torch.bfloat16) for p in body.parameters()):
        return False
    hidden = getattr(config, "hidden_size", None)
    return all(_standard_layer(layer, hidden) for layer in layers)


def _runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """``(first token, sequences, length)`` of each run of consecutive equal-length sequences."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for length in lengths:
        if runs and runs[-1][2] == length:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, length)
        else:
            runs.append((start, 1, length))
        start += length
    return runs


def _heads(x: torch.Tensor, first: int, count: int, length: int, heads: int) -> torch.Tensor:
    """``count`` packed sequences of ``length`` tokens from row ``first`` of ``x (T, D)``, viewed as
    ``(count, H, length, D/H)``."""
    return x[first:first + count * length].view(count, length, heads, x.shape[1] // heads).transpose(1, 2)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
               runs: list[tuple[int, int, int]], heads: int) -> None:
    """Self-attention of every sequence over its own tokens: ``(T, D)`` packed q, k, v into ``out``."""
    for first, count, length in runs:
        ctx = F.scaled_dot_product_attention(*(_heads(x, first, count, length, heads) for x in (q, k, v)))
        _heads(out, first, count, length, heads).copy_(ctx)


def _cls_attention(q_cls: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   runs: list[tuple[int, int, int]], heads: int) -> torch.Tensor:
    """Attention of each sequence's first token over its sequence: ``(B, D)`` queries -> ``(B, D)``."""
    out = torch.empty_like(q_cls)
    seq = 0
    for first, count, length in runs:
        qq = _heads(q_cls, seq, count, 1, heads)
        ctx = F.scaled_dot_product_attention(qq, _heads(k, first, count, length, heads),
                                             _heads(v, first, count, length, heads))  # (count, H, 1, D/H)
        _heads(out, seq, count, 1, heads).copy_(ctx)
        seq += count
    return out


def _tail(layer: torch.nn.Module, ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The rest of a layer after attention, on a row block: the layer's own output, feed-forward
    and layer-norm modules (they act on each token alone)."""
    y = layer.attention.output(ctx, residual)
    return layer.output(layer.intermediate(y), y)


def _project(layer: torch.nn.Module, x: torch.Tensor, qkv: torch.Tensor) -> None:
    """The layer's query, key and value projections of row block ``x`` into ``qkv[0..2]`` (same rows)."""
    attn = layer.attention.self
    for i, proj in enumerate((attn.query, attn.key, attn.value)):
        if type(proj) is torch.nn.Linear and proj.bias is not None:
            torch.addmm(proj.bias, x, proj.weight.t(), out=qkv[i])
        else:  # e.g. a dynamically quantized Linear
            qkv[i] = proj(x)


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build runs oneDNN's prepacked float32 linear (``torch.ops.mkldnn``), checked
    on a 2 x 2 product: x86 CPU builds do; others take the layers' own modules."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.eye(2), 1)
        y = torch.ops.mkldnn._linear_pointwise(torch.tensor([[1.0, 2.0]]), weight, torch.ones(2), "none", [], "")
        return bool(torch.equal(y, torch.tensor([[2.0, 3.0]])))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def onednn_products() -> bool:
    """Whether :func:`packed_forward` uses oneDNN's products by default: where the build has them
    (:func:`onednn_available`) and the CPU runs AVX-512 (:func:`dualist.models.cpu.cpu_features`,
    caps applied). On AVX2, oneDNN's float32 kernels were slower than ``addmm`` (MKL): 85-97 against
    136-138 GFLOP/s, and SciFact encoding 9% slower, on an Intel Xeon capped to AVX2; no faster on a
    Zen 4 capped to AVX2 (``bench/RESULTS.md``). Read on every call: a cap may change in between."""
    from dualist.models.cpu import cpu_features

    return onednn_available() and cpu_features().capability.startswith("AVX512")


_PREPACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""layer -> (rows, its Linear weights and biases, their version counters, :class:`_OneDnnLayer`): the
prepacked copy is reused while every one of those tensors is the same object, unchanged in place
(an optimizer step, ``load_state_dict`` and ``copy_`` all bump the version counter)."""


@dataclasses.dataclass
class _OneDnnLayer:
    """One layer's Linear weights in oneDNN's blocked layout, for one :func:`packed_forward` call:
    ``(weight, bias)`` of the fused query/key/value projection, the attention output, the feed-forward
    up- and down-projections; and the two layer norms."""

    qkv: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    up: tuple[torch.Tensor, torch.Tensor]
    down: tuple[torch.Tensor, torch.Tensor]
    norm1: torch.nn.LayerNorm
    norm2: torch.nn.LayerNorm


def _onednn_layer(layer: torch.nn.Module, rows: int) -> _OneDnnLayer | None:
    """``layer``'s weights prepacked for oneDNN, or None unless it is the plain float32 BERT layer
    (``Linear`` layers with biases, ``LayerNorm``, the exact erf GELU), whose arithmetic the oneDNN
    path repeats. Anything else (int8 or bf16 copies, lean activations) keeps its own modules."""
    attn, self_out = layer.attention.self, layer.attention.output
    inter, out = layer.intermediate, layer.output
    if (type(self_out).__name__, type(inter).__name__, type(out).__name__) != \
            ("BertSelfOutput", "BertIntermediate", "BertOutput"):
        return None
    linears = [attn.query, attn.key, attn.value, getattr(self_out, "dense", None),
               getattr(inter, "dense", None), getattr(out, "dense", None)]
    if any(type(m) is not torch.nn.Linear or m.bias is None or m.weight.dtype != torch.float32 for m in linears):
        return None
    norms = [getattr(self_out, "LayerNorm", None), getattr(out, "LayerNorm", None)]
    if any(type(n) is not torch.nn.LayerNorm or n.weight is None or n.bias is None for n in norms):
        return None
    act = getattr(inter, "intermediate_act_fn", None)
    if type(act).__name__ != "GELUActivation" or getattr(act, "act", None) is not F.gelu:
        return None

    tensors = [t for m in linears for t in (m.weight, m.bias)]
    try:
        versions = [t._version for t in tensors]
    except RuntimeError:  # inference tensors have no version counter: nothing to check a copy against
        versions = None
    cached = _PREPACKED.get(layer)
    if (versions is not None and cached is not None and cached[0] == rows and cached[2] == versions
            and all(a is b for a, b in zip(cached[1], tensors))):
        packed = cached[3]
        return dataclasses.replace(packed, norm1=norms[0], norm2=norms[1])

    def pack(*mods: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.cat([m.weight for m in mods]) if len(mods) > 1 else mods[0].weight
        bias = torch.cat([m.bias for m in mods]) if len(mods) > 1 else mods[0].bias
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows), bias.detach()

    packed = _OneDnnLayer(pack(*linears[:3]), pack(linears[3]), pack(linears[4]), pack(linears[5]), *norms)
    if versions is not None:
        _PREPACKED[layer] = (rows, tensors, versions, packed)
    return packed


def _linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor], act: str = "none",
            residual: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W^T + b`` by oneDNN, then the exact GELU (``act="gelu"``) or ``+ residual``, fused."""
    weight, bias = packed
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, act, [], "none" if act == "gelu" else "")


def _norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _onednn_tail(w: _OneDnnLayer, ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """:func:`_tail` through oneDNN: the same operations (dropout is off in evaluation mode)."""
    y = _norm(_linear(ctx, w.out, residual=residual), w.norm1)
    return _norm(_linear(_linear(y, w.up, "gelu"), w.down, residual=y), w.norm2)


def _onednn_project(w: _OneDnnLayer, x: torch.Tensor, qkv: torch.Tensor) -> None:
    """:func:`_project` through oneDNN: one fused product for the query, key and value."""
    qkv.copy_(_linear(x, w.qkv).view(len(x), 3, -1).transpose(0, 1))


def packed_forward(body: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None = None, *, cls_only: bool = False,
                   rows: int | None = None, onednn: bool | None = None) -> torch.Tensor:
    """``body``'s last hidden state for a right-padded batch: ``(B, L, D)``, zeros at padding.

    ``cls_only=True`` returns ``(B, D)``, the first token's state, computing the last layer for
    that token only. Call it under ``torch.inference_mode()`` (or ``no_grad``) on a body for which
    :func:`packable` is True; the attention mask must be a prefix mask (right padding: ones, then
    zeros), which is checked. ``onednn`` (default: where :func:`onednn_products`, i.e. an AVX-512 CPU
    with a build that has them) computes the Linear layers of plain float32 BERT layers with oneDNN's
    prepacked kernels (see the module docstring); False keeps the layers' own modules everywhere.
    """
    lengths = prefix_lengths(attention_mask)
    batch, width = input_ids.shape
    if batch == 0:
        return torch.zeros((0, body.config.hidden_size) if cls_only else (0, width, body.config.hidden_size))
    x = packed_embeddings(body, input_ids, attention_mask, token_type_ids)
    x = packed_layers(body, x, lengths, cls_only=cls_only, rows=rows, onednn=onednn)
    return x if cls_only else unpack(x, lengths, width)


def prefix_lengths(attention_mask: torch.Tensor) -> list[int]:
    """Each sequence's token count, checking that ``attention_mask (B, L)`` is right padding (ones, then
    zeros) with at least one token per row."""
    width = attention_mask.shape[1]
    mask = attention_mask.bool()
    lengths_t = mask.sum(1)
    if not torch.equal(mask, torch.arange(width, device=mask.device) < lengths_t[:, None]):
        raise ValueError("packed_forward needs right padding: each attention-mask row must be ones then zeros")
    if bool((lengths_t == 0).any()):
        raise ValueError("packed_forward: a sequence has no tokens (attention-mask row of zeros)")
    return lengths_t.tolist()


def packed_embeddings(body: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The embedding layer's output for the real tokens of a right-padded batch, packed: ``(T, D)``."""
    width = input_ids.shape[1]
    flat = attention_mask.bool().flatten().nonzero().squeeze(1)  # packed token -> position in the padded batch
    ids = input_ids.flatten()[flat]
    positions = flat % width
    types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids.flatten()[flat]
    return body.embeddings(input_ids=ids[None], token_type_ids=types[None], position_ids=positions[None])[0]


def unpack(x: torch.Tensor, lengths: list[int], width: int) -> torch.Tensor:
    """Packed token states ``(T, D)`` of sequences of ``lengths`` -> right-padded ``(B, width, D)``, zeros at padding."""
    out = x.new_zeros((len(lengths) * width, x.shape[1]))
    out[(torch.arange(width) < torch.tensor(lengths)[:, None]).flatten()] = x
    return out.view(len(lengths), width, x.shape[1])


def packed_layers(body: torch.nn.Module, x: torch.Tensor, lengths: list[int], *, layers: slice = slice(None),
                  cls_only: bool = False, rows: int | None = None, onednn: bool | None = None) -> torch.Tensor:
    """Run the blocks ``layers`` of ``body`` on packed token states ``x (T, D)`` of sequences of
    ``lengths`` (``sum(lengths) == T``); returns their packed output ``(T, D)``, or with ``cls_only``
    the first token of each sequence ``(B, D)``, the last block computed for that token only.

    :func:`packed_forward` is the embeddings then every block; a caller that keeps the states after
    the first blocks (:class:`~dualist.models.frozen_prefix.PrefixCache`) runs the rest from them.
    ``x`` is updated in place.
    """
    rows = DEFAULT_ROWS if rows is None else rows
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if sum(lengths) != len(x):
        raise ValueError(f"packed_layers: {len(x)} token states for sequences of {sum(lengths)} tokens")
    own = list(body.encoder.layer)[layers]  # the blocks this call runs
    if not own:
        if cls_only:
            return x[torch.tensor([0] + lengths[:-1]).cumsum(0)]
        return x
    if onednn is None:
        onednn = onednn_products()
    elif onednn and not onednn_available():
        raise ValueError("packed_forward(onednn=True): this torch build has no oneDNN linear "
                         "(torch.ops.mkldnn); pass onednn=None to use it only where it exists")
    fast = [_onednn_layer(layer, rows) if onednn else None for layer in own]

    def tail(li: int, ctx_rows: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        w = fast[li]
        return _tail(own[li], ctx_rows, residual) if w is None else _onednn_tail(w, ctx_rows, residual)

    def project(li: int, x_rows: torch.Tensor, qkv_rows: torch.Tensor) -> None:
        w = fast[li]
        _project(own[li], x_rows, qkv_rows) if w is None else _onednn_project(w, x_rows, qkv_rows)

    heads = body.config.num_attention_heads
    tokens, dim = x.shape
    runs = _runs(lengths)
    qkv = torch.empty((3, tokens, dim), dtype=x.dtype)
    ctx = torch.empty((tokens, dim), dtype=x.dtype)
    blocks = [slice(r, min(r + rows, tokens)) for r in range(0, tokens, rows)]
    for b in blocks:
        project(0, x[b], qkv[:, b])
    last = len(own) - 1
    for li in range(len(own)):
        if li == last and cls_only:
            firsts = torch.tensor([0] + lengths[:-1]).cumsum(0)
            q_cls = qkv[0][firsts]
            return tail(li, _cls_attention(q_cls, qkv[1], qkv[2], runs, heads), x[firsts])
        _attention(qkv[0], qkv[1], qkv[2], ctx, runs, heads)
        for b in blocks:
            x[b] = tail(li, ctx[b], x[b])
            if li < last:
                project(li + 1, x[b], qkv[:, b])
    return x

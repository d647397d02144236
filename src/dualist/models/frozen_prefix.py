"""Frozen bottom layers: a fixed feature extractor whose output is computed once per distinct text.

With the embeddings and the first N transformer blocks frozen (``TrainConfig.freeze_layers``,
:func:`~dualist.models.backbone.freeze_bottom`), a dual-encoder's hidden states after block N are a
fixed function of the text. Training meets the same documents in many batches and the dev
evaluations re-encode the same candidates each time; :class:`PrefixCache` keeps those hidden states
per distinct text and runs only the blocks above them. Several models whose frozen part holds the
same weights (students trained from one start with the same ``freeze_layers``, and that start
itself) can share one cache: the corpus then goes through the frozen blocks once for all of them.

The results are those of the model without a cache, up to float rounding (a text's states were
computed in another padded batch): frozen blocks run as in evaluation, without dropout, with or
without the cache (:func:`~dualist.models.backbone.freeze_bottom`). Memory is bounded by
``max_bytes``; once it is reached, new texts are computed and not kept.

>>> import tempfile, pathlib
>>> from dualist.models import DualEncoder
>>> from dualist.testing import make_tiny_bert
>>> de = DualEncoder(model=str(make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")))
>>> plain = de.encode_docs(["enzyme binding", "ocean warming"])
>>> cache = de.cache_prefix(1)               # embeddings + block 1 of 2, frozen and cached
>>> fast = de.encode_docs(["enzyme binding", "ocean warming"])
>>> bool(abs(fast - plain).max() < 1e-5), len(cache), cache.misses
(True, 2, 2)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dualist.errors import ConfigError, DualistError
from dualist.models.pooling import eval_mode

__all__ = ["PrefixCache", "prefix_fingerprint", "weights_fingerprint"]

logger = logging.getLogger(__name__)


class PrefixCache:
    """Hidden states after the frozen embeddings and first ``num_layers`` blocks, per (tower, length, text).

    Attach it with :meth:`DualEncoder.cache_prefix <dualist.models.DualEncoder.cache_prefix>`;
    the first model it serves fixes :attr:`fingerprint` (a hash of the frozen weights), and a model
    with other frozen weights is refused, so a shared cache never hands out another model's states.
    """

    def __init__(self, num_layers: int, *, max_bytes: int = 4 << 30):
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"PrefixCache: num_layers must be an integer >= 1, got {num_layers!r}")
        self.num_layers = num_layers
        self.max_bytes = max_bytes
        self.fingerprint: str | None = None
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._states: dict[tuple[str, int, str], torch.Tensor] = {}
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return (f"PrefixCache(num_layers={self.num_layers}, texts={len(self)}, "
                f"{self.nbytes / 2**20:.0f} MiB of {self.max_bytes / 2**20:.0f}, hits={self.hits}, "
                f"misses={self.misses})")

    def bind(self, fingerprint: str) -> None:
        """Serve a model whose frozen part hashes to ``fingerprint`` (the first one sets it)."""
        if self.fingerprint is None:
            self.fingerprint = fingerprint
        elif fingerprint != self.fingerprint:
            raise DualistError("this PrefixCache holds the hidden states of other frozen weights: a model can share "
                               "it only when its embeddings and first "
                               f"{self.num_layers} layers equal those of the models it served (trained with "
                               f"freeze_layers={self.num_layers} from the same start); use a new cache")

    def last_hidden_state(self, backbone: torch.nn.Module, tower: str, max_length: int, texts: list[str],
                          batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``backbone``'s last hidden state for the padded ``batch`` of ``texts``, from cached frozen states."""
        mask = batch["attention_mask"]
        lengths = mask.sum(1).tolist()
        keys, missing = self._lookup(tower, max_length, texts)
        fresh: dict[tuple[str, int, str], torch.Tensor] = {}
        if missing:
            rows = torch.tensor(missing, device=mask.device)
            sub = {name: value[rows] for name, value in batch.items()}
            with torch.no_grad(), _layers(backbone, slice(0, self.num_layers)), eval_mode(backbone):
                states = backbone(**sub).last_hidden_state
            for j, i in enumerate(missing):
                fresh[keys[i]] = states[j, : lengths[i]].detach()
                self._keep(keys[i], fresh[keys[i]])
        states = [fresh[key] if key in fresh else self._states[key] for key in keys]
        hidden = torch.zeros((len(texts), mask.shape[1], states[0].shape[-1]), dtype=states[0].dtype,
                             device=mask.device)
        for i, state in enumerate(states):
            hidden[i, : lengths[i]] = state
        with _layers(backbone, slice(self.num_layers, None)), _given_embeddings(backbone, hidden):
            return backbone(**batch).last_hidden_state

    def packed_last_hidden_state(self, backbone: torch.nn.Module, tower: str, max_length: int, texts: list[str],
                                 batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`last_hidden_state` through :func:`~dualist.models.packed.packed_layers` (inference only, on a
        body that :func:`~dualist.models.packed.packable` accepts): the missing texts' frozen blocks and then
        every text's upper blocks run on real tokens only, the states kept in the same form (one text's
        tokens, no padding) as the padded path keeps them, so the two paths share one cache."""
        from dualist.models.packed import packed_embeddings, packed_layers, prefix_lengths, unpack

        mask = batch["attention_mask"]
        lengths = prefix_lengths(mask)
        keys, missing = self._lookup(tower, max_length, texts)
        fresh: dict[tuple[str, int, str], torch.Tensor] = {}
        if missing:
            rows = torch.tensor(missing, device=mask.device)
            sub_lengths = [lengths[i] for i in missing]
            x = packed_embeddings(backbone, batch["input_ids"][rows], mask[rows],
                                  batch["token_type_ids"][rows] if "token_type_ids" in batch else None)
            x = packed_layers(backbone, x, sub_lengths, layers=slice(0, self.num_layers))
            for i, state in zip(missing, x.split(sub_lengths), strict=True):
                fresh[keys[i]] = state
                self._keep(keys[i], state)
        states = torch.cat([fresh[key] if key in fresh else self._states[key] for key in keys])
        states = packed_layers(backbone, states, lengths, layers=slice(self.num_layers, None))
        return unpack(states, lengths, mask.shape[1])

    def _lookup(self, tower: str, max_length: int, texts: list[str]) -> tuple[list[tuple[str, int, str]], list[int]]:
        """The cache keys of ``texts`` and the positions of those to compute (the first of each text not
        cached), counted as misses; every other position is a hit, a repeat within ``texts`` included."""
        keys = [(tower, max_length, t) for t in texts]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each key's first position
        missing = [i for i, k in enumerate(keys) if k not in self._states and first[k] == i]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return keys, missing

    def _keep(self, key: tuple[str, int, str], state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        if self.nbytes + size > self.max_bytes:
            if not self._full_warned:
                logger.warning("prefix cache full (%.0f MiB): further texts are computed and not kept",
                               self.nbytes / 2**20)
                self._full_warned = True
            return
        self._states[key] = state.clone()  # not a view of the sub-batch: keep only this text's rows
        self.nbytes += size


def prefix_fingerprint(backbone: torch.nn.Module, num_layers: int) -> str:
    """A hash of the embeddings' and the first ``num_layers`` blocks' weights."""
    from dualist.models.backbone import transformer_layers

    return weights_fingerprint(_embeddings(backbone), *transformer_layers(backbone)[:num_layers])


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """A hash of the parameters and buffers of ``modules``, names and bytes: equal for equal weights.

    It covers the reduced-precision copies too: int8 layers' packed weights (quantized values, scales
    and zero points) and, for weights that live outside torch (an ONNX Runtime session), the
    ``source_fingerprint`` their module records of the weights it was made from."""
    h = hashlib.sha1()
    for module in modules:
        for name, value in sorted(module.state_dict().items()):
            h.update(name.encode())
            _hash_value(h, value)
        for name, sub in module.named_modules():
            source = getattr(sub, "source_fingerprint", None)
            if source is not None:
                h.update(f"{name}:{source}".encode())
    return h.hexdigest()[:16]


def _hash_value(h: Any, value: Any) -> None:
    """Feed one ``state_dict`` entry to ``h``: a tensor's bytes (a quantized one's integers and
    quantization parameters), a tuple's items in order, anything else (a dtype) by its repr."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            _hash_value(h, str(t.qscheme()))
            if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                _hash_value(h, (t.q_per_channel_scales(), t.q_per_channel_zero_points(), t.q_per_channel_axis()))
            else:
                _hash_value(h, (t.q_scale(), t.q_zero_point()))
            t = t.int_repr()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _hash_value(h, item)
    else:
        h.update(repr(value).encode())


# --------------------------------------------------------------------------- running part of a backbone
def _embeddings(backbone: torch.nn.Module) -> torch.nn.Module:
    base = getattr(backbone, "base_model", backbone)
    emb = getattr(base, "embeddings", None)
    if not isinstance(emb, torch.nn.Module):
        raise ConfigError(f"cannot find the embeddings of {type(backbone).__name__}; frozen-prefix caching "
                          "supports BERT-like encoders (an `embeddings` module below the layers)")
    return emb


@contextmanager
def _layers(backbone: torch.nn.Module, which: slice) -> Iterator[None]:
    """Run only the blocks ``which`` of ``backbone`` (the same modules, in a shorter list)."""
    from dualist.models.backbone import layer_list_owner

    owner, name = layer_list_owner(backbone)
    full = getattr(owner, name)
    setattr(owner, name, torch.nn.ModuleList(list(full)[which]))
    try:
        yield
    finally:
        setattr(owner, name, full)


class _Given(torch.nn.Module):
    """Stands in for the embeddings: returns hidden states computed beforehand."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.hidden


@contextmanager
def _given_embeddings(backbone: torch.nn.Module, hidden: torch.Tensor) -> Iterator[None]:
    base = getattr(backbone, "base_model", backbone)
    emb = _embeddings(backbone)
    base.embeddings = _Given(hidden)
    try:
        yield
    finally:
        base.embeddings = emb

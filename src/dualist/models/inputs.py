"""Checks shared by the dual- and cross-encoder on what they are given: configs, texts, lengths."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, TypeVar

import torch

from dualist.config import config_from_dict
from dualist.errors import ConfigError

__all__ = ["with_overrides", "check_texts", "model_max_length", "effective_length"]

logger = logging.getLogger(__name__)

C = TypeVar("C")

_UNBOUNDED = 1_000_000


def with_overrides(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
    """``config`` (or the defaults) with ``overrides`` applied, coerced and checked like YAML input."""
    if config is not None and not isinstance(config, cls):
        raise ConfigError(f"expected a {cls.__name__}, got {type(config).__name__}")
    base = dataclasses.asdict(config) if config is not None else {}
    return config_from_dict(cls, {**base, **overrides}, where=cls.__name__)


def check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what}: expected a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}]: expected a string, got {type(t).__name__}")
    return texts


def model_max_length(model: torch.nn.Module, tokenizer: Any) -> int:
    """The longest input the backbone accepts (tokenizer limit, else its position embeddings)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _UNBOUNDED:
        return limit
    positions = getattr(model.config, "max_position_embeddings", None)
    return int(positions) if positions else _UNBOUNDED


def effective_length(requested: int, limit: int, name: str) -> int:
    if requested > limit:
        logger.warning("%s=%d exceeds what the model accepts; using %d", name, requested, limit)
        return limit
    return requested

"""dualist: train dual-encoder retrievers that rank like cross-encoders.

Implements *In Defense of Dual-Encoders for Neural Ranking* (Menon et al., ICML 2022): a
cross-attention teacher, dual-encoder students trained one-hot or distilled (MSE, Margin-MSE,
softmax-CE/KL, RankDistil, M3SE), BM25 candidates, exact/FAISS search, re-ranking and BEIR evaluation.

Heavy modules load lazily, so ``import dualist`` is cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_beir": "dualist.data",
    "Dataset": "dualist.data",
    "read_trec_run": "dualist.data",
    "write_trec_run": "dualist.data",
    "read_qrels": "dualist.data",
    "write_qrels": "dualist.data",
    "BM25Retriever": "dualist.candidates",
    "sample_negatives": "dualist.candidates",
    "CrossEncoder": "dualist.models",
    "DualEncoder": "dualist.models",
    "LOSSES": "dualist.losses",
    "build_loss": "dualist.losses",
    "ExactIndex": "dualist.index",
    "FaissIndex": "dualist.index",
    "SearchResults": "dualist.index",
    "evaluate": "dualist.evaluation",
    "EvalResult": "dualist.evaluation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dualist' has no attribute {name!r}")

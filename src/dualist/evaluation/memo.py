"""Re-ranking runs kept by what made them, so that one process never re-ranks the same thing twice.

A comparison of several models re-ranks the same dev candidates many times: every student's
training evaluates its starting weights on dev (the same start for all of them), and the
evaluation of each chosen model re-ranks the dev candidates its training already re-ranked with
those very weights. :class:`RerankMemo` keeps each run under a hash of everything it depends on:
the model's class, settings and weights (:func:`~dualist.models.frozen_prefix.weights_fingerprint`),
the queries' texts, each query's top-``depth`` candidates and their documents' texts. A model saved
and loaded again has the same weights, so it finds the run made before it was saved; any change
of weights, settings, queries, candidates or depth is another key. A reduced-precision copy
(``quantized(...)``: int8, bf16, ONNX Runtime) is keyed by its precision as well as its weights,
so it never takes the run of the model it was made from, nor that of another model's copy.

It is a speed setting of one process (``dualist repro`` shares one between its trainings and
its evaluation): a run taken from it equals the one that would be computed, up to the float
rounding of another batch size.

>>> import tempfile, pathlib
>>> from dualist.data import Dataset
>>> from dualist.models import DualEncoder
>>> from dualist.testing import make_tiny_bert
>>> de = DualEncoder(model=str(make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")))
>>> ds = Dataset("toy", None, corpus={"d1": {"title": "", "text": "enzyme binding"},
...                                   "d2": {"title": "", "text": "ocean"}}, queries={"q1": "enzymes"})
>>> memo = RerankMemo()
>>> first = memo.rerank(de, ds, {"q1": "enzymes"}, {"q1": {"d1": 2.0, "d2": 1.0}}, depth=2)
>>> memo.rerank(de, ds, {"q1": "enzymes"}, {"q1": {"d1": 2.0, "d2": 1.0}}, depth=2) == first, memo.hits
(True, 1)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from dualist.data import Dataset

__all__ = ["RerankMemo"]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


class RerankMemo:
    """Re-ranking runs of one process, keyed by model, queries, candidates and depth (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self.hits = 0
        # evaluation files by model_key(model) + the evaluation's settings (dualist.stages.evaluation_stage):
        # a model with the weights of one evaluated before (a student that kept its start) takes its file
        self.evaluations: dict[str, tuple[Path, str]] = {}  # key -> (evaluation file, its name)

    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        return f"RerankMemo(runs={len(self)}, hits={self.hits})"

    def rerank(self, model: Any, dataset: Dataset, queries: dict[str, str], candidates: Run, *, depth: int = 100,
               batch_size: int = 64, doc_embeddings: Any = None) -> Run:
        """:func:`dualist.evaluation.modes.rerank` (no progress bar), or the run it gave before for the same key.
        The returned run is shared with the memo: read it, do not change it. ``doc_embeddings`` (a
        dual-encoder's corpus embeddings, if already computed) is used when the run is made, and not
        part of the key."""
        from dualist.evaluation.modes import rerank, top_k

        cands = top_k({q: candidates.get(q, {}) for q in queries}, depth)
        key = self.key(model, dataset, queries, cands)
        if key in self._runs:
            self.hits += 1
            logger.info("re-ranking of %d queries by these weights done before: taken from the memo", len(queries))
            return self._runs[key]
        run = rerank(model, dataset, queries, cands, depth=depth, batch_size=batch_size, show_progress=False,
                     doc_embeddings=doc_embeddings)
        self._runs[key] = run
        return run

    @staticmethod
    def key(model: Any, dataset: Dataset, queries: dict[str, str], cands: Run) -> str:
        """The hash of what a re-ranking of ``cands`` (each query's candidates, already cut to the depth)
        depends on. A model's ``config.model`` (where it was loaded from) does not count: its weights do."""
        from dualist._io import fingerprint_obj

        docs = sorted({d for ranked in cands.values() for d in ranked})
        what = fingerprint_obj([{q: queries[q] for q in sorted(queries)},
                                {q: sorted(ranked.items()) for q, ranked in sorted(cands.items())},
                                {d: dataset.doc_text(d) for d in docs}])
        return f"{what}:{RerankMemo.model_key(model)}"

    @staticmethod
    def model_key(model: Any) -> str:
        """What a model's scores depend on: its class, precision, settings and weights; not where it was
        loaded from (``config.model``)."""
        from dualist._io import fingerprint_obj
        from dualist.models.frozen_prefix import weights_fingerprint

        config = getattr(model, "config", None)
        if dataclasses.is_dataclass(config) and hasattr(config, "model"):
            config = dataclasses.replace(config, model="")
        return (f"{type(model).__name__}:{getattr(model, 'inference_dtype', None)}:{fingerprint_obj(config)}:"
                f"{weights_fingerprint(model)}")

"""Data layer: BEIR datasets, TREC runs and qrels, fixed dev splits.

Everything at the edges is a plain dict: ``corpus`` (doc id -> ``{"title", "text"}``), ``queries``
(query id -> text), ``qrels`` (query id -> doc id -> grade) and runs (query id -> doc id -> score).
"""

from __future__ import annotations

from dualist.data.beir import BEIR_URL, default_cache_dir, load_beir
from dualist.data.dataset import Dataset, DataWarning, doc_text
from dualist.data.splits import carve_dev, stable_sample
from dualist.data.trec import rank_docs, ranked_positives, read_qrels, read_trec_run, write_qrels, write_trec_run

__all__ = [
    "Dataset",
    "DataWarning",
    "doc_text",
    "load_beir",
    "default_cache_dir",
    "BEIR_URL",
    "read_trec_run",
    "write_trec_run",
    "read_qrels",
    "write_qrels",
    "rank_docs",
    "ranked_positives",
    "carve_dev",
    "stable_sample",
]

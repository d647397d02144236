"""Shared fixtures: a tiny BEIR dataset and a tiny random BERT, both built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dualist.testing import make_tiny_beir, make_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DUALIST_NO_PROGRESS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    """A small BEIR folder: 48 docs, 48 queries over 8 topics, train/dev/test qrels."""
    return make_tiny_beir(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A local 2-layer, 32-wide random BERT with its tokenizer (a valid model path)."""
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def no_dropout_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: a forward pass then depends on the batch alone, so two ways of
    splitting a batch (accumulation, processes) must give the same losses and gradients."""
    import json
    import shutil

    path = tmp_path_factory.mktemp("models") / "tiny-bert-no-dropout"
    shutil.copytree(tiny_bert, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real BEIR datasets beside the checkout; tests that need them skip when absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def tiny_train(tiny_beir):
    """The tiny dataset and its BM25 top-20 for the train split: ``(dataset, run)``."""
    from dualist.candidates import bm25_run
    from dualist.data import load_beir

    ds = load_beir(tiny_beir)
    return ds, bm25_run(ds, "train", k=20)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Tiny models gain nothing from threads, and on a shared, loaded machine OpenMP threads that
    spin-wait for each other make every step ~100x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

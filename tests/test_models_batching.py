"""The length-sorted batching behind fast inference: every index once, tight padding, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualist.models import batching
from dualist.models.batching import Collector, length_sorted_batches
from dualist.models.pooling import mean_pool


def _tokenize_fake(lengths):
    def tokenize(idx):
        return {"input_ids": [[7] * lengths[i] for i in idx]}
    return tokenize


@pytest.mark.parametrize("device", ["cpu", "meta"])  # meta stands in for an accelerator (prefetch thread)
def test_batches_cover_every_index_once_with_tight_padding(monkeypatch, device):
    monkeypatch.setattr(batching, "TOKENIZE_CHUNK", 8)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=29).tolist()
    seen = []
    for idx, batch in length_sorted_batches(len(lengths), lengths, _tokenize_fake(lengths), 3,
                                            {"input_ids": 0}, torch.device(device)):
        assert batch["input_ids"].device.type == device
        assert batch["input_ids"].shape[1] == max(lengths[i] for i in idx)  # padded to its own longest
        if device == "cpu":
            np.testing.assert_array_equal(batch["attention_mask"].sum(1).numpy(), [lengths[i] for i in idx])
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(lengths)))


def test_empty_input_yields_nothing():
    assert list(length_sorted_batches(0, [], _tokenize_fake([]), 4, {}, torch.device("cpu"))) == []


def test_collector_restores_order_on_both_paths():
    values = torch.arange(12, dtype=torch.float32).view(6, 2)
    for device in ("cpu", "meta"):
        out = Collector((6, 2), torch.device(device), flush_rows=4)
        out.add(np.array([5, 0, 3]), values[[5, 0, 3]])
        out.add(np.array([1, 4, 2]), values[[1, 4, 2]])
        np.testing.assert_array_equal(out.flush(), values.numpy())


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_encode_across_tokenize_chunks(monkeypatch, tiny_bert):
    from dualist.models import DualEncoder

    model = DualEncoder(model=str(tiny_bert), doc_max_length=64)
    texts = [" ".join(["protein"] * (i % 9 + 1) + ["cancer"] * (i % 4)) for i in range(25)]
    whole = model.encode_docs(texts, batch_size=4)
    monkeypatch.setattr(batching, "TOKENIZE_CHUNK", 6)
    np.testing.assert_allclose(model.encode_docs(texts, batch_size=4), whole, atol=1e-6)

"""Fast batched inference: texts sorted by length, tokenized in chunks, padded per batch, results scattered back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dualist._io import progress
from dualist.errors import ConfigError

__all__ = ["TOKENIZE_CHUNK", "progress_flag", "length_sorted_batches", "Collector"]


# Texts are tokenized this many at a time: enough to sort well by length, small enough that the
# token ids of a million-document corpus never sit in memory at once.
TOKENIZE_CHUNK = 16384


def progress_flag(show_progress: bool | None) -> bool | None:
    """``show_progress`` (None = auto) as tqdm's ``disable``."""
    return None if show_progress is None else not show_progress


def length_sorted_batches(
    n: int,
    char_lengths: Sequence[int],
    tokenize,
    batch_size: int,
    pad_values: dict[str, int],
    device: torch.device,
    *,
    desc: str = "",
    show_progress: bool | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(indices, padded model inputs)`` in decreasing token length; callers scatter by index.

    Texts are ordered by character length, tokenized ``TOKENIZE_CHUNK`` at a time by
    ``tokenize(indices) -> {name: list of id lists}`` (no padding), re-sorted by their true token
    length inside the chunk and padded only to the longest sequence of each batch (right padding).
    The attention mask comes from the lengths. Longest first, so the peak memory shows up at once.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(char_lengths, dtype=np.int64), kind="stable")
    chunks = [order[s:s + TOKENIZE_CHUNK] for s in range(0, n, TOKENIZE_CHUNK)]
    # On an accelerator the next chunk is tokenized in a thread while the device works on this one
    # (the tokenizers release the GIL). On CPU both would fight for the same cores.
    pool = ThreadPoolExecutor(max_workers=1) if device.type != "cpu" and len(chunks) > 1 else None
    try:
        pending = pool.submit(tokenize, chunks[0]) if pool and chunks else None
        with progress(total=n, desc=desc, disable=progress_flag(show_progress), unit="text") as bar:
            for c, chunk in enumerate(chunks):
                if pool is not None:
                    features = pending.result()
                    if c + 1 < len(chunks):
                        pending = pool.submit(tokenize, chunks[c + 1])
                else:
                    features = tokenize(chunk)
                for rows, batch in _padded(features, batch_size, pad_values, device):
                    yield chunk[rows], batch
                    bar.update(len(rows))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _padded(features: dict[str, list[list[int]]], batch_size: int, pad_values: dict[str, int],
            device: torch.device) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Batches of one tokenized chunk, longest first, each padded to its own longest sequence."""
    ids = features["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    local = np.argsort(-lengths, kind="stable")
    for b in range(0, len(local), batch_size):
        rows = local[b:b + batch_size]
        width = int(lengths[rows[0]])
        batch: dict[str, torch.Tensor] = {}
        for name, seqs in features.items():
            arr = np.full((len(rows), width), pad_values.get(name, 0), dtype=np.int64)
            for r, i in enumerate(rows):
                seq = seqs[i]
                arr[r, :len(seq)] = seq
            batch[name] = torch.from_numpy(arr)
        batch["attention_mask"] = torch.from_numpy(
            (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64))
        if device.type == "cuda":
            batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
        elif device.type != "cpu":
            batch = {k: v.to(device) for k, v in batch.items()}
        yield rows, batch


class Collector:
    """Scatter per-batch results into an input-ordered float32 array without a device sync per batch.

    On CPU rows are written straight into the output; on an accelerator results stay on the device
    and are copied back every ``flush_rows`` rows, so the device never waits for the host.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, flush_rows: int = TOKENIZE_CHUNK):
        self.out = np.empty(shape, dtype=np.float32)
        self.on_cpu = device.type == "cpu"
        self.flush_rows = flush_rows
        self._idx: list[np.ndarray] = []
        self._vals: list[torch.Tensor] = []
        self._rows = 0

    def add(self, idx: np.ndarray, values: torch.Tensor) -> None:
        if self.on_cpu:
            self.out[idx] = values.float().numpy()
            return
        self._idx.append(idx)
        self._vals.append(values.float())
        self._rows += len(idx)
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> np.ndarray:
        if self._vals:
            self.out[np.concatenate(self._idx)] = torch.cat(self._vals).cpu().numpy()
            self._idx, self._vals, self._rows = [], [], 0
        return self.out

"""Several processes, one result: the ``torch.distributed`` plumbing of training, encoding and scoring.

Launch a dualist command under ``torchrun`` and each of its processes reads its place from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_process_group` joins them with NCCL on CUDA and gloo on CPU. Without torchrun nothing
changes: :func:`world` is rank 0 of 1 and no collective runs.

How work is split is a pure function of the amount of work and the number of processes, so every
process knows every other's share without asking (:func:`shard_range`):

- **training**: every process builds the same global batch (same seed, same order) and takes its
  contiguous slice of rows; losses are scaled by :func:`loss_share` so that the mean over processes
  DDP takes is the loss of the whole batch, whatever the split;
- **in-batch negatives**: :func:`gather_rows` collects every process's document embeddings with
  ``torch.distributed.nn.functional.all_gather``, whose backward returns to each process the summed
  gradient of its own rows;
- **encoding and teacher scoring**: process (or ``--shard``) ``i`` of ``n`` takes its slice of the
  work and the results are merged in order (:mod:`dualist.index.shards`, :func:`dualist.training.score_candidates`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dualist.errors import ConfigError

__all__ = ["World", "world", "init_process_group", "shard_range", "process_rows", "shard_sizes", "loss_share", "gather_rows",
           "broadcast_object", "barrier", "all_mean", "parse_shard", "local_device"]


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, checkpoints and merged outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place: from the process group when one is up, else from torchrun's environment."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local)
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local)


def init_process_group(device: torch.device | str = "cpu") -> World:
    """Join the other processes when launched by torchrun (``WORLD_SIZE > 1``); a no-op otherwise or
    when a process group is already up. NCCL for a CUDA ``device``, gloo for the CPU."""
    current = world()
    if not current.distributed or dist.is_initialized():
        return current
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return world()


def local_device(device: torch.device) -> torch.device:
    """One GPU per process: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    current = world()
    if device.type == "cuda" and current.distributed:
        if device.index is None:
            device = torch.device("cuda", current.local_rank)
        torch.cuda.set_device(device)
    return device


def shard_range(n: int, index: int, count: int) -> range:
    """Shard ``index`` of ``count`` of ``n`` items: contiguous, in order, sizes differing by at most one.

    >>> [list(shard_range(5, i, 2)) for i in range(2)]
    [[0, 1], [2, 3, 4]]
    >>> [len(shard_range(1, i, 3)) for i in range(3)]
    [0, 0, 1]
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    return range(n * index // count, n * (index + 1) // count)


def process_rows(batch_size: int) -> range:
    """The rows of a ``batch_size``-row batch this process computes: its shard (all rows in one process).

    A process that a short batch leaves without rows computes row 0 at weight 0 (its share,
    :func:`loss_share`, is 0): its graph, and so the order of its collectives in the backward pass,
    is then that of the others.
    """
    current = world()
    rows = shard_range(batch_size, current.rank, current.size)
    return rows if len(rows) else range(1)


def shard_sizes(n: int, count: int) -> list[int]:
    return [len(shard_range(n, i, count)) for i in range(count)]


def loss_share(rows: int, total: int, processes: int) -> float:
    """Factor on a process's mean loss over its ``rows`` of a ``total``-row batch such that the mean
    over ``processes`` of the scaled losses (what DDP's gradient averaging takes) is the batch's
    mean loss: ``rows * processes / total``."""
    return rows * processes / total if total else 0.0


def gather_rows(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every process's ``x`` (``sizes[r]`` rows on rank ``r``) concatenated in rank order, with
    gradients: the backward sums every process's gradient of this process's rows and returns it here.

    Shorter shards are padded to the longest for the collective and cut back to ``sizes`` after it
    (so rows beyond ``sizes[rank]``, e.g. a stand-in row, are dropped).
    """
    if torch.is_grad_enabled() and not x.requires_grad:
        x = x.detach().requires_grad_()  # every process must take part in the backward's collective too
    longest = max(sizes)
    pad = longest - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    with warnings.catch_warnings():  # deprecated in favour of a private module; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(x)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (picklable objects: paths, metric dicts)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_mean(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of ``value`` over the processes (``value`` itself in one process)."""
    current = world()
    if not current.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / current.size


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``, as torchrun's ranks) -> ``(i, n)``; ``""`` -> the process's own place.

    >>> parse_shard("1/4")
    (1, 4)
    """
    if not text:
        current = world()
        return current.rank, current.size
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected i/n (e.g. 0/2 and 1/2 for two shards), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: i must be in 0..n-1 (shards count from 0), n >= 1")
    return index, count

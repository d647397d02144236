"""Sharded corpus encoding: shard ``i`` of ``n`` embeds its contiguous slice of the corpus, and the
shards concatenated in order are the embeddings one process computes.

Under ``torchrun`` every process is a shard (its rank of ``WORLD_SIZE``) and rank 0 merges after the
others are done. Across machines, ``--shard i/n`` runs write their shard beside the output
(``<out>.shards/``) and the run that finds all ``n`` on disk merges them. A shard lives in a folder
named after the fingerprint of what it was made from (model, corpus, shard count, batch size), so
shards of another model or count are never merged; a shard already on disk is not computed again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dualist._io import atomic_write, fingerprint_obj, read_json, write_json
from dualist.distributed import barrier, init_process_group, shard_range, world

__all__ = ["encode_sharded", "remove_shards"]

logger = logging.getLogger(__name__)

_EMBEDDINGS, _IDS = "embeddings.npy", "ids.json"  # ids.json is written last: it marks a complete shard


def encode_sharded(model: Any, dataset: Any, out: str | Path, *, inputs: Any, shard: tuple[int, int] | None = None,
                   batch_size: int = 64, show_progress: bool | None = None) -> tuple[list[str], np.ndarray] | None:
    """Embed the corpus as shard ``shard = (i, n)`` of it; the whole corpus once every shard is done.

    Args:
        out: the output the embeddings are for; shards go to ``<out>.shards/``.
        inputs: what the embeddings depend on besides the corpus (e.g. the model folder's fingerprint
            and the precision); shards of other inputs are not reused or merged.
        shard: ``(i, n)``; default: this process's place (rank of WORLD_SIZE under torchrun, else ``(0, 1)``:
            the whole corpus at once, without shard files).

    Returns:
        ``(ids, embeddings)`` of the whole corpus, in corpus order, to the process that merged: under
        torchrun rank 0, with ``shard`` the call that found every shard done. None to the others.
    """
    from dualist.evaluation.modes import encode_corpus

    current = init_process_group() if shard is None else world()
    together = shard is None and current.distributed  # torchrun: the processes wait for each other
    index, count = shard if shard is not None else (current.rank, current.size)
    ids = list(dataset.corpus)
    if count == 1:
        return encode_corpus(model, dataset, ids, batch_size=batch_size, show_progress=show_progress)
    folder = shards_folder(out) / fingerprint_obj([inputs, ids, count, batch_size])[:16]
    paths = [folder / f"shard-{k:05d}-of-{count:05d}" for k in range(count)]
    mine = shard_range(len(ids), index, count)
    if (paths[index] / _IDS).exists():
        logger.info("shard %d/%d of %s is on disk already", index, count, out)
    else:
        _, emb = encode_corpus(model, dataset, ids[mine.start:mine.stop], batch_size=batch_size,
                               show_progress=show_progress)
        with atomic_write(paths[index] / _EMBEDDINGS, "wb", encoding=None) as fh:
            np.save(fh, emb)
        write_json(paths[index] / _IDS, ids[mine.start:mine.stop], indent=0)
    if together:
        barrier()
        if not current.is_main:
            return None
    missing = [k for k, p in enumerate(paths) if not (p / _IDS).exists()]
    if missing:
        logger.info("shard %d/%d of %s embedded; shards %s remain (the run that completes them merges)",
                    index, count, out, missing)
        return None
    merged_ids = [i for p in paths for i in read_json(p / _IDS)]
    if merged_ids != ids:
        raise RuntimeError(f"the shards in {folder} do not add up to the corpus; delete {shards_folder(out)}")
    return merged_ids, np.concatenate([np.load(p / _EMBEDDINGS) for p in paths])


def shards_folder(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


def remove_shards(out: str | Path) -> None:
    """Delete ``<out>.shards/`` once the merged output is written."""
    shutil.rmtree(shards_folder(out), ignore_errors=True)

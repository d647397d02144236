"""The mining stage: dense hard negatives over the whole corpus, cached as a TREC run.

A dual-encoder retrieves each training query's top-``k`` from the whole corpus; judged documents are
removed, and with a teacher so are the documents it scores like a judged positive (likely unjudged
positives). The run is usable wherever BM25 candidates are (:mod:`dualist.candidates.mining`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dualist._io import fingerprint_files, fingerprint_obj
from dualist.data import Dataset
from dualist.stages import markers
from dualist.stages.inputs import dataset_fingerprint, split_queries

if TYPE_CHECKING:
    from dualist.models import DualEncoderConfig

__all__ = ["MineConfig", "mine_stage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MineConfig:
    """Which dual-encoder mines, for which split, how many documents it keeps, and the teacher that denoises.

    ``model`` is a dual-encoder folder, a model spec (e.g. ``minilm-l6`` for the zero-shot start) or a
    :class:`~dualist.models.DualEncoderConfig`; ``teacher`` an optional cross-encoder folder.
    """

    model: Path | str | DualEncoderConfig
    split: str = "train"
    teacher: Path | None = None
    k: int = 100
    margin: float = 0.0
    batch_size: int = 64


def mine_stage(dataset: Dataset, config: MineConfig, out: str | Path, *, force: bool = False) -> Path:
    """Mine ``config.split``'s hard negatives into the TREC run ``out`` (skipped when up to date); returns ``out``."""
    from dualist.candidates.mining import mine_negatives
    from dualist.data import write_trec_run
    from dualist.models import CrossEncoder, DualEncoder

    out = Path(out)
    model, teacher = config.model, config.teacher
    folders = [Path(p) for p in (model, teacher) if isinstance(p, (str, Path)) and p and Path(p).is_dir()]
    fp = fingerprint_obj(["mine", dataset_fingerprint(dataset, config.split), model, str(teacher), config.k,
                          config.margin,
                          fingerprint_files(sorted(f for p in folders for f in p.rglob("*.safetensors")))])
    if not force and markers.is_done(out, fp):
        logger.info("mined candidates up to date: %s", out)
        return out
    split_queries(dataset, config.split)
    markers.clear_done(out)
    t0 = time.time()
    if isinstance(model, (str, Path)):
        de = DualEncoder.from_pretrained(model) if Path(model).is_dir() else DualEncoder(model=str(model))
    else:
        de = DualEncoder(model)
    ce = CrossEncoder.from_pretrained(teacher) if teacher else None
    run, report = mine_negatives(de, dataset, config.split, k=config.k, teacher=ce, margin=config.margin,
                                 batch_size=config.batch_size)
    write_trec_run(run, out, tag="mined")
    markers.mark_done(out, fp, stage="mine", split=config.split, k=config.k, margin=config.margin,
                      report=dataclasses.asdict(report), seconds=time.time() - t0)
    return out

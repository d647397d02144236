"""What stages read: datasets (with a carved dev split), their fingerprints, and saved models."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dualist._io import fingerprint_files, fingerprint_obj, read_json, read_meta
from dualist.data import Dataset
from dualist.errors import ConfigError

__all__ = ["resolve_dataset", "load_dataset", "dataset_fingerprint", "model_kind", "load_model",
           "model_fingerprint"]

logger = logging.getLogger(__name__)


def resolve_dataset(name: str, data_root: str = "") -> str:
    """A dataset argument as a path: an existing folder, else ``<data_root>/<name>``, else the name."""
    if Path(name).is_dir():
        return name
    root = data_root or os.environ.get("DUALIST_DATA_ROOT", "")
    if root and (Path(root) / name).is_dir():
        return str(Path(root) / name)
    return name


def load_dataset(data: str | Path, *, dev_fraction: float | None = None, seed: int = 13,
                 strict: bool = False) -> Dataset:
    """Load a BEIR dataset; when it has no ``dev`` split and ``dev_fraction`` is set, carve one.

    The carved dev queries are removed from ``train`` (a fixed, seeded slice; docs/architecture.md,
    "Evaluation protocol").
    """
    from dualist.data import carve_dev, load_beir

    ds = load_beir(data, strict=strict)
    if dev_fraction and "dev" not in ds.splits and "train" in ds.splits:
        train, dev = carve_dev(ds.qrels_for("train"), fraction=dev_fraction, seed=seed)
        ds.qrels["train"] = train
        ds.qrels["dev"] = dev
        ds.carved_dev = {"fraction": dev_fraction, "seed": seed}  # type: ignore[attr-defined]
        logger.info("carved a dev split of %d queries from train (fraction %.2f, seed %d)",
                    len(dev), dev_fraction, seed)
    return ds


def dataset_fingerprint(dataset: Dataset, split: str | None = None) -> str:
    """Fingerprint of the dataset files (and of the split's query ids, which carving may change)."""
    base = getattr(dataset, "_fingerprint", None)
    if base is None:
        path = dataset.path
        if path is not None and Path(path).exists():
            base = fingerprint_files([Path(path) / "corpus.jsonl", Path(path) / "queries.jsonl"])
        else:
            base = fingerprint_obj(sorted(dataset.corpus)[:1000] + sorted(dataset.queries)[:1000])
        dataset._fingerprint = base  # type: ignore[attr-defined]  # hashing the corpus once is enough
    if split is None:
        return base
    return fingerprint_obj([base, split, dataset.qrels_for(split)])


def model_kind(path: str | Path) -> str:
    """``"cross_encoder"`` or ``"dual_encoder"``, read from the model folder's ``dualist.json``."""
    meta = read_meta(path) or {}
    cls = str(meta.get("model_class", ""))
    if cls == "CrossEncoder":
        return "cross_encoder"
    if cls == "DualEncoder":
        return "dual_encoder"
    hint = ""
    if (Path(path) / "model" / "dualist.json").exists():
        hint = f"; the trained model is in {Path(path) / 'model'}"
    raise ConfigError(f"{path}: not a dualist model folder (no dualist.json naming a CrossEncoder or DualEncoder);"
                      f" pass the model/ folder written by 'dualist train-teacher' or 'dualist train-student'{hint}")


def load_model(path: str | Path, precision: str = "fp32", **overrides: Any) -> Any:
    """Load a saved :class:`~dualist.models.CrossEncoder` or :class:`~dualist.models.DualEncoder`.

    ``precision`` other than ``"fp32"`` returns the model's inference copy ``quantized(precision)``
    (``int8``, ``bf16``, ``onnx-fp32``, ``onnx-int8``).
    """
    from dualist.models import CrossEncoder, DualEncoder

    cls = CrossEncoder if model_kind(path) == "cross_encoder" else DualEncoder
    model = cls.from_pretrained(path, **overrides)
    return model if precision == "fp32" else model.quantized(precision)


def model_fingerprint(path: Path) -> str:
    """The fingerprint of the training stage that made the model in ``path`` (the path itself when unknown)."""
    from dualist.stages.markers import marker_path

    m = marker_path(path.parent if path.name in ("model", "best", "final") else path)
    return read_json(m)["fingerprint"] if m.exists() else str(path)

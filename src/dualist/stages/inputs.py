"""What stages read: datasets (with a carved dev split), their fingerprints, and saved models."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from dualist._io import fingerprint_files, fingerprint_obj, read_json, read_meta
from dualist.data import Dataset
from dualist.errors import ConfigError

__all__ = ["resolve_dataset", "load_dataset", "graded_train_qrels", "dataset_fingerprint", "with_queries",
           "model_kind", "load_model", "model_fingerprint", "split_queries"]

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
                 strict: bool = False, train_qrels: str | Path | None = None) -> Dataset:
    """Load a BEIR dataset; when it has no ``dev`` split and ``dev_fraction`` is set, carve one.

    ``train_qrels``: a qrels file (BEIR TSV or TREC) that replaces the ``train`` split's judgements,
    e.g. NFCorpus's graded ``extra/train.graded-2-1-0.tsv`` (BEIR ships its train qrels with every
    grade set to 1). Its queries must be queries of the dataset.

    The carved dev queries are removed from ``train`` (a fixed, seeded slice; docs/architecture.md,
    "Evaluation protocol").
    """
    from dualist.data import carve_dev, load_beir, read_qrels
    from dualist.errors import DataError

    ds = load_beir(data, strict=strict)
    if train_qrels:
        qrels = read_qrels(train_qrels)
        unknown = sorted(q for q in qrels if q not in ds.queries)
        if unknown:
            raise DataError(f"{len(unknown)} of its {len(qrels)} queries are not in the dataset's queries.jsonl "
                            f"(e.g. {unknown[:3]})", path=Path(train_qrels),
                            hint="pass the training qrels of this dataset")
        held_out = sorted(set(qrels) & {q for s in ds.splits if s != "train" for q in ds.qrels_for(s)})
        if held_out:
            raise DataError(f"{len(held_out)} of its queries belong to another split (e.g. {held_out[:3]}); "
                            "training on them would leak evaluation queries", path=Path(train_qrels),
                            hint="pass a file of training queries only")
        ds.qrels["train"] = {q: dict(docs) for q, docs in qrels.items()}
        ds.train_qrels_file = Path(train_qrels).name  # type: ignore[attr-defined]
        logger.info("training qrels from %s: %d queries, %d judged pairs", train_qrels, len(qrels),
                    sum(len(d) for d in qrels.values()))
    if dev_fraction and "dev" not in ds.splits and "train" in ds.splits:
        train, dev = carve_dev(ds.qrels_for("train"), fraction=dev_fraction, seed=seed)
        ds.qrels["train"] = train
        ds.qrels["dev"] = dev
        ds.carved_dev = {"fraction": dev_fraction, "seed": seed}  # type: ignore[attr-defined]
        logger.info("carved a dev split of %d queries from train (fraction %.2f, seed %d)",
                    len(dev), dev_fraction, seed)
    return ds


def with_queries(dataset: Dataset, splits: tuple[str, ...], queries: dict[str, str],
                 qrels: dict[str, dict[str, int]]) -> Dataset:
    """A copy of ``dataset`` whose ``splits`` also hold ``queries`` judged by ``qrels`` (e.g. the corpus
    sentences of :func:`dualist.data.pseudo.sentence_queries`, added to ``train`` and to a split of their
    own); a split is created where absent.

    Its fingerprint counts the added queries' texts, which the dataset's files do not hold; the
    original is untouched (the stages given it keep their fingerprints).
    """
    clash = sorted(set(queries) & set(dataset.queries))
    if clash:
        raise ConfigError(f"{len(clash)} added query id(s) already name queries of {dataset.name!r}, e.g. {clash[:3]}")
    unjudged = sorted(set(queries) ^ set(qrels))
    if unjudged:
        raise ConfigError(f"every added query needs judgements and every judgement a query; these do not: "
                          f"{unjudged[:3]}")
    new = dataclasses.replace(dataset, queries={**dataset.queries, **queries},
                              qrels={**dataset.qrels, **{split: {**dataset.qrels.get(split, {}), **qrels}
                                                         for split in splits}})
    for key, value in vars(dataset).items():  # what loading attached (the carved dev split's settings)
        if key not in new.__dict__:
            setattr(new, key, value)
    base = fingerprint_obj([dataset_fingerprint(dataset), sorted(queries.items())])
    new._fingerprint = base  # type: ignore[attr-defined]
    return new


def graded_train_qrels(data: str | Path) -> Path | None:
    """A dataset's graded training qrels where it ships them beside BEIR's (``extra/train.graded*.tsv``,
    as NFCorpus's original 2/1/0 judgements), else None."""
    folder = Path(data) / "extra"
    found = sorted(folder.glob("train.graded*.tsv")) if folder.is_dir() else []
    return found[0] if found else None


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

    A ``path`` that is no folder is a backbone spec (an alias such as ``minilm-l6``, or a Hugging Face
    id): it loads as a zero-shot :class:`~dualist.models.DualEncoder` with default settings.
    ``precision`` other than ``"fp32"`` returns the model's inference copy: ``quantized(p)`` for
    ``p = resolve_precision(precision)`` (``int8``: the fastest int8 copy installed, ONNX Runtime's
    where the onnx extra is; ``torch-int8``, ``bf16``, ``onnx-fp32``, ``onnx-int8``: that copy).
    """
    from dualist.models import CrossEncoder, DualEncoder

    from dualist.models.precision import describe_choice, inference_path, resolve_precision

    resolved = resolve_precision(precision)
    choice = describe_choice(precision)
    if choice:
        logger.info("%s", choice)

    if not Path(path).is_dir():
        logger.info("%s is no model folder: loading it as a zero-shot dual-encoder", path)
        model = DualEncoder(model=str(path), **overrides)
    else:
        cls = CrossEncoder if model_kind(path) == "cross_encoder" else DualEncoder
        model = cls.from_pretrained(path, **overrides)
    model = model if resolved == "fp32" else model.quantized(resolved)
    logger.info("%s: %s", Path(path).name or path, inference_path(model))
    return model


def model_fingerprint(path: Path) -> str:
    """The fingerprint of the training stage that made the model in ``path`` (the path itself when unknown)."""
    from dualist.stages.markers import marker_path

    m = marker_path(path.parent if path.name in ("model", "best", "final") else path)
    return read_json(m)["fingerprint"] if m.exists() else str(path)


def split_queries(dataset: Dataset, split: str) -> dict[str, str]:
    """The queries of ``split``; an error, not an empty run marked done, when it has none."""
    from dualist.errors import DataError

    queries = dataset.queries_for(split)
    if not queries:
        raise DataError(f"split {split!r} has no queries with a text in queries.jsonl",
                        path=getattr(dataset, "path", None),
                        hint="its qrels point at query ids that queries.jsonl does not hold; check both files")
    return queries

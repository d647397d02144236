"""Model cards: a ``README.md`` in every saved student and teacher folder, in the Hub's format.

The card is YAML front matter (``library_name``, ``pipeline_tag``, ``base_model``, ``tags``,
``datasets``, ``model-index`` with the run's figures: what the Hugging Face Hub reads) and a
Markdown body: what the model is, its base model, loss, data, training budget, its dev/test
figures, and how to load it in dualist and in sentence-transformers.

What a card says is kept in ``card.json`` beside it, and each stage adds what it knows:
``save_pretrained`` the architecture, the trainer the loss, data, budget and the dev figure, and
whoever evaluates on test the test figures (:func:`write_model_card` with ``results=``).

>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "dualist.json").write_text(json.dumps({"model_class": "DualEncoder", "base_model": "minilm-l6",
...                                                   "config": {"similarity": "dot", "pooling": "mean"}}))
>>> card = write_model_card(d, training={"loss": "m3se", "dataset": "scifact", "split": "train"},
...                         results={"test": {"ndcg@10": 0.653}})
>>> print(card.read_text().splitlines()[0:3])
['---', 'library_name: sentence-transformers', 'pipeline_tag: sentence-similarity']
>>> "| test | ndcg@10 | 0.6530 |" in card.read_text()
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dualist._io import read_json, write_json

__all__ = ["write_model_card", "render_model_card", "CARD_FILE", "CARD_DATA_FILE"]

CARD_FILE = "README.md"
CARD_DATA_FILE = "card.json"

# dualist's aliases -> the Hub id of the weights they stand for
_HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}

_LOSS_NAMES = {
    "onehot": "one-hot softmax cross-entropy (paper Eq. 1)",
    "mse": "score MSE distillation",
    "margin_mse": "Margin-MSE distillation (Hofstätter et al. 2020)",
    "kl": "softmax CE / KL distillation",
    "rankdistil": "RankDistil (Reddi et al. 2021)",
    "m3se": "multi-margin MSE, M3SE (Menon et al. 2022, Eq. 4)",
}


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_model_card(model_dir: str | Path, **updates: Any) -> Path:
    """Merge ``updates`` into the folder's ``card.json`` and (re)write its ``README.md`` card.

    Known keys: ``training`` (``loss``, ``dataset``, ``split``, ``steps``, ``batch_size``, ``lr``, ...),
    ``results`` (``{"dev": {"ndcg@10": ...}, "test": {...}}``), ``description``. The model's own
    facts (class, base model, similarity) come from its ``dualist.json``.
    """
    model_dir = Path(model_dir)
    data_path = model_dir / CARD_DATA_FILE
    data = read_json(data_path) if data_path.exists() else {}
    data = _merge(data, {k: v for k, v in updates.items() if v is not None})
    write_json(data_path, data)
    meta_path = model_dir / "dualist.json"
    meta = read_json(meta_path) if meta_path.exists() else {}
    path = model_dir / CARD_FILE
    path.write_text(render_model_card(meta, data), encoding="utf-8")
    return path


def render_model_card(meta: dict[str, Any], data: dict[str, Any]) -> str:
    """The card text for a model folder's ``dualist.json`` (``meta``) and card data (``data``)."""
    kind = meta.get("model_class", "DualEncoder")
    cfg = meta.get("config") or {}
    base = str(meta.get("base_model") or cfg.get("model") or "")
    base_hub = _HUB_IDS.get(base, base)
    training = data.get("training") or {}
    results = data.get("results") or {}
    student = kind == "DualEncoder"
    st_loadable = student and cfg.get("shared", True)
    dataset = training.get("dataset")

    front: dict[str, Any] = {
        "library_name": "sentence-transformers" if st_loadable else "transformers",
        "pipeline_tag": "sentence-similarity" if student else "text-ranking",
        "tags": ["dualist", "dual-encoder" if student else "cross-encoder", "information-retrieval"]
                + (["sentence-transformers"] if st_loadable else [])
                + ([f"distillation-{training['loss']}"] if student and training.get("loss") not in (None, "onehot") else []),
    }
    if base_hub and "/" in base_hub and not Path(base_hub).is_absolute():
        front["base_model"] = base_hub
    if dataset:
        front["datasets"] = [f"BeIR/{dataset}"] if dataset in ("scifact", "nfcorpus") else [str(dataset)]
    rows = [(split, m, float(v)) for split, ms in results.items() for m, v in (ms or {}).items()]
    if rows:
        front["model-index"] = [{"name": data.get("name", "dualist-" + ("student" if student else "teacher")),
                                 "results": [{"task": {"type": "text-retrieval" if student else "text-ranking"},
                                              "dataset": {"name": str(dataset or "unknown"), "type": str(dataset or "unknown"),
                                                          "split": split},
                                              "metrics": [{"type": m.replace("@", "_at_"), "value": round(v, 4),
                                                           "name": f"{m} ({split})"}]} for split, m, v in rows]}]

    role = ("a dual-encoder (bi-encoder) retriever: queries and documents are embedded separately and scored by "
            f"{cfg.get('similarity', 'dot')} similarity" if student else
            "a cross-encoder (cross-attention) re-ranker: it scores a (query, document) pair jointly")
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {data.get('name', 'dualist ' + ('student' if student else 'teacher'))}", "",
             data.get("description") or f"This is {role}, {'trained' if training else 'saved'} with dualist, "
             "which implements *In Defense of Dual-Encoders for Neural Ranking* (Menon et al., ICML 2022).", "",
             "## Model", "", f"- Base model: `{base_hub or 'unknown'}`"]
    if cfg.get("num_layers"):
        lines.append(f"- Transformer layers kept: {cfg['num_layers']}")
    if student:
        lines.append(f"- Pooling: {cfg.get('pooling', 'mean')}; normalized: {cfg.get('normalize', True)}; "
                     f"similarity: {cfg.get('similarity', 'dot')} / temperature {cfg.get('temperature', 1.0)}")
        lines.append(f"- Max length: queries {cfg.get('query_max_length', '?')}, documents "
                     f"{cfg.get('doc_max_length', '?')} tokens")
    else:
        lines.append(f"- Pooling / head: {cfg.get('pooling', 'mean')}; max length {cfg.get('max_length', '?')} tokens")
    lines += ["", "## Training", ""]
    if training:
        loss = training.get("loss")
        if loss:
            lines.append(f"- Loss: `{loss}` — {_LOSS_NAMES.get(loss, loss)}")
        if dataset:
            lines.append(f"- Data: {dataset}, split `{training.get('split', 'train')}`")
        budget = {k: training[k] for k in ("steps", "epochs", "batch_size", "lr", "num_negatives", "seed",
                                            "freeze_layers") if training.get(k) is not None}
        if budget:
            lines.append("- Budget: " + ", ".join(f"{k} {v}" for k, v in budget.items()))
        if training.get("select_metric"):
            lines.append(f"- Checkpoint chosen on dev {training['select_metric']} (step {training.get('best_step')})")
    else:
        lines.append("Not trained by dualist (saved from its base model).")
    lines += ["", "## Results", ""]
    if rows:
        lines += ["| split | metric | value |", "|---|---|---:|"] + [f"| {s} | {m} | {v:.4f} |" for s, m, v in rows]
    else:
        lines.append("No figures recorded for this folder yet.")
    lines += ["", "## Usage", "", "In dualist:", "", "```python",
              f"from dualist.models import {kind}", "",
              f"model = {kind}.from_pretrained(\"PATH_OR_HUB_ID\")"]
    if student:
        lines += ['q = model.encode_queries(["what causes ocean warming?"])',
                  'd = model.encode_docs(["Greenhouse gases trap heat ..."])', "scores = model.score_embeddings(q, d)"]
    else:
        lines += ['scores = model.score(["what causes ocean warming?"], ["Greenhouse gases trap heat ..."])']
    lines += ["```", ""]
    if st_loadable:
        lines += ["In sentence-transformers (scores match dualist's up to the temperature, which "
                  "sentence-transformers does not apply):", "", "```python",
                  "from sentence_transformers import SentenceTransformer", "",
                  'model = SentenceTransformer("PATH_OR_HUB_ID")',
                  'emb = model.encode(["what causes ocean warming?", "Greenhouse gases trap heat ..."])', "```", ""]
    elif not student and cfg.get("pooling") == "cls":
        lines += ["In sentence-transformers:", "", "```python", "from sentence_transformers import CrossEncoder", "",
                  'model = CrossEncoder("PATH_OR_HUB_ID")',
                  'scores = model.predict([("what causes ocean warming?", "Greenhouse gases trap heat ...")])', "```", ""]
    elif not student:
        lines += [f"This teacher's `{cfg.get('pooling', 'mean')}` head loads in dualist only.", ""]
    lines += ["Serve it: `dualist index --model PATH --data BEIR_FOLDER --out index/` then "
              "`dualist serve --model PATH --index index/ --data BEIR_FOLDER`." if student else
              "Use it as the re-ranker of `dualist serve --reranker PATH`.", ""]
    return "\n".join(lines)


def card_training_info(dataset: Any, split: str, train_config: Any, result: Any, loss: str) -> dict[str, Any]:
    """What a trainer knows for the card: loss, data, budget, and the chosen checkpoint."""
    name = getattr(dataset, "name", None)
    return {"loss": loss, "dataset": name, "split": split, "steps": result.steps,
            "batch_size": getattr(train_config, "batch_size", None), "lr": getattr(train_config, "lr", None),
            "num_negatives": getattr(train_config, "num_negatives", None), "seed": getattr(train_config, "seed", None),
            "freeze_layers": getattr(train_config, "freeze_layers", None) or None,
            "select_metric": getattr(train_config, "select_metric", None) if result.best_dir is not None else None,
            "best_step": result.best_step if result.best_dir is not None else None}

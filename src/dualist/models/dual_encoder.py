"""The dual-encoder (DE) student: queries and documents embedded independently, scored by similarity.

Two paths share one set of weights:

- **training** — :meth:`DualEncoder.embed_queries` / :meth:`~DualEncoder.embed_docs` return
  embeddings with gradients on the model's device, and :meth:`~DualEncoder.similarity` turns them
  into the ``(B, C)`` scores tensor every loss takes (docs/architecture.md §2);
- **inference** — :meth:`~DualEncoder.encode_queries` / :meth:`~DualEncoder.encode_docs` return
  float32 numpy arrays, computed under ``torch.inference_mode`` in length-sorted, dynamically
  padded batches (input order restored), and :meth:`~DualEncoder.score_embeddings` /
  :meth:`~DualEncoder.score` score them with the same semantics.

Saved folders are sentence-transformers models (``shared=True``), so a trained student is usable
anywhere ``SentenceTransformer(path)`` is. Two things only dualist knows, kept in ``dualist.json``:
``temperature`` (sentence-transformers scores are un-scaled). The query and document lengths are
saved as sentence-transformers' ``query_length`` and ``document_length``: its ``encode_query`` and
``encode_document`` (v6+) give the embeddings of :meth:`~DualEncoder.encode_queries` and
:meth:`~DualEncoder.encode_docs`, while its plain ``encode`` truncates every text at the document
length. With ``shared=False`` the
folder holds ``query/`` and ``doc/``, each a sentence-transformers model for its own tower.

>>> import tempfile, pathlib
>>> from dualist.testing import make_tiny_bert
>>> path = make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")
>>> de = DualEncoder(model=str(path), temperature=0.05)
>>> q = de.encode_queries(["protein folding", "climate"])
>>> d = de.encode_docs(["enzyme binding study", "ocean warming", "sleep"])
>>> q.shape, d.shape, de.score_embeddings(q, d).shape
((2, 32), (3, 32), (2, 3))

Its length (~480 lines) is the two paths plus the sentence-transformers-compatible save/load and the
inference copies (int8, bf16, ONNX) that must stay beside the encode methods they replace; split
further, each half would import the other's private state.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from dualist._io import read_json, read_meta, write_json, write_meta
from dualist.config import opt
from dualist.errors import ConfigError, DualistError
from dualist.models.batching import Collector, length_sorted_batches
from dualist.models.inputs import check_texts, effective_length, model_max_length, with_overrides
from dualist.models.pooling import eval_mode, mean_pool
from dualist.models.precision import check_precision, InferencePrecision, int8_layers, reduced_precision
from dualist.models.backbone import freeze_bottom, load_backbone, save_tokenizer
from dualist.models.card import write_model_card
from dualist.models.frozen_prefix import PrefixCache, prefix_fingerprint
from dualist.models.packed import packable, packed_forward

__all__ = ["DualEncoderConfig", "DualEncoder", "similarity_scores"]

logger = logging.getLogger(__name__)

_QUERY_DIR, _DOC_DIR = "query", "doc"


@dataclass
class DualEncoderConfig:
    """How the student is built and how it scores (written to ``dualist.json`` beside the weights)."""

    model: str = opt("minilm-l6", "backbone: Hugging Face id, local path or alias (minilm-l6)")
    num_layers: int | None = opt(None, "keep only the first k transformer layers of the backbone")
    pooling: Literal["mean", "cls"] = opt("mean", "token vectors to one embedding: mean of tokens or [CLS]")
    normalize: bool = opt(True, "L2-normalise embeddings")
    similarity: Literal["dot", "cosine"] = opt("dot", "score function between query and document embeddings")
    temperature: float = opt(1.0, "scores = similarity / temperature")
    shared: bool = opt(True, "one tower (shared weights) for queries and documents, or two")
    query_max_length: int = opt(32, "queries are truncated to this many tokens")
    doc_max_length: int = opt(256, "documents are truncated to this many tokens")


def _check_config(cfg: DualEncoderConfig) -> None:
    if cfg.pooling not in ("mean", "cls"):
        raise ConfigError(f"pooling must be 'mean' or 'cls', got {cfg.pooling!r}")
    if cfg.similarity not in ("dot", "cosine"):
        raise ConfigError(f"similarity must be 'dot' or 'cosine', got {cfg.similarity!r}")
    if not cfg.temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {cfg.temperature}")
    for name in ("query_max_length", "doc_max_length"):
        if getattr(cfg, name) < 2:
            raise ConfigError(f"{name} must be >= 2 (room for the special tokens), got {getattr(cfg, name)}")


class DualEncoder(torch.nn.Module):
    """A dual-encoder over a Hugging Face backbone: ``score(q, d) = sim(E_q(q), E_d(d)) / temperature``.

    ``DualEncoder(config, **overrides)``: fields of :class:`DualEncoderConfig` given as keywords
    override ``config`` (or the defaults). ``query_model`` and ``doc_model`` are the same module
    when ``shared``; with ``shared=False`` they start as two copies of the backbone.
    """

    def __init__(self, config: DualEncoderConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = with_overrides(DualEncoderConfig, config, overrides)
        _check_config(cfg)
        query_model, tokenizer = load_backbone(cfg.model, cfg.num_layers)
        doc_model = query_model if cfg.shared else copy.deepcopy(query_model)
        self._setup(cfg, query_model, doc_model, tokenizer, base_model=cfg.model)

    def _setup(self, cfg: DualEncoderConfig, query_model, doc_model, tokenizer, base_model: str) -> None:
        self.config = cfg
        self.base_model = base_model  # what the weights were first loaded from (provenance)
        self.query_model = query_model
        self.doc_model = doc_model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # [CLS] pooling and our own padding assume it
        self.prefix_cache: PrefixCache | None = None  # frozen bottom layers computed once per text
        self.inference_dtype: str | None = None  # "int8" / "bf16" on a quantized() copy
        self.quantized_int8 = False  # kept for callers of the int8-only API
        # encode_* through dualist.models.packed where the tower qualifies (BERT on CPU, fp32 or bf16)
        self.packed_inference = True
        limit = model_max_length(query_model, tokenizer)
        self._query_len = effective_length(cfg.query_max_length, limit, "query_max_length")
        self._doc_len = effective_length(cfg.doc_max_length, limit, "doc_max_length")

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.query_model.config.hidden_size)

    # ------------------------------------------------------------------ training path
    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = hidden[:, 0] if self.config.pooling == "cls" else mean_pool(hidden, mask)
        return F.normalize(emb, p=2, dim=-1) if self.config.normalize else emb

    def _embed(self, model: torch.nn.Module, texts: list[str], max_length: int, what: str) -> torch.Tensor:
        if self.inference_dtype is not None:
            raise DualistError(f"this model is a {self.inference_dtype} copy for inference only; "
                               "embed with the fp32 model")
        texts = check_texts(texts, what)
        if not texts:
            return torch.zeros((0, self.dim), device=self.device)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                               return_token_type_ids=False, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self._hidden(model, texts, batch, max_length)
        return self._pool(hidden, batch["attention_mask"])

    def _hidden(self, model: torch.nn.Module, texts: list[str], batch: dict[str, torch.Tensor],
                max_length: int) -> torch.Tensor:
        """The tower's last hidden state for a padded batch of ``texts`` (through the prefix cache if any)."""
        if self.prefix_cache is None:
            return model(**batch).last_hidden_state
        return self.prefix_cache.last_hidden_state(model, self._tower(model), max_length, texts, batch)

    def _tower(self, model: torch.nn.Module) -> str:
        """The prefix cache's name for ``model``'s tower."""
        return "shared" if self.config.shared else ("query" if model is self.query_model else "doc")

    def embed_queries(self, texts: list[str]) -> torch.Tensor:
        """Query embeddings ``(n, d)`` with gradients, on :attr:`device` (the training path)."""
        return self._embed(self.query_model, texts, self._query_len, "queries")

    def embed_docs(self, texts: list[str]) -> torch.Tensor:
        """Document embeddings ``(n, d)`` with gradients, on :attr:`device` (the training path)."""
        return self._embed(self.doc_model, texts, self._doc_len, "docs")

    def similarity(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Scores from embeddings: ``q (B, d)`` with ``d (B, C, d)`` -> ``(B, C)`` (each query with its
        own candidates), or with ``d (N, d)`` -> ``(B, N)`` (every query with every document).
        See :func:`similarity_scores`."""
        return similarity_scores(q, d, self.config.similarity, self.config.temperature)

    # ------------------------------------------------------------------ inference path
    def _encode(self, model: torch.nn.Module, texts, max_length: int, batch_size: int,
                show_progress: bool | None, convert_to_tensor: bool, what: str):
        texts = check_texts(texts, what)
        device = self.device
        out = Collector((len(texts), self.dim), device)

        def tokenize(idx):
            enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                                 return_attention_mask=False, return_token_type_ids=False)
            return {"input_ids": enc["input_ids"]}

        pad = {"input_ids": self.tokenizer.pad_token_id or 0}
        with torch.inference_mode(), eval_mode(model):
            packed = self.packed_inference and packable(model)
            for idx, batch in length_sorted_batches(len(texts), [len(t) for t in texts], tokenize, batch_size,
                                                    pad, device, desc=f"encode {what}",
                                                    show_progress=show_progress):
                if packed and self.prefix_cache is not None:
                    hidden = self.prefix_cache.packed_last_hidden_state(model, self._tower(model), max_length,
                                                                        [texts[i] for i in idx], batch)
                elif packed:
                    hidden = packed_forward(model, batch["input_ids"], batch["attention_mask"])
                else:
                    hidden = self._hidden(model, [texts[i] for i in idx], batch, max_length)
                hidden = hidden.float()  # no copy when already float32
                out.add(idx, self._pool(hidden, batch["attention_mask"]))
        result = out.flush()
        return torch.from_numpy(result) if convert_to_tensor else result

    def encode_queries(self, texts: list[str], batch_size: int = 64, show_progress: bool | None = None,
                       convert_to_tensor: bool = False) -> np.ndarray:
        """Embed queries for search: float32 ``(n, d)`` numpy array (a CPU tensor if ``convert_to_tensor``).

        No gradients, dropout off; batches are sorted by length and padded only as far as needed,
        and the rows come back in input order. ``show_progress=None`` shows a bar on a terminal.
        A BERT tower on CPU (float32, or a bf16/int8 copy) runs
        :func:`~dualist.models.packed.packed_forward` (padding dropped, row-blocked layers: the same
        embeddings, faster); set ``packed_inference = False`` on the model for the Hugging Face forward.
        """
        return self._encode(self.query_model, texts, self._query_len, batch_size, show_progress,
                            convert_to_tensor, "queries")

    def encode_docs(self, texts: list[str], batch_size: int = 64, show_progress: bool | None = None,
                    convert_to_tensor: bool = False) -> np.ndarray:
        """Embed documents for indexing: float32 ``(n, d)``; see :meth:`encode_queries`."""
        return self._encode(self.doc_model, texts, self._doc_len, batch_size, show_progress,
                            convert_to_tensor, "docs")

    def score_embeddings(self, q: np.ndarray, d: np.ndarray) -> np.ndarray:
        """All-pairs scores ``(nq, nd)`` of encoded queries and documents, as :meth:`similarity` does."""
        q = np.asarray(q, dtype=np.float32)
        d = np.asarray(d, dtype=np.float32)
        if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
            raise ValueError(f"expected q (nq, d) and d (nd, d) with the same d, got {q.shape} and {d.shape}")
        if self.config.similarity == "cosine":
            q, d = _unit_rows(q), _unit_rows(d)
        return (q @ d.T) / np.float32(self.config.temperature)

    def score(self, queries: list[str], docs: list[str], batch_size: int = 64) -> np.ndarray:
        """Score aligned ``(queries[i], docs[i])`` pairs: float32 ``(n,)``. Repeated texts are encoded once,
        so re-ranking (one query, many candidates) costs one query encoding."""
        queries, docs = check_texts(queries, "queries"), check_texts(docs, "docs")
        if len(queries) != len(docs):
            raise ValueError(f"queries and docs must pair up, got {len(queries)} and {len(docs)}")
        uq, qi = _unique(queries)
        ud, di = _unique(docs)
        q = self.encode_queries(uq, batch_size=batch_size, show_progress=False)[qi]
        d = self.encode_docs(ud, batch_size=batch_size, show_progress=False)[di]
        if self.config.similarity == "cosine":
            q, d = _unit_rows(q), _unit_rows(d)
        return np.einsum("ij,ij->i", q, d) / np.float32(self.config.temperature)

    # ------------------------------------------------------------------ frozen bottom layers
    def cache_prefix(self, num_layers: int, cache: PrefixCache | None = None, *,
                     max_bytes: int = 4 << 30) -> PrefixCache:
        """Freeze the embeddings and the first ``num_layers`` blocks, and compute them once per distinct text.

        Both paths (``embed_*`` in training, ``encode_*``) then run only the blocks above on the
        cached hidden states (see :mod:`dualist.models.frozen_prefix`); embeddings equal the
        uncached model's up to float rounding. Pass ``cache`` to share one between models whose
        frozen part holds the same weights (e.g. students trained with ``freeze_layers=num_layers``
        from the same start); a cache of other weights is refused. Returns the cache in use.
        """
        if self.inference_dtype is not None:
            raise DualistError(f"cache_prefix works on the fp32 model, not on a {self.inference_dtype} copy")
        cache = cache if cache is not None else PrefixCache(num_layers, max_bytes=max_bytes)
        if cache.num_layers != num_layers:
            raise ConfigError(f"cache_prefix({num_layers}) was given a PrefixCache of {cache.num_layers} layers")
        freeze_bottom(self, num_layers)
        towers = [self.query_model] if self.config.shared else [self.query_model, self.doc_model]
        for tower in towers:
            cache.bind(prefix_fingerprint(tower, num_layers))
        self.prefix_cache = cache
        return cache

    # ------------------------------------------------------------------ reduced precision
    def quantized(self, dtype: InferencePrecision = "int8") -> DualEncoder:
        """An inference-only copy in reduced precision; this model is left unchanged.

        - ``dtype="int8"`` (CPU only): int8 dynamically quantized ``Linear`` layers (all but the
          feed-forward down-projections, see :func:`~dualist.models.precision.int8_layers`), with
          weights per output channel and, on CPUs with VNNI, activations on all 8 bits
          (:func:`~dualist.models.precision.full_range_int8`). Mean cosine to the fp32 embeddings ~0.99.
        - ``dtype="bf16"``: every weight and activation in bfloat16, pooled and returned in float32.
          On CPUs with bf16 instructions (AVX512-BF16, AMX) it is the fastest torch option and the
          closest one (cosine ~0.9999); without them it is emulated and slower than float32 (a
          warning says so).
        - ``dtype="onnx-fp32"`` / ``"onnx-int8"`` (CPU only, ``pip install 'dualist[onnx]'``): the
          transformer run by ONNX Runtime with fused attention, layer-norm and GELU kernels, in
          float32 (the same embeddings, max abs difference ~1e-7) or with int8 weights per output
          channel (see :mod:`dualist.models.onnx_runtime`). Pooling stays in torch.

        The torch copies run the packed forward of :mod:`dualist.models.packed` like the fp32 model;
        the ONNX ones do not. ``bench/RESULTS.md`` has the measured speed of each against
        sentence-transformers. Check retrieval quality before relying on any
        (``bench/bench_encode.py`` does).
        ``embed_*`` and ``save_pretrained`` refuse on the copy.
        """
        check_precision(dtype, self.device)
        cache, self.prefix_cache = self.prefix_cache, None  # fp32 states: not for a copy that computes otherwise
        try:
            new = self._quantized_copy(dtype)
        finally:
            self.prefix_cache = cache
        new.inference_dtype = dtype
        new.quantized_int8 = dtype == "int8"
        return new.eval()

    def _quantized_copy(self, dtype: InferencePrecision) -> DualEncoder:
        if dtype.startswith("onnx"):
            from dualist.models.onnx_runtime import OnnxBody

            query = OnnxBody(self.query_model, int8=dtype == "onnx-int8")
            doc = query if self.config.shared else OnnxBody(self.doc_model, int8=dtype == "onnx-int8")
            # the copy takes the ONNX towers in place of copies of the torch ones it would discard
            new = copy.deepcopy(self, {id(self.query_model): query, id(self.doc_model): doc})
        else:
            new = copy.deepcopy(self)
            new.query_model = reduced_precision(new.query_model, dtype)
            new.doc_model = new.query_model if self.config.shared else reduced_precision(new.doc_model, dtype)
        return new

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | Path) -> Path:
        """Save weights (safetensors), tokenizer, sentence-transformers files and ``dualist.json``.

        ``shared=True``: ``path`` loads with ``sentence_transformers.SentenceTransformer(path)``.
        ``shared=False``: ``path/query`` and ``path/doc`` each load that way, one tower each.
        """
        if self.inference_dtype is not None:
            raise DualistError(f"a {self.inference_dtype} inference copy cannot be saved; save the fp32 model instead")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.config.shared:
            self._save_tower(self.query_model, path, self._doc_len)
        else:
            self._save_tower(self.query_model, path / _QUERY_DIR, self._query_len)
            self._save_tower(self.doc_model, path / _DOC_DIR, self._doc_len)
        write_meta(path, stage="model", config=self.config,
                   extra={"model_class": "DualEncoder", "base_model": self.base_model,
                          "layout": "sentence-transformers" if self.config.shared else "towers:query,doc"})
        write_model_card(path)  # README.md in the Hub's format; trainers add loss, data, figures
        return path

    def _save_tower(self, model: torch.nn.Module, path: Path, max_seq_length: int) -> None:
        import transformers

        from dualist import __version__

        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        save_tokenizer(self.tokenizer, path)
        # The classic sentence-transformers layout: read by v2 through v6 alike.
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.config.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            write_json(path / "2_Normalize" / "config.json", {})
        write_json(path / "modules.json", modules)
        # query_length / document_length: sentence-transformers >= 6 truncates encode_query() input at
        # the first and encode_document() input at the second, as encode_queries / encode_docs do here;
        # plain encode() truncates everything at max_seq_length (the document length).
        write_json(path / "sentence_bert_config.json", {
            "max_seq_length": max_seq_length, "do_lower_case": False,
            "query_length": self._query_len if self.config.shared else max_seq_length,
            "document_length": max_seq_length})
        write_json(path / "1_Pooling" / "config.json", {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.config.pooling == "cls",
            "pooling_mode_mean_tokens": self.config.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        write_json(path / "config_sentence_transformers.json", {
            "__version__": {"dualist": __version__, "transformers": transformers.__version__,
                            "pytorch": torch.__version__},
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": self.config.similarity,
        })

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> DualEncoder:
        """Load a folder written by :meth:`save_pretrained`; keywords override saved config fields.

        A plain sentence-transformers folder (no ``dualist.json``) loads too: pooling, normalisation,
        similarity and maximum length are read from its own files.
        """
        path = Path(path)
        if not path.is_dir():
            raise DualistError(f"{path} is not a directory; expected a folder written by DualEncoder.save_pretrained")
        if "model" in overrides:
            raise ConfigError("from_pretrained loads the weights in `path`; `model` cannot be overridden")
        meta = read_meta(path)
        if meta is not None:
            if meta.get("model_class", "DualEncoder") != "DualEncoder":
                raise DualistError(f"{path} holds a {meta.get('model_class')}, not a DualEncoder")
            saved = dict(meta["config"])
            base_model = meta.get("base_model", saved.get("model"))
        else:
            saved = _config_from_sentence_transformers(path)
            base_model = str(path)
        saved["model"] = str(path)
        cfg = with_overrides(DualEncoderConfig, None, {**saved, **overrides})
        _check_config(cfg)
        split = (path / _QUERY_DIR).is_dir() and (path / _DOC_DIR).is_dir() and meta is not None \
            and not meta["config"].get("shared", True)
        if split:
            if cfg.shared:
                raise ConfigError(f"{path} holds two towers (shared=False); it cannot load with shared=True")
            query_model, tokenizer = load_backbone(str(path / _QUERY_DIR), cfg.num_layers)
            doc_model, _ = load_backbone(str(path / _DOC_DIR), cfg.num_layers)
        else:
            query_model, tokenizer = load_backbone(str(path), cfg.num_layers)
            doc_model = query_model if cfg.shared else copy.deepcopy(query_model)
        obj = cls.__new__(cls)
        torch.nn.Module.__init__(obj)
        obj._setup(cfg, query_model, doc_model, tokenizer, base_model=base_model)
        return obj


def similarity_scores(q: torch.Tensor, d: torch.Tensor, similarity: str = "dot",
                      temperature: float = 1.0) -> torch.Tensor:
    """``sim(q, d) / temperature``, cosine or dot, for ``d`` of shape ``(B, C, dim)`` or ``(N, dim)``.

    >>> q = torch.tensor([[1.0, 0.0]])
    >>> similarity_scores(q, torch.tensor([[[1.0, 0.0], [0.5, 2.0]]]), temperature=0.5)   # (B, C, d)
    tensor([[2., 1.]])
    >>> similarity_scores(q, torch.tensor([[3.0, 4.0], [0.0, 1.0]]), "cosine")  # (N, d)
    tensor([[0.6000, 0.0000]])
    """
    if q.dim() != 2:
        raise ValueError(f"q must be (B, dim), got shape {tuple(q.shape)}")
    if d.dim() not in (2, 3) or d.shape[-1] != q.shape[-1]:
        raise ValueError(f"d must be (B, C, {q.shape[-1]}) or (N, {q.shape[-1]}), got shape {tuple(d.shape)}")
    if d.dim() == 3 and d.shape[0] != q.shape[0]:
        raise ValueError(f"d of shape (B, C, dim) needs B={q.shape[0]} like q, got shape {tuple(d.shape)}")
    if similarity == "cosine":
        q, d = F.normalize(q, p=2, dim=-1), F.normalize(d, p=2, dim=-1)
    elif similarity != "dot":
        raise ConfigError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    scores = torch.bmm(d, q.unsqueeze(-1)).squeeze(-1) if d.dim() == 3 else q @ d.T
    return scores / temperature


def _config_from_sentence_transformers(path: Path) -> dict[str, Any]:
    """DualEncoderConfig fields read from a sentence-transformers folder (defaults where absent)."""
    cfg: dict[str, Any] = {}
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return cfg
    modules = read_json(modules_file)
    types = [m.get("type", "") for m in modules]
    cfg["normalize"] = any(t.endswith("Normalize") for t in types)
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            pool = read_json(path / m["path"] / "config.json")
            mode = pool.get("pooling_mode") or ("cls" if pool.get("pooling_mode_cls_token") else "mean")
            if mode not in ("mean", "cls"):
                raise ConfigError(f"{path}: pooling {mode!r} is not supported (mean or cls)")
            cfg["pooling"] = mode
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        st = read_json(st_cfg)
        if st.get("document_length") or st.get("max_seq_length"):
            cfg["doc_max_length"] = int(st.get("document_length") or st["max_seq_length"])
        if st.get("query_length"):
            cfg["query_max_length"] = int(st["query_length"])
    st_meta = path / "config_sentence_transformers.json"
    if st_meta.exists():
        sim = read_json(st_meta).get("similarity_fn_name")
        if sim in ("dot", "cosine"):
            cfg["similarity"] = sim
        elif sim == "dot_product":
            cfg["similarity"] = "dot"
    return cfg


_int8_layers = int8_layers  # the old private name


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def _unique(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts (first-seen order) and, for each input, its row among them."""
    position: dict[str, int] = {}
    rows = np.fromiter((position.setdefault(t, len(position)) for t in texts), dtype=np.int64, count=len(texts))
    return list(position), rows


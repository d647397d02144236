"""The cross-attention (CA) teacher: query and document read together, one relevance logit out.

The model is the backbone's own ``AutoModelForSequenceClassification`` with ``num_labels=1``, so a
saved teacher is a plain Hugging Face folder: ``AutoModelForSequenceClassification`` and
``sentence_transformers.CrossEncoder`` load it and give the same logits (the folder asks
sentence-transformers for raw logits, not its default sigmoid). For BERT the head is the
checkpoint's pooler (dense + tanh over ``[CLS]``) followed by a fresh linear layer, drawn from
torch's global RNG: ``torch.manual_seed`` makes it reproducible.

``pooling="mean"`` (the default) feeds the mean of the last hidden states to that linear layer
instead of the ``[CLS]`` pooler. Backbones trained with mean pooling, such as all-MiniLM-L6-v2,
give an almost identical ``[CLS]`` state for every input (measured: pooled outputs of unrelated
pairs differ by ~1e-4), so a ``[CLS]`` head starts with no signal and a short fine-tuning cannot
learn. A mean-pooled teacher loads only in dualist; ``pooling="cls"`` keeps the plain Hugging Face
semantics that ``sentence_transformers.CrossEncoder`` reproduces.

``pooling="dual"`` starts the teacher *as its backbone's dual-encoder*: the score is the cosine of the
query and the document each read alone (``[CLS] q [SEP]`` and ``[CLS] d [SEP]``, cut from the pair's
own tokens, mean-pooled) divided by the temperature, plus a linear layer on the mean of the joint
reading's states that starts at zero. At step 0 it ranks exactly as the zero-shot dual-encoder over
the same tokens, so cross-attention is learned on top of the dual-encoder rather than from a
cross-encoder that starts below it; it costs a second pass through the backbone (query and document
alone) on every pair.

>>> import tempfile, pathlib
>>> from dualist.testing import make_tiny_bert
>>> path = make_tiny_bert(pathlib.Path(tempfile.mkdtemp()) / "bert")
>>> _ = torch.manual_seed(0)
>>> ce = CrossEncoder(model=str(path), max_length=64)
>>> ce.score(["protein folding", "climate"], ["enzyme binding", "ocean warming"]).shape
(2,)
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

from dualist._io import read_meta, write_json, write_meta
from dualist.config import opt
from dualist.errors import ConfigError, DualistError
from dualist.models.batching import Collector, length_sorted_batches
from dualist.models.inputs import check_texts, effective_length, model_max_length, with_overrides
from dualist.models.pooling import eval_mode, mean_pool
from dualist.models.precision import check_precision, Float32Head, InferencePrecision, reduced_precision
from dualist.models.backbone import load_pretrained, save_tokenizer
from dualist.models.card import write_model_card
from dualist.models.packed import packable, packed_forward

__all__ = ["CrossEncoderConfig", "CrossEncoder"]

logger = logging.getLogger(__name__)

# sentence-transformers applies a sigmoid to 1-label cross-encoders unless the config says otherwise.
_ST_RAW_LOGITS = {"activation_fn": "torch.nn.modules.linear.Identity"}


@dataclass
class CrossEncoderConfig:
    """How the teacher is built (written to ``dualist.json`` beside the weights)."""

    model: str = opt("minilm-l6", "backbone: Hugging Face id, local path or alias (minilm-l6)")
    num_layers: int | None = opt(None, "keep only the first k transformer layers of the backbone")
    max_length: int = opt(256, "query + document are truncated to this many tokens (the document is cut)")
    pooling: Literal["mean", "cls", "cosine", "dual"] = opt(
        "mean", "head: mean = a linear layer on the mean of the last hidden states; cls = the backbone's [CLS] "
                "pooler (loadable by sentence-transformers); cosine = the cosine of the mean query-token and mean "
                "document-token states / temperature, plus a linear layer on the mean that starts at zero, so a "
                "teacher from a sentence-embedding backbone starts as that backbone's similarity; dual = the cosine of "
                "the query and the document each read alone (the backbone as a dual-encoder) / temperature, plus "
                "that zero-started linear layer on the joint reading: the teacher starts as the zero-shot "
                "dual-encoder (a second backbone pass per pair)")
    temperature: float = opt(0.05, "pooling=cosine or dual: the cosine similarity is divided by this",
                             fingerprint="if-set")


class CrossEncoder(torch.nn.Module):
    """A cross-encoder scorer: ``score(q, d) = head(backbone([CLS] q [SEP] d [SEP]))``.

    ``forward`` is the training path (logits with gradients); ``score`` the inference path.
    """

    def __init__(self, config: CrossEncoderConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = with_overrides(CrossEncoderConfig, config, overrides)
        model, tokenizer = _load_classifier(cfg.model, cfg.num_layers)
        self._setup(cfg, model, tokenizer, base_model=cfg.model)
        if cfg.pooling in ("cosine", "dual"):  # a fresh teacher scores as its backbone's sentence similarity
            torch.nn.init.zeros_(self.model.classifier.weight)
            torch.nn.init.zeros_(self.model.classifier.bias)

    def _setup(self, cfg: CrossEncoderConfig, model, tokenizer, base_model: str) -> None:
        if cfg.pooling not in ("mean", "cls", "cosine", "dual"):
            raise ConfigError(f"pooling must be 'mean', 'cls', 'cosine' or 'dual', got {cfg.pooling!r}")
        if cfg.pooling != "cls" and not isinstance(getattr(model, "classifier", None), torch.nn.Linear):
            raise ConfigError(f"pooling={cfg.pooling!r} needs a backbone whose classification head is one linear "
                              f"layer (BERT-like); {type(model).__name__} has another head: use pooling='cls'")
        if not cfg.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {cfg.temperature}")
        if cfg.max_length < 3:
            raise ConfigError(f"max_length must be >= 3 (room for the special tokens), got {cfg.max_length}")
        self.config = cfg
        self.base_model = base_model
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self._max_len = effective_length(cfg.max_length, model_max_length(model, tokenizer), "max_length")
        self.inference_dtype: str | None = None  # "int8" / "bf16" on a quantized() copy
        # score() through dualist.models.packed where the backbone qualifies (see _packable)
        self.packed_inference = True

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ tokenization
    def _tokenize_pairs(self, queries: list[str], docs: list[str], **kwargs: Any) -> dict[str, Any]:
        """Tokenize pairs, cutting only the document; a query too long for that is cut too (longest first)."""
        try:
            return self.tokenizer(queries, docs, truncation="only_second", max_length=self._max_len, **kwargs)
        except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception on impossible truncation
            pass
        parts = []
        for q, d in zip(queries, docs):
            try:
                parts.append(self.tokenizer([q], [d], truncation="only_second", max_length=self._max_len))
            except Exception:  # noqa: BLE001
                logger.debug("query too long for only_second truncation; cutting it too: %.60r", q)
                parts.append(self.tokenizer([q], [d], truncation="longest_first", max_length=self._max_len))
        merged = {name: [p[name][0] for p in parts] for name in parts[0].keys()}
        if kwargs.get("padding") or kwargs.get("return_tensors"):
            return self.tokenizer.pad(merged, return_tensors=kwargs.get("return_tensors"))
        return merged

    # ------------------------------------------------------------------ training path
    def forward(self, queries: list[str], docs: list[str]) -> torch.Tensor:
        """Logits ``(n,)`` for aligned ``(queries[i], docs[i])`` pairs, with gradients (training path)."""
        if self.inference_dtype is not None:
            raise DualistError(f"this model is a {self.inference_dtype} copy for inference only; "
                               "train the fp32 model")
        queries, docs = check_texts(queries, "queries"), check_texts(docs, "docs")
        if len(queries) != len(docs):
            raise ValueError(f"queries and docs must pair up, got {len(queries)} and {len(docs)}")
        if not queries:
            return torch.zeros(0, device=self.device)
        batch = self._tokenize_pairs(queries, docs, padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self._logits(batch)

    def _logits(self, batch: dict[str, torch.Tensor], packed: bool = False) -> torch.Tensor:
        """Logits ``(n,)`` of a padded batch; ``packed``: through :func:`packed_forward` (inference only,
        when :meth:`_packable` says so)."""
        if self.config.pooling == "cls" and not packed:
            return self.model(**batch).logits[:, 0]
        base = getattr(self.model, self.model.base_model_prefix)
        if self.config.pooling == "cls":
            first = packed_forward(base, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                   cls_only=True)
            pooled = self.model.dropout(base.pooler(first[:, None]))
            return self.model.classifier(pooled)[:, 0]

        def read(b: dict[str, torch.Tensor]) -> torch.Tensor:
            """The backbone's last hidden states of a padded batch ``b``."""
            if packed:
                return packed_forward(base, b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
            return base(**b).last_hidden_state.float()  # no copy when already float32

        hidden = read(batch)
        pooled = mean_pool(hidden, batch["attention_mask"])
        dropout = getattr(self.model, "dropout", None)
        if dropout is not None:
            pooled = dropout(pooled)
        logits = self.model.classifier(pooled)[:, 0]
        if self.config.pooling == "cosine":
            query, doc = self._segments(batch)
            sim = F.cosine_similarity(mean_pool(hidden, query), mean_pool(hidden, doc), dim=-1)
            logits = logits + sim / self.config.temperature
        elif self.config.pooling == "dual":
            sides = [mean_pool(read(side).float(), side["attention_mask"]) for side in self._alone(batch)]
            logits = logits + F.cosine_similarity(*sides, dim=-1) / self.config.temperature
        return logits

    def _alone(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The query and the document of each pair as inputs of their own, ``[CLS] words [SEP]`` right-padded,
        cut from the pair's tokens (so the document is truncated as in the pair): what a dual-encoder reads."""
        ids = batch["input_ids"]
        tok = self.tokenizer
        first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        last = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id or 0
        out = []
        for words in self._segments(batch):
            n = words.sum(1)
            width = int(n.max()) + 2 if len(n) else 2
            # stable sort puts each row's word positions first, in reading order
            order = torch.argsort((~words).to(torch.int8), dim=1, stable=True)[:, :width - 2]
            col = torch.arange(width, device=ids.device)
            side = torch.full((len(ids), width), pad, dtype=ids.dtype, device=ids.device)
            side[:, 0] = first
            side[:, 1:width - 1] = torch.where(col[None, 1:width - 1] <= n[:, None], ids.gather(1, order), pad)
            side[torch.arange(len(ids), device=ids.device), n + 1] = last
            enc = {"input_ids": side, "attention_mask": (col[None] < (n + 2)[:, None]).long()}
            if "token_type_ids" in batch:
                enc["token_type_ids"] = torch.zeros_like(side)
            out.append(enc)
        return out[0], out[1]

    def _segments(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(n, L)`` of the query's and the document's own tokens (special tokens left out).

        The query is what comes before the first separator, the document what comes after it; this
        needs no token type ids, so ``<s> q </s></s> d </s>`` splits as ``[CLS] q [SEP] d [SEP]`` does.
        """
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        special = torch.zeros_like(mask)
        for token in {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.bos_token_id,
                      self.tokenizer.eos_token_id} - {None}:
            special |= ids == token
        sep = (ids == self.tokenizer.sep_token_id).long()
        seps_before = sep.cumsum(1) - sep  # separators strictly before each position
        words = mask & ~special
        return words & (seps_before == 0), words & (seps_before > 0)

    # ------------------------------------------------------------------ inference path
    def score(self, queries: list[str], docs: list[str], batch_size: int = 64,
              show_progress: bool | None = None) -> np.ndarray:
        """Float32 logits ``(n,)`` for aligned pairs, in input order (inference: no grad, no dropout,
        length-sorted and dynamically padded batches). A BERT backbone on CPU (float32, or a bf16/int8
        copy) runs :func:`~dualist.models.packed.packed_forward`: padding dropped, row-blocked layers, and with
        ``pooling="cls"`` the last layer for ``[CLS]`` only; the same logits, faster. Set
        ``packed_inference = False`` on the model for the Hugging Face forward."""
        queries, docs = check_texts(queries, "queries"), check_texts(docs, "docs")
        if len(queries) != len(docs):
            raise ValueError(f"queries and docs must pair up, got {len(queries)} and {len(docs)}")
        out = Collector((len(queries),), self.device)

        def tokenize(idx):
            enc = self._tokenize_pairs([queries[i] for i in idx], [docs[i] for i in idx],
                                       return_attention_mask=False)
            return {k: v for k, v in enc.items() if k != "attention_mask"}

        pad = {"input_ids": self.tokenizer.pad_token_id or 0,
               "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        char_lengths = [len(q) + len(d) for q, d in zip(queries, docs)]
        with torch.inference_mode(), eval_mode(self.model):
            packed = self._packable()
            for idx, batch in length_sorted_batches(len(queries), char_lengths, tokenize, batch_size, pad,
                                                    self.device, desc="score pairs",
                                                    show_progress=show_progress):
                out.add(idx, self._logits(batch, packed=packed))
        return out.flush()

    def _packable(self) -> bool:
        """Whether :meth:`score` can run the backbone through :func:`packed_forward`: a BERT body that
        :func:`packable` accepts, and for ``pooling="cls"`` the BERT head (pooler, dropout, a linear
        classifier, or the bf16 copy's :class:`Float32Head`). The backbone's layers may be reduced-precision
        (the int8 copy's bf16 down-projections, the bf16 copy): the packed forward calls them as they are."""
        if not self.packed_inference:
            return False
        base = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        if base is None or not packable(base):
            return False
        if self.config.pooling != "cls":
            return True
        return (type(self.model).__name__ == "BertForSequenceClassification"
                and getattr(base, "pooler", None) is not None
                and isinstance(getattr(self.model, "classifier", None), torch.nn.Linear | Float32Head))

    # ------------------------------------------------------------------ reduced precision
    def quantized(self, dtype: InferencePrecision = "int8") -> CrossEncoder:
        """An inference-only copy in reduced precision for :meth:`score`; this model is left unchanged.

        ``dtype="int8"`` (CPU only): int8 dynamically quantized ``Linear`` layers (not the
        feed-forward down-projections nor the 1-logit head), weights per output channel,
        activations on all 8 bits on CPUs with VNNI. ``dtype="bf16"``: the backbone in
        bfloat16 and the head in float32, so logits stay continuous; fast only on CPUs with bf16
        instructions (AVX512-BF16, AMX) or on a GPU. See :meth:`DualEncoder.quantized
        <dualist.models.DualEncoder.quantized>` for measured speed and closeness; check re-ranking
        quality before relying on either (``bench/bench_teacher_scoring.py`` does).
        ``dtype="onnx-fp32"`` / ``"onnx-int8"`` (CPU only, ``pip install 'dualist[onnx]'``): the
        backbone run by ONNX Runtime (:mod:`dualist.models.onnx_runtime`), the mean-pooled head in
        torch float32; with ``pooling="cls"`` the whole classifier runs in ONNX Runtime.
        ``forward`` and ``save_pretrained`` refuse on the copy.
        """
        check_precision(dtype, self.device)
        if dtype.startswith("onnx"):
            from dualist.models.onnx_runtime import OnnxBody

            types = "token_type_ids" in self.tokenizer.model_input_names
            int8 = dtype == "onnx-int8"
            if self.config.pooling == "cls":  # the whole classifier
                torch_part = self.model
                onnx_part = OnnxBody(torch_part, int8=int8, token_type_ids=types, output="logits")
            else:  # the backbone; pooling and head stay in torch
                torch_part = getattr(self.model, self.model.base_model_prefix)
                onnx_part = OnnxBody(torch_part, int8=int8, token_type_ids=types)
            # the copy takes the ONNX part in place of a copy of the torch part it would discard
            new = copy.deepcopy(self, {id(torch_part): onnx_part})
        else:
            new = copy.deepcopy(self)
            new.model = reduced_precision(new.model, dtype, keep_fp32=("classifier",))
        new.inference_dtype = dtype
        return new.eval()

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | Path) -> Path:
        """Save a Hugging Face sequence-classification folder (safetensors) plus ``dualist.json``."""
        if self.inference_dtype is not None:
            raise DualistError(f"a {self.inference_dtype} inference copy cannot be saved; save the fp32 model instead")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.config.sentence_transformers = dict(_ST_RAW_LOGITS)
        self.model.save_pretrained(path)
        # Saved as the tokenizer's limit so other loaders (sentence-transformers) truncate as we do.
        limit = self.tokenizer.model_max_length
        try:
            self.tokenizer.model_max_length = self._max_len
            save_tokenizer(self.tokenizer, path)
        finally:
            self.tokenizer.model_max_length = limit
        _refuse_foreign_loaders(path, self.config.pooling)
        write_meta(path, stage="model", config=self.config,
                   extra={"model_class": "CrossEncoder", "base_model": self.base_model,
                          "layout": "transformers-sequence-classification"})
        write_model_card(path)  # README.md in the Hub's format; trainers add loss, data, figures
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> CrossEncoder:
        """Load a folder written by :meth:`save_pretrained` (or any 1-label HF cross-encoder folder);
        keywords override saved config fields."""
        path = Path(path)
        if not path.is_dir():
            raise DualistError(f"{path} is not a directory; expected a folder written by CrossEncoder.save_pretrained")
        if "model" in overrides:
            raise ConfigError("from_pretrained loads the weights in `path`; `model` cannot be overridden")
        meta = read_meta(path)
        saved: dict[str, Any] = {}
        base_model = str(path)
        if meta is not None:
            if meta.get("model_class", "CrossEncoder") != "CrossEncoder":
                raise DualistError(f"{path} holds a {meta.get('model_class')}, not a CrossEncoder")
            saved = dict(meta["config"])
            base_model = meta.get("base_model", saved.get("model", base_model))
        saved["model"] = str(path)
        cfg = with_overrides(CrossEncoderConfig, None, {**saved, **overrides})
        model, tokenizer = _load_classifier(str(path), cfg.num_layers)
        obj = cls.__new__(cls)
        torch.nn.Module.__init__(obj)
        obj._setup(cfg, model, tokenizer, base_model=base_model)
        return obj


def _refuse_foreign_loaders(path: Path, pooling: str) -> None:
    """Make ``sentence_transformers.CrossEncoder`` (v6+) refuse a teacher whose scores it cannot reproduce.

    Without these files it would load a ``pooling="mean"``, ``"cosine"`` or ``"dual"`` teacher as a plain
    sequence classifier, score it through the ``[CLS]`` pooler and return other scores, silently.
    ``config_sentence_transformers.json`` declares a requirement no environment meets, with the
    reason, which sentence-transformers checks before loading anything; ``modules.json`` names a
    module that is not sentence-transformers' own, which it refuses to import even where the
    requirement is not read. A ``pooling="cls"`` teacher gets neither and loads there unchanged.
    """
    files = (path / "modules.json", path / "config_sentence_transformers.json")
    if pooling == "cls":
        for f in files:
            f.unlink(missing_ok=True)
        return
    reason = (f"This folder is a dualist cross-encoder with pooling={pooling!r}: it scores from the mean of the "
              "token states, which sentence_transformers.CrossEncoder does not reproduce (it would score through "
              "the [CLS] pooler and return other scores). Load it with "
              "dualist.models.CrossEncoder.from_pretrained(path), or train the teacher with --pooling cls for a "
              "folder that sentence-transformers loads.")
    write_json(files[0], [{"idx": 0, "name": "0", "path": "",
                           "type": f"dualist.models.cross_encoder.{pooling.capitalize()}PooledTeacher"}])
    write_json(files[1], {"model_type": "CrossEncoder",
                          "requirements": {"python": {"specifier": "<0", "reason": reason}}})


def _load_classifier(spec: str, num_layers: int | None):
    from transformers import AutoModelForSequenceClassification

    # ignore_mismatched_sizes: a checkpoint with a k-label head gets a fresh 1-label one.
    return load_pretrained(spec, AutoModelForSequenceClassification, num_layers, num_labels=1,
                           ignore_mismatched_sizes=True)

"""ONNX Runtime inference for a Hugging Face encoder body (the ``onnx-fp32`` / ``onnx-int8`` copies).

:class:`OnnxBody` stands in for the transformers body (``BertModel`` and the like) of an
inference copy made by ``DualEncoder.quantized("onnx-fp32")`` or ``CrossEncoder.quantized(...)``:
called with the same padded batches, it returns an object with ``last_hidden_state``, so pooling,
heads, length-sorted batching and input-order scatter stay the torch code they are.

How the graph is made, once per copy, in a temporary folder (nothing is cached on disk):

1. the body is exported with eager attention (``torch.onnx.export``, TorchScript exporter), so
   that ONNX Runtime's transformer optimizer recognises the attention pattern;
2. for BERT-like bodies that optimizer fuses embeddings + layer norm, attention, bias + GELU and
   residual + layer norm into single kernels (other model types keep the plain graph, which
   ONNX Runtime still optimizes at load time);
3. ``onnx-int8`` then quantizes every MatMul's weights to int8, per output channel, with int8
   activations computed on the fly (``onnxruntime.quantization.quantize_dynamic``).

The fp32 graph computes the same function as the torch body (max abs difference ~1e-7 on
MiniLM); ``bench/bench_encode.py`` and ``bench/bench_teacher_scoring.py`` measure speed and
ranking quality against sentence-transformers. Needs ``pip install 'dualist[onnx]'``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dualist.errors import DualistError
from dualist.models.frozen_prefix import weights_fingerprint

__all__ = ["OnnxBody", "onnx_available"]

OPSET = 17


def onnx_available() -> bool:
    """True when ``onnx`` and ``onnxruntime`` import (the ``dualist[onnx]`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _require_onnx() -> None:
    if not onnx_available():
        raise DualistError("the onnx-fp32 / onnx-int8 copies need ONNX Runtime: pip install 'dualist[onnx]' "
                           "(onnx and onnxruntime)")


class _Traced(torch.nn.Module):
    """The body as a function of positional tensors, returning one output field."""

    def __init__(self, body: torch.nn.Module, names: tuple[str, ...], output: str):
        super().__init__()
        self.body = body
        self.names = names
        self.output = output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return getattr(self.body(**dict(zip(self.names, tensors))), self.output)


class OnnxBody(torch.nn.Module):
    """A transformers model run by ONNX Runtime on CPU, for inference only.

    ``OnnxBody(body, int8=False, token_type_ids=False, output="last_hidden_state")`` exports
    ``body`` (left unchanged) at construction. Calling it with ``input_ids``, ``attention_mask``
    and, when exported with them, ``token_type_ids`` (CPU tensors) returns an object whose
    ``output`` field is a float32 CPU tensor, as the torch model's is (``output="logits"`` for a
    whole sequence-classification model). ``config`` is the model's config. It holds no weights of
    its own for torch: a zero-size parameter keeps ``next(model.parameters()).device`` meaningful,
    and ``source_fingerprint`` (the hash of ``body``'s weights and of how it was exported) stands
    for its weights in :func:`~dualist.models.frozen_prefix.weights_fingerprint`.
    """

    def __init__(self, body: torch.nn.Module, *, int8: bool = False, token_type_ids: bool = False,
                 output: str = "last_hidden_state", threads: int | None = None):
        super().__init__()
        _require_onnx()
        if next(body.parameters()).device.type != "cpu":
            raise DualistError("ONNX Runtime inference here runs on CPU; move the model to CPU first, or use "
                               "dtype='bf16' on an accelerator")
        self.config = body.config
        self.int8 = int8
        self.output = output
        self.input_names: tuple[str, ...] = ("input_ids", "attention_mask") + (
            ("token_type_ids",) if token_type_ids else ())
        self._anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        self.source_fingerprint = f"{weights_fingerprint(body)}:int8={int8}:{output}:{self.input_names}"
        self.fused: dict[str, int] = {}
        self.session = self._build(body, threads or torch.get_num_threads())

    def _build(self, body: torch.nn.Module, threads: int) -> Any:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="dualist-onnx-") as tmp:
            path = Path(tmp) / "body.onnx"
            self._export(body, path)
            path = self._optimize(path)
            if self.int8:
                path = self._quantize(path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, body: torch.nn.Module, path: Path) -> None:
        body = copy.deepcopy(body).float().eval()
        set_impl = getattr(body, "set_attn_implementation", None)
        if set_impl is not None:
            with contextlib.suppress(Exception):  # a body without an eager path exports as it is
                set_impl("eager")
        dummy = {"input_ids": torch.full((2, 8), 101, dtype=torch.long),
                 "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long),
                 "token_type_ids": torch.zeros((2, 8), dtype=torch.long)}
        axes = {name: {0: "batch", 1: "length"} for name in self.input_names}
        axes[self.output] = {0: "batch", 1: "length"} if self.output == "last_hidden_state" else {0: "batch"}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and exporter deprecation chatter
            torch.onnx.export(_Traced(body, self.input_names, self.output),
                              tuple(dummy[n] for n in self.input_names), str(path),
                              input_names=list(self.input_names), output_names=[self.output],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)

    def _optimize(self, path: Path) -> Path:
        if getattr(self.config, "model_type", None) != "bert":
            return path
        from onnxruntime.transformers import optimizer

        heads, hidden = self.config.num_attention_heads, self.config.hidden_size
        with _quiet_onnxruntime_logs():
            model = optimizer.optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                                             opt_level=1, use_gpu=False)
        self.fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        out = path.with_name("body.opt.onnx")
        model.save_model_to_file(str(out))
        return out

    def _quantize(self, path: Path) -> Path:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = path.with_name("body.int8.onnx")
        with _quiet_onnxruntime_logs():
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given[name]
            feed[name] = (np.zeros(input_ids.shape, dtype=np.int64) if value is None
                          else value.detach().cpu().numpy().astype(np.int64, copy=False))
        (value,) = self.session.run([self.output], feed)
        return SimpleNamespace(**{self.output: torch.from_numpy(value)})

    def __deepcopy__(self, memo: dict) -> OnnxBody:
        return self  # an ONNX Runtime session is immutable and cannot be copied


@contextlib.contextmanager
def _quiet_onnxruntime_logs():
    """The optimizer and quantizer log advice at WARNING through the root logger; keep it at debug."""
    names = ("", "onnxruntime", "onnxruntime.transformers", "onnxruntime.quantization")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)

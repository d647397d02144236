"""Reduced-precision inference copies: torch int8 (outlier channels in float32) and bf16, and their checks.

The ONNX Runtime copies are in :mod:`dualist.models.onnx_runtime`; what the CPU can do comes from
:mod:`dualist.models.cpu`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from dualist.errors import ConfigError, DualistError
from dualist.models.cpu import cpu_features

__all__ = ["Precision", "InferencePrecision", "check_precision", "resolve_precision", "describe_choice", "int8_layers", "Bf16Linear", "Float32Head", "reduced_precision",
           "full_range_int8", "native_cpu_bf16", "OUTLIER_RATIO", "inference_path"]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "int8", "torch-int8", "bf16", "onnx-fp32", "onnx-int8"]
"""What ``--precision`` of ``index``, ``search``, ``rerank`` and ``serve`` accepts: the model as trained (fp32)
or one of its inference copies; ``int8`` is the fastest int8 copy installed (:func:`resolve_precision`)."""

InferencePrecision = Literal["int8", "bf16", "onnx-fp32", "onnx-int8"]
"""Inference copies (``DualEncoder.quantized`` / ``CrossEncoder.quantized``): torch int8 or bf16, or the
backbone run by ONNX Runtime in float32 or int8 (:mod:`dualist.models.onnx_runtime`)."""


def check_precision(dtype: Any, device: torch.device | None = None) -> str:
    """``dtype`` if it names an inference copy; with ``device``, also that the copy can run there
    (every one but bf16 runs on CPU only)."""
    if dtype not in get_args(InferencePrecision):
        raise ConfigError(f"dtype must be one of {', '.join(get_args(InferencePrecision))}, got {dtype!r}")
    if device is not None and dtype != "bf16" and device.type != "cpu":
        raise DualistError(f"{dtype} inference runs on CPU; this model is on {device}; "
                           "use dtype='bf16' on an accelerator")
    return dtype


def resolve_precision(precision: str) -> str:
    """The copy a ``--precision`` name loads: ``"fp32"`` or an :data:`InferencePrecision` for ``quantized``.

    ``"int8"`` is the fastest int8 copy installed: ONNX Runtime's (``"onnx-int8"``) where the
    ``dualist[onnx]`` extra is, torch's (``"int8"``) otherwise. ONNX Runtime's was the faster one on
    every CPU both ran on (document encoding against sentence-transformers: 1.87x against 1.45x on an
    AVX2-only Zen 3, 2.55x against 1.95x on a Zen 4 with AVX-512 VNNI; ``bench/RESULTS.md``), and it
    runs its own int8 kernels where torch's need VNNI to use all 8 bits. ``"torch-int8"`` asks for
    torch's copy by name. Every other name is the copy of that name.
    """
    if precision not in get_args(Precision):
        raise ConfigError(f"precision must be one of {', '.join(get_args(Precision))}, got {precision!r}")
    if precision == "int8":
        from dualist.models.onnx_runtime import onnx_available

        return "onnx-int8" if onnx_available() else "int8"
    return "int8" if precision == "torch-int8" else precision


def describe_choice(precision: str) -> str:
    """One log line saying which copy ``--precision PRECISION`` loads and why, where the name alone
    does not say it (``int8``); empty otherwise."""
    if precision != "int8":
        return ""
    if resolve_precision(precision) == "onnx-int8":
        return ("--precision int8: ONNX Runtime's int8 copy (onnx-int8), the faster int8 path on the CPUs "
                "measured; --precision torch-int8 loads torch's")
    return ("--precision int8: torch's int8 copy; pip install 'dualist[onnx]' for ONNX Runtime's, the faster "
            "int8 path on the CPUs measured (1.87x against 1.45x the peer's encoding on AVX2)")


def int8_layers(model: torch.nn.Module) -> set[str]:
    """Names of the Linear layers worth int8: all but the feed-forward down-projections (in > out),
    whose post-GELU inputs have outliers that per-tensor int8 flattens (MiniLM on NFCorpus queries:
    mean cosine to fp32 0.94 with them quantized, 0.985 without). One-output heads (in > out) stay
    float32 too."""
    return {name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.in_features <= m.out_features}


class Bf16Linear(torch.nn.Module):
    """A ``Linear`` computed in bfloat16 (weights stored so) for float32 inputs and outputs."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else torch.nn.Parameter(
            linear.bias.detach().to(torch.bfloat16), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


class Float32Head(torch.nn.Module):
    """A final ``Linear`` kept in float32 behind a bf16 backbone, so scores stay continuous (a
    bf16 logit has 8 significant bits: re-ranking 100 candidates would be full of ties)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear.float()

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float())


def reduced_precision(model: torch.nn.Module, dtype: str, *, keep_fp32: Sequence[str] = ()) -> torch.nn.Module:
    """``model`` (changed in place and returned) for inference in ``dtype``.

    - ``"int8"``: dynamic int8 quantization of the Linear layers of :func:`int8_layers` (CPU only):
      weights per output channel, activations per call, on all 8 bits where :func:`full_range_int8`
      (on 7 elsewhere), outlier input channels in float32 (:data:`OUTLIER_RATIO`); the layers kept
      out of int8 run in bf16 where the CPU has bf16 instructions. On the trained SciFact teacher
      (all 29,966 test pairs) its scores have Pearson r 0.9996 to fp32 and re-rank nDCG@10 0.0015
      below fp32's; with per-tensor weights, 7-bit activations and no outlier split, r was 0.990
      (2,000 pairs).
    - ``"bf16"``: every weight in bfloat16, except the Linear children named in ``keep_fp32``
      (heads), which stay float32 behind :class:`Float32Head`. Fast where the CPU has bf16
      instructions (AVX512-BF16, AMX) or on a GPU; emulated, and slower than float32, elsewhere.
    """
    if check_precision(dtype).startswith("onnx"):
        raise ConfigError(f"{dtype!r} replaces the model rather than converting it: use DualEncoder.quantized / "
                          "CrossEncoder.quantized, or dualist.models.onnx_runtime.OnnxBody")
    device = next(model.parameters()).device
    check_precision(dtype, device)
    model.eval()
    if dtype == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # torch.ao eager quantization is deprecated upstream in favour of torchao, but still ships
        # with torch and needs no extra dependency; its warnings would only repeat that.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
            spec = {name: per_channel_dynamic_qconfig for name in int8_layers(model)}
            mapping = {torch.nn.Linear: _int8_linear_class()}
            model = quantize_dynamic(model, spec, dtype=torch.qint8, mapping=mapping)
        if native_cpu_bf16():  # the layers kept out of int8 run in bf16 where that is native
            for name, m in list(model.named_modules()):
                if isinstance(m, torch.nn.Linear) and m.out_features > 1 and name not in spec:
                    parent, _, attr = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, attr, Bf16Linear(m))
        return model
    if device.type == "cpu" and not native_cpu_bf16():
        logger.warning("this CPU has no bf16 instructions (AVX512-BF16 / AMX): bf16 inference is emulated "
                       "and slower than float32")
    model.to(torch.bfloat16)
    for name in keep_fp32:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            setattr(model, name, Float32Head(head))
    return model


def full_range_int8() -> bool:
    """Whether int8 activations may use all 8 bits here: on CPUs with VNNI (AVX512-VNNI, AVX-VNNI) the
    int8 kernels accumulate in 32 bits. Without it they add pairs of products in 16 bits, which
    saturates unless activations keep to 7 bits (torch's default ``reduce_range=True``)."""
    return cpu_features().vnni


OUTLIER_RATIO = 3.0
"""int8 copies: an input channel whose largest magnitude in a call exceeds this many times the median
channel's is computed in float32 (see :func:`_int8_linear_class`)."""


@functools.cache
def _int8_linear_class() -> type:
    """torch's dynamically quantized Linear with outlier channels split off, and full-range activations
    where :func:`full_range_int8`.

    Activations are quantized with one scale per call, so a few input channels far larger than the
    rest (all-MiniLM-L6-v2: channel 99 of every feed-forward input reaches ~28 where the median
    channel peaks at ~2) set the step for all. As in LLM.int8() (Dettmers et al., 2022), those
    channels are found in each call and multiplied in float32 with the matching weight columns; the
    int8 product sees the rest, with a step several times finer.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class Int8Linear(DynamicLinear):
        """int8 weights per output channel; activations quantized per call, outlier channels in float32."""

        @classmethod
        def from_float(cls, mod, use_precomputed_fake_quant=False):
            q = super().from_float(mod, use_precomputed_fake_quant=use_precomputed_fake_quant)
            q.register_buffer("float_weight", mod.weight.detach().float().clone())
            q.reduce_range = not full_range_int8()  # chosen for the CPU the copy is made on
            return q

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1]).float()
            peaks = flat.abs().amax(0) if len(flat) else flat.new_zeros(flat.shape[-1])
            inlier = peaks <= OUTLIER_RATIO * peaks.median()
            if not bool(inlier.all()):
                outliers = (~inlier).nonzero().squeeze(1)
                y = torch.ops.quantized.linear_dynamic(flat * inlier, self._packed_params._packed_params,
                                                       reduce_range=self.reduce_range)
                y.addmm_(flat.index_select(1, outliers), self.float_weight.index_select(1, outliers).t())
            else:
                y = torch.ops.quantized.linear_dynamic(flat, self._packed_params._packed_params,
                                                       reduce_range=self.reduce_range)
            return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)

    return Int8Linear


def native_cpu_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX): then bf16 layers run natively."""
    return cpu_features().bf16


def inference_path(model: Any) -> str:
    """How ``model`` (a ``DualEncoder`` or ``CrossEncoder``, or a ``quantized()`` copy) computes on
    this machine, in one line for logs: its precision, the forward it runs and the CPU features the
    choice was made by, e.g. ``fp32, packed forward with oneDNN products (CPU AVX2 (capped))``."""
    from dualist.models.packed import onednn_products, packable

    dtype = getattr(model, "inference_dtype", None) or "fp32"
    device = getattr(model, "device", torch.device("cpu"))
    if device.type != "cpu":
        return f"{dtype} on {device}"
    features = cpu_features()
    if dtype.startswith("onnx"):
        forward = "ONNX Runtime (kernels chosen from CPUID; the environment's caps do not apply)"
    else:
        if hasattr(model, "_packable"):
            packed = model._packable()
        else:
            body = getattr(model, "doc_model", None)
            packed = bool(getattr(model, "packed_inference", False)) and body is not None and packable(body)
        if not packed:
            forward = "Hugging Face forward"
        elif dtype == "fp32" and onednn_products():
            forward = "packed forward with oneDNN products"
        elif dtype == "fp32":
            forward = "packed forward with addmm products"
        else:
            forward = "packed forward"
        cache = getattr(model, "prefix_cache", None)
        if cache is not None:
            forward += f", the first {cache.num_layers} layers' states cached per text"
    detail = {"int8": "8-bit activations (VNNI)" if features.vnni else "7-bit activations (no VNNI)",
              "bf16": "native bf16" if features.bf16 else "emulated bf16, slower than fp32"}.get(dtype)
    return f"{dtype}{' (' + detail + ')' if detail else ''}, {forward} (CPU {features.describe()})"

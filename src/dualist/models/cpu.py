"""What this CPU can do, as the inference paths see it: one place that every CPU-specific choice asks.

The reduced-precision copies choose their kernels by the CPU's instruction sets:

- **bf16** layers run natively only with AVX512-BF16 or AMX; elsewhere torch emulates them and they
  are several times slower than float32 (on a 2-core AVX2 EPYC, bf16 encoding ran at 0.20x the
  float32 peer), so no default picks bf16 there.
- **int8** activations use all 8 bits only with VNNI, whose kernels accumulate in 32 bits. Without
  it (AVX2) fbgemm adds pairs of u8 x s8 products in 16 bits, which saturates unless activations
  keep to 7 bits (``reduce_range=True``).

torch reads the CPU through cpuinfo and ignores the usual caps, so a capped process would still
take the AVX-512 branches. :func:`cpu_features` honours them: ``ATEN_CPU_CAPABILITY=avx2`` (or
``default``), ``ONEDNN_MAX_CPU_ISA=AVX2`` (or any ISA below AVX-512) and
``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` turn the AVX-512 features off, so an AVX-512 machine run with the
caps makes the choices an AVX2-only machine makes. ``FBGEMM_ENABLE_INSTRUCTIONS`` set to ``AVX2``,
``AVX512`` or ``AVX512_256`` alone also turns VNNI off: fbgemm then runs its 16-bit-accumulating
kernels, which saturate full-range int8 activations.

:data:`AVX2_CAPS` is the whole set that makes one library stack behave as on an AVX2-only CPU:
torch's own kernels (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``, dualist's packed
products and bf16), MKL (``MKL_ENABLE_INSTRUCTIONS``, torch's ``addmm``: the Hugging Face forward
and sentence-transformers) and fbgemm (``FBGEMM_ENABLE_INSTRUCTIONS``, torch's int8). ONNX
Runtime has no such switch (its kernels are chosen from CPUID when it loads), so its copies are not
capped. The caps are read when each library loads: set them before Python starts.
"""

from __future__ import annotations

import dataclasses
import os

import torch

__all__ = ["CpuFeatures", "cpu_features", "AVX2_CAPS", "active_caps", "isa_flags"]

# oneDNN ISA names that allow AVX-512 (VNNI, BF16, AMX) instructions; anything else caps below it.
_AVX512_ISAS = ("AVX512", "AVX10", "AMX")

AVX2_CAPS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}
"""The environment that makes torch, oneDNN, MKL and fbgemm run as on an AVX2-only CPU (ONNX Runtime
has no equivalent)."""

_CAP_VARS = (*AVX2_CAPS, "DNNL_MAX_CPU_ISA")
# fbgemm ISA names (FBGEMM_ENABLE_INSTRUCTIONS) whose int8 kernels accumulate in 32 bits
_FBGEMM_VNNI = ("AVX512_E1", "AVX512_E1_256")
# flags of /proc/cpuinfo worth a benchmark record
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets the inference paths choose by, after the environment's caps."""

    capability: str
    """torch's dispatch level (``torch.backends.cpu.get_cpu_capability()``): ``AVX512``, ``AVX2``, …"""
    vnni: bool
    """int8 dot products accumulate in 32 bits (AVX512-VNNI or AVX-VNNI): full-range int8 activations."""
    bf16: bool
    """native bf16 arithmetic (AVX512-BF16 or AMX)."""
    capped: bool
    """an environment cap (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA) turned features off."""

    def describe(self) -> str:
        """One line for logs and benchmark records, e.g. ``AVX512 vnni bf16``."""
        flags = [name for name in ("vnni", "bf16") if getattr(self, name)]
        return " ".join([self.capability, *flags] + (["(capped)"] if self.capped else []))


def _check(name: str) -> bool:
    check = getattr(getattr(torch, "cpu", None), name, None)
    return bool(check is not None and check())


def _capped_below_avx512() -> bool:
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    fbgemm = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
    if aten and not aten.startswith("avx512"):
        return True
    if fbgemm == "AVX2":
        return True
    return bool(isa) and isa != "ALL" and not isa.startswith(_AVX512_ISAS)


def _fbgemm_without_vnni() -> bool:
    """fbgemm told to use kernels without VNNI (``FBGEMM_ENABLE_INSTRUCTIONS``): int8 then saturates
    beyond 7-bit activations whatever the CPU has."""
    fbgemm = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
    return bool(fbgemm) and fbgemm not in _FBGEMM_VNNI


def active_caps() -> dict[str, str]:
    """The instruction-set caps set in this environment (names from :data:`AVX2_CAPS`), for records."""
    return {k: os.environ[k] for k in _CAP_VARS if os.environ.get(k)}


def isa_flags() -> list[str]:
    """The vector-instruction flags this CPU reports (``/proc/cpuinfo``; empty where there is none),
    before any cap: what the hardware has, for benchmark records."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in _ISA_FLAGS if flag in have]
    except OSError:
        pass
    return []


def cpu_features() -> CpuFeatures:
    """This CPU's features, with the environment's caps applied (read on every call: cheap, and a
    test or a benchmark may change the environment)."""
    capability = torch.backends.cpu.get_cpu_capability()
    vnni = _check("_is_vnni_supported")
    bf16 = _check("_is_avx512_bf16_supported") or _check("_is_amx_tile_supported")
    capped = _capped_below_avx512() and (vnni or bf16 or capability.startswith("AVX512"))
    if capped:
        vnni = bf16 = False  # AVX-VNNI without AVX-512 is not told apart by torch: count it off
        if capability.startswith("AVX512"):
            capability = "AVX2"
    elif vnni and _fbgemm_without_vnni():
        vnni, capped = False, True
    return CpuFeatures(capability=capability, vnni=vnni, bf16=bf16, capped=capped)

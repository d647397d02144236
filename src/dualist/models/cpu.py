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
``default``) and ``ONEDNN_MAX_CPU_ISA=AVX2`` (or any ISA below AVX-512) turn the AVX-512 features
off, so an AVX-512 machine run with both caps makes the choices an AVX2-only machine makes.
"""

from __future__ import annotations

import dataclasses
import os

import torch

__all__ = ["CpuFeatures", "cpu_features"]

# oneDNN ISA names that allow AVX-512 (VNNI, BF16, AMX) instructions; anything else caps below it.
_AVX512_ISAS = ("AVX512", "AVX10", "AMX")


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
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if aten and not aten.startswith("avx512"):
        return True
    return bool(isa) and isa != "ALL" and not isa.startswith(_AVX512_ISAS)


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
    return CpuFeatures(capability=capability, vnni=vnni, bf16=bf16, capped=capped)

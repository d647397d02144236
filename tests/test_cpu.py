"""dualist.models.cpu: the CPU features every CPU-specific path chooses by, and the caps that emulate AVX2."""

from __future__ import annotations

import pytest
import torch

import dualist.models.precision as common_module
from dualist.models.cpu import cpu_features


@pytest.fixture
def avx512_cpu(monkeypatch):
    """A CPU with AVX-512, VNNI and bf16, whatever this one has."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for name in ("_is_vnni_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: True, raising=False)


def test_an_uncapped_avx512_cpu_reports_its_features(avx512_cpu):
    f = cpu_features()
    assert (f.capability, f.vnni, f.bf16, f.capped) == ("AVX512", True, True, False)
    assert f.describe() == "AVX512 vnni bf16"
    assert common_module.full_range_int8() and common_module.native_cpu_bf16()


@pytest.mark.parametrize("env", [{"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"},
                                 {"ONEDNN_MAX_CPU_ISA": "avx2_vnni"}, {"ATEN_CPU_CAPABILITY": "default"}])
def test_a_cap_below_avx512_turns_vnni_and_bf16_off(avx512_cpu, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    f = cpu_features()
    assert (f.capability, f.vnni, f.bf16, f.capped) == ("AVX2", False, False, True)
    assert f.describe().endswith("(capped)")
    # the reduced-precision copies then choose as on an AVX2-only CPU
    assert not common_module.full_range_int8() and not common_module.native_cpu_bf16()


@pytest.mark.parametrize("isa", ["ALL", "AVX512_CORE_VNNI", "AVX512_CORE_AMX"])
def test_a_cap_at_or_above_avx512_changes_nothing(avx512_cpu, monkeypatch, isa):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert not cpu_features().capped and cpu_features().vnni


def test_an_avx2_only_cpu_gets_seven_bit_int8_and_no_bf16_layers(monkeypatch, tiny_bert):
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    from dualist.models import DualEncoder
    from dualist.models.precision import Bf16Linear

    low = DualEncoder(model=str(tiny_bert)).quantized("int8")
    mods = list(low.doc_model.modules())
    assert {m.reduce_range for m in mods if hasattr(m, "reduce_range")} == {True}
    assert not any(isinstance(m, Bf16Linear) for m in mods)

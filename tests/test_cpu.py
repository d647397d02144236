"""dualist.models.cpu: the CPU features every CPU-specific path chooses by, and the caps that emulate AVX2."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dualist.models.precision as common_module
from dualist.models.cpu import AVX2_CAPS, active_caps, cpu_features, isa_flags


@pytest.fixture
def avx512_cpu(monkeypatch):
    """A CPU with AVX-512, VNNI and bf16, whatever this one has."""
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS",
                 "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for name in ("_is_vnni_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: True, raising=False)


def test_an_uncapped_avx512_cpu_reports_its_features(avx512_cpu):
    f = cpu_features()
    assert (f.capability, f.vnni, f.bf16, f.capped) == ("AVX512", True, True, False)
    assert f.describe() == "AVX512 vnni bf16"
    assert common_module.full_range_int8() and common_module.native_cpu_bf16()


@pytest.mark.parametrize("env", [{"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"},
                                 {"ONEDNN_MAX_CPU_ISA": "avx2_vnni"}, {"ATEN_CPU_CAPABILITY": "default"},
                                 {"DNNL_MAX_CPU_ISA": "AVX2"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"},
                                 dict(AVX2_CAPS)])
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


@pytest.mark.parametrize("isa", ["AVX512", "AVX512_256"])
def test_fbgemm_told_to_skip_vnni_gets_seven_bit_int8_but_keeps_bf16(avx512_cpu, monkeypatch, isa):
    # fbgemm's non-VNNI kernels add pairs of u8 x s8 products in 16 bits: full-range activations saturate
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", isa)
    f = cpu_features()
    assert (f.capability, f.vnni, f.bf16, f.capped) == ("AVX512", False, True, True)
    assert not common_module.full_range_int8()


def test_fbgemm_vnni_names_change_nothing(avx512_cpu, monkeypatch):
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX512_E1")
    assert cpu_features() == dataclasses.replace(cpu_features(), vnni=True, capped=False)
    assert cpu_features().vnni


def test_active_caps_name_what_is_set(avx512_cpu, monkeypatch):
    assert active_caps() == {}
    for key, value in AVX2_CAPS.items():
        monkeypatch.setenv(key, value)
    assert active_caps() == AVX2_CAPS


def test_isa_flags_are_a_subset_of_what_cpuinfo_lists():
    flags = isa_flags()
    assert len(flags) == len(set(flags))
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        assert flags == []
        return
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    assert set(flags) <= set(line.split(":", 1)[-1].split())
    if " avx2 " in f" {line} ":
        assert "avx2" in flags


_SATURATION_PROBE = """
import torch
from dualist.models.precision import _int8_linear_class, full_range_int8
torch.manual_seed(0)
lin = torch.nn.Linear(384, 384)
with torch.no_grad():
    lin.weight.mul_(20)
lin.qconfig = torch.ao.quantization.default_dynamic_qconfig
q = _int8_linear_class().from_float(lin)
x = torch.randn(64, 384) * 3
ref = lin(x)
print(full_range_int8(), float((q(x) - ref).abs().max() / ref.abs().max()))
"""


@pytest.mark.parametrize("fbgemm", ["", "AVX2", "AVX512"])
def test_int8_copies_stay_accurate_whatever_fbgemm_is_told(fbgemm):
    # fbgemm reads FBGEMM_ENABLE_INSTRUCTIONS when it loads: a fresh process per setting. Without VNNI
    # kernels, full-range activations saturate (max relative error ~0.25 on this layer against ~0.01)
    import os
    import subprocess
    import sys

    env = {**os.environ, "FBGEMM_ENABLE_INSTRUCTIONS": fbgemm}
    out = subprocess.run([sys.executable, "-c", _SATURATION_PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    full_range, err = out[0] == "True", float(out[1])
    if fbgemm:
        assert not full_range
    assert err < 0.05, f"int8 copy saturated under FBGEMM_ENABLE_INSTRUCTIONS={fbgemm!r}: max rel err {err:.3f}"


# ------------------------------------------------------------ the path each CPU class gets by default

@pytest.fixture
def avx2_cpu(monkeypatch):
    """An AVX2-only CPU (no VNNI, no bf16), whatever this one has."""
    for name in ("_is_vnni_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")


@pytest.mark.parametrize("cpu", ["avx2_cpu", "avx512_cpu"])
def test_amp_auto_never_picks_bf16_on_a_cpu(request, cpu, caplog):
    from dualist.training.runtime import resolve_amp

    request.getfixturevalue(cpu)
    with caplog.at_level("WARNING"):
        assert resolve_amp("auto", torch.device("cpu")) is None
    assert not caplog.records


def test_amp_bf16_on_a_cpu_without_bf16_warns_that_it_is_emulated(avx2_cpu, caplog):
    from dualist.training.runtime import resolve_amp

    with caplog.at_level("WARNING"):
        assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    assert "emulates bf16" in caplog.text and "AVX2" in caplog.text


def test_amp_bf16_on_a_cpu_with_native_bf16_is_quiet(avx512_cpu, caplog):
    from dualist.training.runtime import resolve_amp

    with caplog.at_level("WARNING"):
        assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    assert not caplog.records


def test_the_default_precision_is_fp32_for_every_command_and_the_server():
    import dualist.cli as cli
    from dualist.serving.config import ServeConfig

    with_precision = [obj for obj in vars(cli).values()
                      if dataclasses.is_dataclass(obj) and "precision" in {f.name for f in dataclasses.fields(obj)}]
    assert len(with_precision) >= 3  # index, search, rerank
    for cls in [*with_precision, ServeConfig]:
        default = next(f.default for f in dataclasses.fields(cls) if f.name == "precision")
        assert default == "fp32", cls.__name__


@pytest.mark.parametrize("cpu, int8, bf16", [("avx2_cpu", "7-bit activations (no VNNI)", "emulated bf16"),
                                             ("avx512_cpu", "8-bit activations (VNNI)", "native bf16")])
def test_the_logged_inference_path_names_the_choice_for_the_cpu_class(request, cpu, int8, bf16, tiny_bert):
    from dualist.models import DualEncoder
    from dualist.models.packed import onednn_available
    from dualist.models.precision import inference_path

    request.getfixturevalue(cpu)
    de = DualEncoder(model=str(tiny_bert))
    fp32 = inference_path(de)
    assert fp32.startswith("fp32, packed forward")
    # oneDNN's products on AVX-512 only; on AVX2 addmm was the faster float32 product
    assert ("oneDNN" in fp32) == (onednn_available() and cpu == "avx512_cpu")
    assert ("addmm" in fp32) == (not onednn_available() or cpu == "avx2_cpu")
    de.packed_inference = False
    assert "Hugging Face forward" in inference_path(de)
    de.packed_inference = True
    assert inference_path(de.quantized("int8")).startswith(f"int8 ({int8}), packed forward")
    assert inference_path(de.quantized("bf16")).startswith(f"bf16 ({bf16}")

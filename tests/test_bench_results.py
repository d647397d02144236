"""The benchmark helpers that turn measurements into RESULTS.md text (no benchmark is run here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


results, common = _load("results"), _load("benchlib")

MACHINE = {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "torch_threads": 2, "python": "3.11",
           "date": "2026-11-25 00:00 UTC", "load_avg_1m_at_start": 0.1, "shared": False}


def test_a_benchmark_file_becomes_a_section_with_ratio_goal_rss_and_check(tmp_path, capsys):
    payload = {"title": "bench_x: a thing", "machine": MACHINE, "command": ["bench/bench_x.py", "--json", "x.json"],
               "rows": [{"what": "search", "unit": "queries/s", "dualist": 1500.0, "peer": 1000.0, "ratio": 1.5,
                         "goal": 0.9, "met": "yes", "dualist_rss": 2**30, "peer_rss": 2**31,
                         "check": "OK max |diff| 0"}]}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(payload))
    results.main([str(path)])
    out = capsys.readouterr().out
    assert out.startswith("### bench_x: a thing")
    assert "python bench/bench_x.py --json x.json" in out
    assert "| search (queries/s) | 1,500 | 1,000 | 1.50× | ≥ 0.90× | yes | 1.00 GiB | 2.00 GiB | OK max \\|diff\\| 0 |" in out
    assert "shared" not in out


def test_a_shared_machine_is_labelled_with_what_else_ran():
    busy = dict(MACHINE, shared=True, other_busy_processes=["python train.py (180%)"])
    assert "**shared** with: python train.py (180%)" in results.machine_line(busy)
    assert "load average raised at start, no other busy process seen" in results.machine_line(dict(MACHINE, shared=True))
    assert common.shared_note(busy) == "SHARED: python train.py (180%)"
    assert common.shared_note({"load_avg_1m_at_start": 0.7}).startswith("SHARED? load average 0.7")


def test_the_ceiling_file_gets_each_side_as_a_share_of_the_matmul_peak(tmp_path, capsys):
    payload = {"machine": MACHINE, "command": ["bench/bench_ceiling.py"], "flops_per_token": 20e6, "mean_length": 200.0,
               "matmul_gflops": {"fp32_square": 100.0, "bf16_square": 400.0, "fp32_model_shape": 90.0,
                                 "bf16_model_shape": 300.0},
               "sides": {"dualist fp32": {"docs_per_s": 20.0, "tokens_per_s": 4000.0, "gflops": 80.0}}}
    path = tmp_path / "ceiling.json"
    path.write_text(json.dumps(payload))
    results.main([str(path)])
    out = capsys.readouterr().out
    assert "| dualist fp32 | 20.00 | 4,000 | 80.00 | 80% | 20% |" in out
    assert "20.0 MFLOP per token at mean length 200" in out
    # with oneDNN's rates the share is of the fastest fp32 rate measured
    payload["matmul_gflops"].update(fp32_square_onednn=160.0, fp32_model_shape_onednn=150.0, fp32_best=160.0)
    path.write_text(json.dumps(payload))
    results.main([str(path)])
    out = capsys.readouterr().out
    assert "| dualist fp32 | 20.00 | 4,000 | 80.00 | 50% | 20% |" in out
    assert "through oneDNN 160.00 / 150.00 (the fp32 peak below: 160.00)" in out


def test_a_file_that_is_not_a_benchmark_result_is_refused_by_name(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="notes.json: missing one of title/machine/command/rows"):
        results.main([str(bad)])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit, match="broken.json: not a benchmark result"):
        results.main([str(broken)])


def test_a_record_names_its_cpu_class_and_caps():
    capped = dict(MACHINE, cpu_class="AVX2 (capped)", isa_flags=["avx2", "avx512f", "avx512_vnni"],
                  cpu_caps={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    line = results.machine_line(capped)
    assert "CPU class AVX2 (capped) (hardware: avx2 avx512f avx512_vnni; caps ATEN_CPU_CAPABILITY=avx2 " \
           "ONEDNN_MAX_CPU_ISA=AVX2, ONNX Runtime uncapped)" in line
    assert "CPU class" not in results.machine_line(MACHINE)  # older records: nothing invented
    assert common.cpu_class_line(capped).endswith("(ONNX Runtime rows uncapped)")
    assert "caps" not in common.cpu_class_line(dict(capped, cpu_caps={}))


def test_machine_info_records_what_the_fast_paths_chose_by(monkeypatch):
    from dualist.models.cpu import AVX2_CAPS

    for key, value in AVX2_CAPS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(common, "_other_busy_processes", lambda threshold=20.0: [])
    info = common.machine_info()
    assert info["cpu_caps"] == AVX2_CAPS
    assert info["cpu_class"].startswith(("AVX2", "DEFAULT", "NO AVX"))  # never an AVX-512 class under the cap


def test_cpu_cap_avx2_reexecutes_the_script_with_the_caps_set(tmp_path):
    import os
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(BENCH)!r})\n"
                      "import os, benchlib as C\n"
                      "args = C.parse(C.base_parser('probe'))\n"
                      "print(os.environ.get('ONEDNN_MAX_CPU_ISA'), os.environ.get('FBGEMM_ENABLE_INSTRUCTIONS'),"
                      " args.cpu_cap, ' '.join(args.passthrough))\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_CPU_ISA", "_INSTRUCTIONS", "CPU_CAPABILITY"))}
    out = subprocess.run([sys.executable, str(script), "--cpu-cap", "avx2", "--repeats", "2"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["AVX2", "AVX2", "avx2", "--cpu-cap", "avx2", "--repeats", "2"]
    plain = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert plain[:3] == ["None", "None", "none"]


def test_training_profile_groups_ops_by_class(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    profile = _load("bench_train_profile")
    cases = {"aten::addmm": "matrix products", "aten::mm": "matrix products", "aten::bmm": "matrix products",
             "aten::native_dropout": "dropout", "aten::bernoulli_": "dropout",
             "aten::gelu_backward": "GELU", "aten::_softmax_backward_data": "attention (softmax, masks)",
             "aten::native_layer_norm_backward": "layer norm", "aten::embedding_dense_backward": "embedding",
             "aten::copy_": "other (copies, adds, reductions, autograd)"}
    assert {op: profile.group_of(op) for op in cases} == cases


def test_report_creates_the_folder_of_its_json_file(tmp_path, capsys):
    """A benchmark's last act is writing --json: a folder that does not exist yet must not lose the run."""
    import argparse

    path = tmp_path / "out" / "nested" / "x.json"
    info = {**MACHINE, "hardware_flags": [], "cpu_caps": {}}
    rows = [common.Row("search", "queries/s", 1500.0, 1000.0, goal=0.9)]
    common.report("bench_x: a thing", rows, info, argparse.Namespace(json=str(path)))
    assert json.loads(path.read_text())["rows"][0]["ratio"] == 1.5
    assert f"wrote {path}" in capsys.readouterr().out


@pytest.mark.parametrize("capability,vnni,bf16_native,int8,bf16,train", [
    ("AVX512", True, True, 2.0, 2.0, (1.5, 0.5)),      # Zen 4, Sapphire Rapids
    ("AVX2", False, False, 1.8, None, (1.3, 0.6)),     # Zen 3, Haswell
    ("AVX512", False, False, 1.8, None, (1.3, 0.6)),   # Skylake-X: AVX-512 without VNNI or bf16
    ("AVX512", True, False, 2.0, None, (1.3, 0.6)),    # Cascade Lake, Ice Lake: VNNI without bf16
])
def test_the_goals_follow_what_the_cpu_can_do(monkeypatch, capability, vnni, bf16_native, int8, bf16, train):
    """The AVX-512 goals of int8 rest on VNNI, those of bf16 and of training (`--amp bf16`) on native bf16:
    an AVX-512 CPU without them is held to the AVX2 goals for those paths."""
    import dualist.models.cpu as cpu

    monkeypatch.setattr(cpu, "cpu_features", lambda: cpu.CpuFeatures(
        capability=capability, vnni=vnni, bf16=bf16_native, capped=False))
    assert common.cpu_goal_class() == capability
    assert common.precision_goal("dualist") == 1.3
    assert common.precision_goal("dualist-int8") == common.precision_goal("dualist-onnx-int8") == int8
    assert common.precision_goal("dualist-bf16") == bf16
    assert common.precision_goal("peer") is None
    assert common.train_goal() == train

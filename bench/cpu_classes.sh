#!/usr/bin/env bash
# The CPU-dependent benchmarks (encoding, teacher scoring, training), natively and capped to AVX2,
# one at a time, then both tables: bash bench/cpu_classes.sh OUT [native|avx2|both]
# About 1 h for both on 2 cores; run it on an otherwise idle machine. Needs pip install -e '.[dev,bench]'.
set -euo pipefail
out=${1:?usage: bench/cpu_classes.sh OUT [native|avx2|both]}
which=${2:-both}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
classes=(native avx2)
[ "$which" = both ] || classes=("$which")
for cls in "${classes[@]}"; do
  cap=none; [ "$cls" = avx2 ] && cap=avx2
  "$py" bench/bench_encode.py --cpu-cap "$cap" --repeats 5 \
    --variants dualist,peer,dualist-hf,dualist-int8,dualist-bf16,dualist-onnx-fp32,dualist-onnx-int8 \
    --json "$out/encode-$cls.json"
  "$py" bench/bench_teacher_scoring.py --cpu-cap "$cap" --repeats 3 \
    --variants dualist,peer,dualist-int8,dualist-bf16 --json "$out/teacher-$cls.json"
  # bf16 training only where the CPU has bf16 instructions: emulated (under the AVX2 cap, or on an AVX2-only
  # CPU) one repeat takes about 5 min, and it is never a default there
  train=peer,dualist,dualist-lean-ckpt1
  if [ "$cls" = native ] && "$py" -c 'import sys; from dualist.models.cpu import cpu_features; sys.exit(not cpu_features().bf16)'; then
    train="$train,dualist-bf16-lean-ckpt1"
  fi
  "$py" bench/bench_train.py --cpu-cap "$cap" --repeats 2 --variants "$train" --json "$out/train-$cls.json"
done
"$py" bench/results.py "$out"/*.json > "$out/tables.md"
echo "tables: $out/tables.md"

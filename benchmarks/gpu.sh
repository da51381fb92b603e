#!/usr/bin/env bash
# The benchmark table on a GPU machine (the device tool's nvidia-h100-x1 / nvidia-h200), in one command.
# Writes benchmarks/results/*-gpu-*.json; copy them back into the repo and commit them.
#   bash benchmarks/gpu.sh [OUT_DIR] [--with-memory]
# --with-memory adds the 1-minute vs 10-minute 720p job (peak RSS and GPU memory; about 3 more minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
with_memory=${2:-}
python3 -m pip install -q -e . 2>/dev/null || python3 -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# fp16, large batches: the forward roof; then the end-to-end 720p file at a batch that fits latency.
python3 -m benchmarks --device cuda --dtype float16 --batch-size 64 --frames 512 --naive-frames 16 --repeats 3 --out "$out"
python3 -m benchmarks --device cuda --dtype float16 --batch-size 16 --frames 256 --naive-frames 16 --repeats 3 --out "$out"
if [ "$with_memory" = "--with-memory" ]; then
    python3 -m benchmarks.memory --device cuda --batch-size 16 --out "$out"
fi

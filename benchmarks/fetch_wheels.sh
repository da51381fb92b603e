#!/usr/bin/env bash
# The wheels a GPU machine (Python 3.12, PyTorch, transformers, OpenCV, no PyAV, no internet) lacks, into .whl/
# (git-ignored), for benchmarks/gpu.sh to install there. Run here, where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av==$(python3 -c 'import av; print(av.__version__)')"
ls -l .whl

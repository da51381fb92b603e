#!/usr/bin/env bash
# The wheels a GPU machine lacks, into .whl/ (git-ignored), for benchmarks/gpu.sh to install there. Run here,
# where PyPI is reachable. The machine has Python 3.12, torch, transformers, opencv-python-headless, onnxruntime,
# numpy and pillow, and no internet; every other package that streamseg, its tests and the GPU benchmarks import
# is fetched (GPU_EXTRA below; `bash benchmarks/gpu.sh --dry-run` proves the list in a virtual environment that
# holds only those packages and .whl/). Binary wheels come for Python 3.12 (the GPU machine) and for this
# machine's Python (the dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=("av==$(version av)" "prometheus-client==$(version prometheus-client)" "scipy==$(version scipy)"
        "pytest==$(version pytest)" "pluggy==$(version pluggy)" "iniconfig==$(version iniconfig)")
for py in 3.12 "$here"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${wheels[@]}"
done
ls -l .whl

#!/usr/bin/env bash
# Everything measured on a GPU machine, in one command that ends within 8 minutes on an H100/H200:
#   bash benchmarks/gpu.sh [--dry-run] [OUT_DIR]
# 1. installs what the machine lacks from .whl/ (PyAV; fetched here by benchmarks/fetch_wheels.sh, carried
#    along with the tree) and the project with --no-deps;
# 2. pytest -m cuda (the tests that need a device), its outcome as JSON;
# 3. python -m benchmarks.gpu: forward at batch 1-128 eager and compiled, the 720p file job beside every
#    stage alone, 8/16/32 live 720p streams (JSON);
# 4. python -m benchmarks.prompts on cuda: frames/s against 1/4/16 text prompts (streamseg vs the reference
#    loop, CLIPSeg-rd64's architecture) and against 1/4/16 objects tracked by point (SAM 2.1 hiera-tiny's).
# --dry-run: the same steps on the CPU with tiny sizes, in a fresh virtual environment that holds only what the
# GPU machine has (torch, transformers, opencv-python-headless, onnxruntime, numpy, pillow) and .whl/ (run
# benchmarks/fetch_wheels.sh first): a package the GPU machine lacks fails here, not on a lent GPU. Exits
# non-zero when any step fails.
# Results: OUT_DIR (default benchmarks/results)/DATE-gpu*.json; copy them into the repo and commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=""
if [ "${1:-}" = "--dry-run" ]; then dry="--dry-run"; shift; fi
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
wheels=(av prometheus-client scipy pytest pluggy iniconfig)  # what benchmarks/fetch_wheels.sh fetches
if [ -n "$dry" ]; then
    set -e
    env=${STREAMSEG_GPU_ENV:-/tmp/streamseg-gpu-env}
    rm -rf "$env" && python3 -m venv "$env"
    version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
    # the GPU machine's own packages (torch: the CPU wheel on this disk; transformers: the version used here)
    "$env/bin/pip" install -q torch==2.13.0 "transformers==$(version transformers)" opencv-python-headless \
        onnxruntime numpy pillow
    "$env/bin/pip" install -q --no-index --find-links .whl "${wheels[@]}"
    "$env/bin/pip" install -q --no-deps --no-build-isolation -e .
    export PATH="$env/bin:$PATH"
    set +e
else
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --find-links .whl --no-compile --no-cache-dir --target /tmp/site \
            "${wheels[@]}" && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH=$PWD:${PYTHONPATH:-}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
failed=0
python3 -m benchmarks.gpu_imports || failed=1
python3 - "$out" "$dry" <<'PY' || failed=1
import json, subprocess, sys, time, xml.etree.ElementTree as ET
from datetime import datetime
out, dry = sys.argv[1], sys.argv[2]
t0 = time.time()
proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
                       "--junitxml", "/tmp/cuda-tests.xml", "tests"], capture_output=True, text=True)
print(proc.stdout[-4000:])
suite = ET.parse("/tmp/cuda-tests.xml").getroot()
suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
cases = [{"test": c.get("name"), "seconds": float(c.get("time", 0)),
          "outcome": next((k.tag for k in c if k.tag in ("failure", "error", "skipped")), "passed"),
          "message": next((k.get("message", "")[:300] for k in c if k.tag in ("failure", "error", "skipped")), "")}
         for c in suite.iter("testcase")]
name = f"{out}/{datetime.now():%Y-%m-%d}-gpu-tests{'-dry-run' if dry else ''}.json"
with open(name, "w") as f:
    json.dump({"exit_code": proc.returncode, "seconds": round(time.time() - t0, 1), "tests": cases}, f, indent=2)
print("written to", name)
sys.exit(0 if proc.returncode in (0, 5) and all(c["outcome"] != "error" for c in cases) else 1)  # 5: no test ran
PY
python3 -m benchmarks.gpu --out "$out" $dry || failed=1
if [ -n "$dry" ]; then
    python3 -m benchmarks.prompts --device cpu --prompts 1,2 --objects 1,2 --frames 3 --size 160x96 --out /tmp/prompts-dry \
        || failed=1
else
    python3 -m benchmarks.prompts --device cuda --frames 24 --size 1280x720 --out "$out" || failed=1
fi
exit $failed

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
# --dry-run: the same steps on the CPU with tiny sizes (checks the script; the cuda tests are skipped).
# Results: OUT_DIR (default benchmarks/results)/DATE-gpu*.json; copy them into the repo and commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=""
if [ "${1:-}" = "--dry-run" ]; then dry="--dry-run"; shift; fi
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -z "$dry" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH=$PWD:${PYTHONPATH:-}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
python3 - "$out" "$dry" <<'PY'
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
PY
python3 -m benchmarks.gpu --out "$out" $dry
if [ -n "$dry" ]; then
    python3 -m benchmarks.prompts --device cpu --prompts 1,2 --objects 1,2 --frames 3 --size 160x96 --out /tmp/prompts-dry
else
    python3 -m benchmarks.prompts --device cuda --frames 24 --size 1280x720 --out "$out"
fi

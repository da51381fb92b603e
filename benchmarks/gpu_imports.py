"""``python -m benchmarks.gpu_imports``: whether this environment has every package a GPU run imports.

Imports every streamseg module (but ``cluster``: Ray is not on the GPU machine, nor what it runs), then checks
that every third-party package named by an import anywhere in the package, the tests and the GPU benchmarks,
lazy imports inside functions included, can be found, but for the optional ones below. ``bash benchmarks/gpu.sh
--dry-run`` runs it in a virtual environment of only the GPU machine's packages and ``.whl/``. Exit status 1
and one line per missing package when something is missing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# optional where the GPU runs: each has its fallback or is not used there
OPTIONAL = {"ray": "streamseg batch/fleet", "openvino": "the CPU engine (torch runs on CUDA)",
            "onnx": "--engine onnxruntime's export", "nncf": "benchmarks/int8.py", "pycocotools": "a CPU test",
            "fakes": "the tests' own helpers", "xdist": "pytest -n", "pytest_timeout": "pytest's timeouts"}
SCANNED = ["streamseg", "tests", "benchmarks/gpu.py", "benchmarks/bench.py", "benchmarks/prompts.py",
           "benchmarks/__main__.py"]


def imported_packages() -> dict[str, str]:
    """Every top-level package imported in the scanned files -> one file that imports it."""
    found: dict[str, str] = {}
    files = [p for s in SCANNED for p in ((ROOT / s).rglob("*.py") if (ROOT / s).is_dir() else [ROOT / s])]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("streamseg", "benchmarks", "conftest"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def main() -> int:
    import streamseg

    problems = []
    for module in pkgutil.walk_packages(streamseg.__path__, "streamseg."):
        if module.name.startswith("streamseg.cluster") or module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            problems.append(f"{module.name} does not import: {exc}")
    for package, where in sorted(imported_packages().items()):
        if package not in OPTIONAL and importlib.util.find_spec(package) is None:
            problems.append(f"{package} is missing (imported by {where})")
    for line in problems:
        print(f"gpu_imports: {line}")
    if not problems:
        print(f"gpu_imports: every streamseg module imports and all {len(imported_packages())} packages are here "
              f"(optional: {', '.join(sorted(OPTIONAL))})")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

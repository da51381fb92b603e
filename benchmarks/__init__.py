"""Benchmarks: ``python -m benchmarks`` (the same as ``streamseg bench``)."""

import json
from pathlib import Path


def save_results(results: dict, out_dir: Path, name: str) -> Path:
    """Write ``results`` as ``out_dir/name`` (indented JSON) and say where."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")
    return path

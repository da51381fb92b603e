"""Benchmarks: ``python -m benchmarks`` (the same as ``streamseg bench``)."""

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path


def with_machine(results: dict) -> dict:
    """``results`` with the machine (platform, CPUs) and the date (UTC) added."""
    return {**results, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_results(results: dict, out_dir: Path, name: str) -> Path:
    """Write ``results`` as ``out_dir/name`` (indented JSON) and say where."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")
    return path

"""``streamseg batch`` on a local Ray with 1 and 2 workers vs the single-file CLI run over the same files in turn.

    python -m benchmarks.ray_batch [--videos 6] [--seconds 8] [--model DIR] [--out benchmarks/results]

All three in one run, on the same generated 640x360 clips and model (the demo model by
default). Each is the command a user types, in its own process, so the numbers include
interpreter and model start-up: the sequential CLI pays it once per file, a Ray batch once
per worker plus Ray's own start-up. That overhead is reported separately: the batch's wall
time minus the time its workers spent inside files (from the manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

from benchmarks import save_results

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"


def make_clips(folder: Path, videos: int, seconds: float) -> list[Path]:
    import av

    sys.path.insert(0, str(ROOT))
    from streamseg.testing.scenes import StreetScene

    paths = []
    for k in range(videos):
        scene = StreetScene(100 + k, 640, 360)
        path = folder / f"clip{k}.mp4"
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
            s.codec_context.options = {"preset": "veryfast"}
            for i in range(int(seconds * 25)):
                vf = av.VideoFrame.from_ndarray(scene.render(float(i))[0], format="rgb24")
                vf.pts, vf.time_base = i, Fraction(1, 25)
                out.mux(s.encode(vf))
            out.mux(s.encode(None))
        paths.append(path)
    return paths


def _timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_batch", description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    work = Path(tempfile.mkdtemp(prefix="streamseg-ray-"))
    try:
        clips = make_clips(work, args.videos, args.seconds)
        frames = int(args.seconds * 25) * len(clips)
        rows = {}
        t = 0.0
        for clip in clips:  # what a user without Ray does: one CLI run per file
            t += _timed([sys.executable, "-m", "streamseg", str(clip), "-o", str(work / f"seq-{clip.name}"),
                         "--model", args.model, "--batch-size", str(args.batch_size), "-q", "--device", "cpu"], env)
        rows["sequential CLI"] = {"seconds": t, "workers": 1}
        for workers in (1, 2):
            out = work / f"ray{workers}"
            wall = _timed([sys.executable, "-m", "streamseg", "batch", *map(str, clips), "-o", str(out),
                           "--model", args.model, "--batch-size", str(args.batch_size), "--workers", str(workers),
                           "--cpus-per-worker", str(max(1, (os.cpu_count() or 2) // workers)), "-q"], env)
            manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
            assert sum(r["status"] == "done" for r in manifest) == len(clips), manifest
            busy = sum(r["seconds"] for r in manifest) / workers  # per worker, inside files
            rows[f"ray batch, {workers} worker{'s' if workers > 1 else ''}"] = {
                "seconds": wall, "workers": workers, "overhead_seconds": wall - busy}
        for row in rows.values():
            row["videos_per_s"] = len(clips) / row["seconds"]
            row["frames_per_s"] = frames / row["seconds"]
        base = rows["sequential CLI"]["seconds"]
        results = {
            "rows": rows,
            "ratios": {name: base / row["seconds"] for name, row in rows.items() if name != "sequential CLI"},
            "workload": {"videos": len(clips), "seconds_each": args.seconds, "size": "640x360", "fps": 25,
                         "frames": frames, "model": args.model, "batch_size": args.batch_size},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(clips)} videos x {args.seconds:g} s (640x360), {frames} frames")
    print(f"{'run':<22}{'wall s':>9}{'videos/s':>10}{'frames/s':>10}{'vs CLI':>8}{'overhead s':>12}")
    for name, row in rows.items():
        ratio = results["ratios"].get(name, 1.0)
        print(f"{name:<22}{row['seconds']:>9.1f}{row['videos_per_s']:>10.3f}{row['frames_per_s']:>10.1f}"
              f"{ratio:>7.2f}x{row.get('overhead_seconds', 0):>12.1f}")
    save_results(results, args.out, f"{results['date'][:10]}-ray-batch-{len(clips)}x{args.seconds:g}s.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

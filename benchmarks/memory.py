"""Peak memory does not grow with video length: a 1-minute and a 10-minute 720p job, side by side.

    python -m benchmarks.memory [--model DIR] [--minutes 1 10] [--device cpu] [--out benchmarks/results]

Each job is the CLI (file to annotated MP4) in its own process; its resident set is sampled
every half second from /proc and its peak read from the kernel (``wait4``'s ``ru_maxrss``;
``torch.cuda.max_memory_allocated`` is not visible from outside, so on a GPU the sampled
``nvidia-smi`` figure is reported too). The clips loop 250 distinct generated street frames,
so making a 10-minute clip takes about a minute.
"""

from __future__ import annotations

import argparse
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


def make_long_clip(path: Path, seconds: float, *, width: int = 1280, height: int = 720, fps: int = 25) -> Path:
    import av

    from streamseg.testing.scenes import StreetScene

    scene = StreetScene(5, width, height)
    distinct = [scene.render(float(i))[0] for i in range(250)]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(int(seconds * fps)):
            k = i % 500  # forwards then backwards: no jump in the motion
            vf = av.VideoFrame.from_ndarray(distinct[k if k < 250 else 499 - k], format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gpu_mib() -> float | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True)
    try:
        return float(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def measure(clip: Path, model: str, device: str, batch_size: int, out: Path) -> dict:
    argv = [sys.executable, "-m", "streamseg", str(clip), "-o", str(out), "--model", model, "--device", device,
            "--batch-size", str(batch_size), "-q"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True)
        samples: list[tuple[float, float]] = []
        gpu_peak = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaped here: ru_maxrss is this job's peak
            if pid:
                break
            rss = _rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - t0, rss))
            gpu_peak = max(gpu_peak, _gpu_mib() or 0.0)
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"streamseg failed ({proc.returncode}): {stderr.strip()}")
    import av

    with av.open(str(out)) as c:
        frames = sum(1 for _ in c.demux(c.streams.video[0]) if _.size)
    steady = [r for t, r in samples if t > 0.1 * wall]  # after model load and warm-up
    return {
        "seconds_of_video": None,
        "frames_written": frames,
        "wall_s": wall,
        "fps": frames / wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "sampled_peak_rss_mib": max(r for _, r in samples),
        "rss_after_warmup_mib": steady[0] if steady else None,
        "rss_at_end_mib": samples[-1][1],
        "gpu_peak_used_mib": gpu_peak or None,
        "summary": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL), help="model id or folder (default: the demo model)")
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="streamseg-memory-"))
    jobs = {}
    try:
        for minutes in args.minutes:
            clip = make_long_clip(work / f"clip-{minutes:g}m.mp4", minutes * 60)
            result = measure(clip, args.model, args.device, args.batch_size, work / f"out-{minutes:g}m.mp4")
            result["seconds_of_video"] = minutes * 60
            jobs[f"{minutes:g} min"] = result
            print(f"{minutes:g} min: {result['frames_written']} frames, {result['fps']:.1f} fps, "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB (after warm-up {result['rss_after_warmup_mib']:.0f}, "
                  f"at the end {result['rss_at_end_mib']:.0f})", flush=True)
            clip.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peaks = [j["peak_rss_mib"] for j in jobs.values()]
    import torch

    results = {
        "jobs": jobs,
        "peak_rss_spread": (max(peaks) - min(peaks)) / min(peaks),
        "workload": {"model": args.model, "width": 1280, "height": 720, "fps": 25, "batch_size": args.batch_size,
                     "device": args.device},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"peak RSS spread between the jobs: {100 * results['peak_rss_spread']:.1f}% (target: within 5%)")
    save_results(results, args.out, f"{results['date'][:10]}-memory-{'gpu' if results['machine']['gpu'] else 'cpu'}-1280x720.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU measurements of one card, in one run: forward at large batches, the 720p file job, many live streams.

    python -m benchmarks.gpu [--out benchmarks/results] [--dry-run]

``benchmarks/gpu.sh`` runs this after ``pytest -m cuda``. Three parts, each written to the JSON:

* forward: SegFormer-B0's architecture (random weights) at 512x512, fp16, batch 1, 8, 32 and 128,
  eager and compiled (``torch.compile`` "reduce-overhead": CUDA graphs of each fixed shape), in
  images per second; the goal is 2,500 img/s on an H100.
* file: the 720p file job end to end beside every stage alone (``python -m benchmarks``); the goal
  is end to end >= 0.9 x the slowest stage alone.
* live: N synthetic 720p 25 fps streams (H.264 MPEG-TS over loopback, each frame stamped with its
  send time in its pixels) into one process and one model, N = 8, 16, 32; per-source output
  frames/s and p95 capture -> output latency; GPU memory at the start and end of each run. Goal:
  every source >= 24 fps, p95 <= 250 ms, at N = 32.

``--dry-run`` runs every part on the CPU with tiny sizes (a 64x64 model input, an 8-frame clip,
2 streams of 640x360 for a few seconds) to check the script itself.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks import save_results
from benchmarks.bench import make_segformer_b0
from benchmarks.live import LatencySink, generate  # noqa: F401 (generate runs in the stream processes)

ROOT = Path(__file__).resolve().parents[1]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rates(model_dir: Path, *, device: str, dtype: str, size: int, batches: list[int], seconds: float) -> list[dict]:
    """Images per second of the forward alone (pre-processed input already on the device), eager and compiled."""
    import torch

    from streamseg.config import ModelConfig
    from streamseg.models.segmenter import Segmenter

    rows = []
    for compiled in (False, True):
        seg = Segmenter.load(ModelConfig(name=str(model_dir), device=device, dtype=dtype, compile=compiled))
        for batch in batches:
            x = torch.randn(batch, 3, size, size, device=seg.device).to(next(seg.eager_model.parameters()).dtype)
            row = {"compiled": compiled, "batch": batch, "size": size}
            try:
                for _ in range(3):  # warm-up (compiles and records the graph)
                    seg.forward(x)
                _sync(seg.device)
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    seg.forward(x)
                    n += batch
                _sync(seg.device)
                row["images_per_s"] = n / (time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - out of memory at 128, a compiler failure: recorded, not fatal
                row["error"] = str(exc).splitlines()[0][:200]
            print(f"forward {'compiled' if compiled else 'eager   '} batch {batch:4d}: "
                  f"{row.get('images_per_s', 0):9.1f} img/s {row.get('error', '')}", flush=True)
            rows.append(row)
        del seg
    return rows


def file_job(out: Path, *, device: str, dtype: str, frames: int, batch: int, dry: bool) -> dict:
    """``python -m benchmarks`` (every stage alone, then the whole job), its JSON read back."""
    import json

    args = [sys.executable, "-m", "benchmarks", "--device", device, "--batch-size", str(batch), "--frames", str(frames),
            "--naive-frames", "4" if dry else "16", "--repeats", "1" if dry else "3", "--no-loaded", "--out", str(out),
            "--engines", ""]  # the CPU engines' rows belong to the CPU table
    if dtype != "float32":
        args += ["--dtype", dtype]
    before = set(out.glob("*.json"))
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
    made = sorted(set(out.glob("*.json")) - before)
    if proc.returncode or not made:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(made[-1].read_text())
    made[-1].unlink()  # folded into this run's JSON
    return result


def live_streams(model_dir: Path, n: int, *, seconds: float, width: int, height: int, fps: float, device: str,
                 dtype: str, batch: int) -> dict:
    """``n`` stamped live streams into one pipeline; per-source output fps and latency."""
    import torch

    from streamseg.config import ModelConfig, RenderConfig
    from streamseg.models.segmenter import Segmenter
    from streamseg.pipeline.pipeline import Pipeline, Route
    from streamseg.render.device import DeviceBlender
    from streamseg.render.renderer import Renderer
    from streamseg.sources.open import open_source

    seg = Segmenter.load(ModelConfig(name=str(model_dir), device=device, dtype=dtype))
    renderer = Renderer(RenderConfig(), seg.id2label, seg.num_labels)
    if seg.device.type == "cuda":
        seg.draw_on_device(DeviceBlender(renderer, seg.device))
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    servers = [subprocess.Popen([sys.executable, "-c", f"import benchmarks.live as b; b.generate({port}, {fps}, "
                                 f"{seconds + 60}, {width}, {height})"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for port in ports]
    for server in servers:
        server.stdout.readline()
    time.sleep(0.5)
    sinks = [LatencySink() for _ in range(n)]
    memory = []
    try:
        import contextlib

        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(open_source(f"tcp://127.0.0.1:{port}", reconnect=3)) for port in ports]
            routes = [Route(src, Renderer(RenderConfig(), seg.id2label, seg.num_labels), sink)
                      for src, sink in zip(sources, sinks)]
            if seg.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(seg.device)
                memory.append(torch.cuda.memory_allocated(seg.device) / 2**20)
            pipeline = Pipeline(routes, seg.segment, batch_size=batch, duration=seconds, max_latency=1.0)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(10.0):
                    if seg.device.type == "cuda":
                        memory.append(torch.cuda.memory_allocated(seg.device) / 2**20)

            threading.Thread(target=sample, daemon=True).start()
            stats = pipeline.run()
            done.set()
            if seg.device.type == "cuda":
                memory.append(torch.cuda.memory_allocated(seg.device) / 2**20)
    finally:
        for server in servers:
            server.kill()
            server.wait()
    per_source = []
    for k, sink in enumerate(sinks):
        if len(sink.samples) < 2:
            per_source.append({"source": k, "frames": len(sink.samples)})
            continue
        # the steady part: after the first 20% of the run (model warm, batch settled)
        t_first, t_last = sink.samples[0][0], sink.samples[-1][0]
        steady = [(t, v) for t, v in sink.samples if t >= t_first + 0.2 * (t_last - t_first)]
        span = steady[-1][0] - steady[0][0]
        per_source.append({"source": k, "frames": len(sink.samples), "fps": (len(steady) - 1) / span if span else 0.0,
                           "latency_p50_ms": float(np.percentile([v for _, v in steady], 50)),
                           "latency_p95_ms": float(np.percentile([v for _, v in steady], 95)),
                           "unreadable_stamps": sink.bad})
    fps_all = [s.get("fps", 0.0) for s in per_source]
    p95_all = [s.get("latency_p95_ms", float("inf")) for s in per_source]
    row = {"sources": n, "width": width, "height": height, "fps_in": fps, "seconds": seconds,
           "min_fps": min(fps_all), "median_fps": statistics.median(fps_all), "worst_p95_ms": max(p95_all),
           "frames_read": stats.frames_read, "frames_written": stats.frames_written,
           "frames_dropped": stats.frames_dropped, "live_batches": pipeline.live_batches[-10:],
           "gpu_memory_mib": memory, "per_source": per_source,
           "goal (N=32): every source >= 24 fps, p95 <= 250 ms": min(fps_all) >= 24 and max(p95_all) <= 250}
    print(f"live x{n}: min {row['min_fps']:.1f} fps, median {row['median_fps']:.1f}, worst p95 "
          f"{row['worst_p95_ms']:.0f} ms, dropped {stats.frames_dropped}, memory {memory[:1]}..{memory[-1:]} MiB",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny sizes")
    p.add_argument("--live-seconds", type=float, default=60.0, help="each live run (default 60)")
    p.add_argument("--parts", default="forward,file,live", help="which parts (default all)")
    args = p.parse_args(argv)
    import torch

    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    dtype = "float32" if dry else "float16"
    parts = set(args.parts.split(","))
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dry_run": dry,
                     "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                 "torch": torch.__version__,
                                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_segformer_b0(Path(tmp) / "b0", size=64 if dry else 512)
        if "forward" in parts:
            results["forward"] = forward_rates(model, device=device, dtype=dtype, size=64 if dry else 512,
                                               batches=[1, 2] if dry else [1, 8, 32, 128], seconds=1.0 if dry else 5.0)
            best = max((r.get("images_per_s", 0) for r in results["forward"]), default=0)
            results["forward_goal"] = {"best_images_per_s": best, "goal (H100)": 2500, "met": best >= 2500}
        if "file" in parts:
            results["file"] = file_job(Path(tmp), device=device, dtype=dtype, frames=8 if dry else 256,
                                       batch=2 if dry else 16, dry=dry)
        if "live" in parts:
            counts = [2] if dry else [8, 16, 32]
            seconds = 6.0 if dry else args.live_seconds
            results["live"] = [live_streams(model, n, seconds=seconds, width=640 if dry else 1280,
                                            height=360 if dry else 720, fps=25.0, device=device, dtype=dtype,
                                            batch=4 if dry else 32) for n in counts]
    name = f"{datetime.now():%Y-%m-%d}-gpu{'-dry-run' if dry else ''}.json"
    save_results(results, args.out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency and memory of a long live run: a timestamped synthetic stream over loopback, through streamseg.

    python -m benchmarks.live [--minutes 10] [--model DIR] [--fps 25] [--out benchmarks/results]

A generator process draws each frame's send time (ms since the epoch, 48 bits) as black
and white 12x12 blocks along the top edge of a synthetic street scene and sends it in real
time through the ffmpeg CLI as an H.264 (zero-latency) MPEG-TS stream on
``tcp://127.0.0.1:PORT``. streamseg reads that URL as a user's run would (open_source: the
reconnecting live source, drop-oldest queue, batched inference, render), and a sink reads
the code back from every annotated frame: latency = the moment the frame is written minus
the moment it was generated (network, decode, queueing, inference, render: all of it).
Reported per minute: p50/p95/max latency, frames written and dropped, and the process's
RSS, so that growth in latency or memory over the run shows.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import save_results

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"
BITS, BLOCK = 48, 12  # 576 px: fits a 640-wide frame


def stamp(image: np.ndarray, ms: int) -> None:
    """Draw ``ms`` as BITS blocks (white = 1) along the top edge."""
    for b in range(BITS):
        image[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if (ms >> b) & 1 else 0


def read_stamp(image: np.ndarray) -> int:
    """The value :func:`stamp` drew, from a frame that was encoded, decoded and blended since."""
    grey = image[2:BLOCK - 2, :BITS * BLOCK].mean(axis=2)
    value = 0
    for b in range(BITS):
        if grey[:, b * BLOCK + 2:(b + 1) * BLOCK - 2].mean() > 128:
            value |= 1 << b
    return value


def generate(port: int, fps: float, seconds: float, width: int = 640, height: int = 360) -> None:
    """The stream server (run in its own process): frames at ``fps`` in real time, stamped when sent."""
    sys.path.insert(0, str(ROOT))
    from streamseg.synthetic import StreetScene

    scene = StreetScene(7, width, height)
    frames = [scene.render(float(i))[0] for i in range(100)]
    ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                               f"{width}x{height}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset",
                               "ultrafast", "-tune", "zerolatency", "-g", str(int(2 * fps)), "-f", "mpegts",
                               f"tcp://127.0.0.1:{port}?listen=1"], stdin=subprocess.PIPE)
    start = time.time()
    i = 0
    try:
        while time.time() - start < seconds:
            due = start + i / fps
            time.sleep(max(0.0, due - time.time()))
            image = frames[i % len(frames)].copy()
            stamp(image, int(time.time() * 1000))
            ffmpeg.stdin.write(image.tobytes())
            i += 1
    except BrokenPipeError:
        pass
    finally:
        try:
            ffmpeg.stdin.close()
        except BrokenPipeError:
            pass
        ffmpeg.wait()


class LatencySink:
    """Reads each written frame's stamp and records (written at, latency ms)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.bad = 0

    def write(self, frame) -> None:
        now = time.time()
        sent = read_stamp(frame.image) / 1000
        if abs(now - sent) > 3600:  # a stamp that did not survive: count it, do not guess
            self.bad += 1
            return
        self.samples.append((now, 1000 * (now - sent)))

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import streamseg  # noqa: F401  (OpenCV before PyAV)
    from streamseg.config import ModelConfig, RenderConfig
    from streamseg.model import Segmenter
    from streamseg.pipeline import Pipeline, Route
    from streamseg.render import Renderer
    from streamseg.sources import open_source

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds = args.minutes * 60
    server = subprocess.Popen([sys.executable, "-c", f"import benchmarks.live as b; b.generate({port}, {args.fps}, "
                               f"{seconds + 30})"], cwd=ROOT)
    seg = Segmenter.load(ModelConfig(name=args.model, device=args.device))
    time.sleep(1.0)
    sink = LatencySink()
    rss: list[tuple[float, float]] = []
    try:
        with open_source(f"tcp://127.0.0.1:{port}", reconnect=3) as source:
            route = Route(source, Renderer(RenderConfig(), seg.id2label, seg.num_labels), sink)
            pipeline = Pipeline([route], seg.segment, batch_size=args.batch_size, duration=seconds)
            done = threading.Event()

            def sample_rss() -> None:
                while not done.wait(5.0):
                    rss.append((time.time(), _rss_mib()))

            threading.Thread(target=sample_rss, daemon=True).start()
            rss.append((time.time(), _rss_mib()))
            stats = pipeline.run()
            done.set()
            rss.append((time.time(), _rss_mib()))
    finally:
        server.kill()
        server.wait()
    t0 = sink.samples[0][0]
    minutes = []
    for m in range(int(np.ceil((sink.samples[-1][0] - t0) / 60))):
        lat = [v for t, v in sink.samples if m * 60 <= t - t0 < (m + 1) * 60]
        mem = [r for t, r in rss if m * 60 <= t - t0 < (m + 1) * 60]
        if lat:
            minutes.append({"minute": m + 1, "frames": len(lat), "latency_p50_ms": float(np.percentile(lat, 50)),
                            "latency_p95_ms": float(np.percentile(lat, 95)), "latency_max_ms": float(max(lat)),
                            "rss_mib": float(statistics.mean(mem)) if mem else None})
    all_lat = [v for _, v in sink.samples]
    results = {
        "latency_ms": {"p50": float(np.percentile(all_lat, 50)), "p95": float(np.percentile(all_lat, 95)),
                       "max": float(max(all_lat))},
        "per_minute": minutes,
        "frames_read": stats.frames_read, "frames_written": stats.frames_written,
        "frames_dropped": stats.frames_dropped, "unreadable_stamps": sink.bad, "reconnects": stats.reconnects,
        "rss_mib": {"start": rss[0][1], "after_first_minute": next((r for t, r in rss if t - rss[0][0] >= 60), None),
                    "end": rss[-1][1], "max": max(r for _, r in rss)},
        "workload": {"model": args.model, "stream": "640x360 H.264 MPEG-TS over TCP loopback", "fps": args.fps,
                     "minutes": args.minutes, "batch_size": args.batch_size, "device": args.device},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"latency p50 {results['latency_ms']['p50']:.0f} ms, p95 {results['latency_ms']['p95']:.0f} ms, "
          f"max {results['latency_ms']['max']:.0f} ms over {stats.frames_written} frames "
          f"({stats.frames_dropped} dropped); RSS {results['rss_mib']['start']:.0f} -> {results['rss_mib']['end']:.0f} MiB")
    for m in minutes:
        print(f"  minute {m['minute']:>2}: p50 {m['latency_p50_ms']:6.0f} ms  p95 {m['latency_p95_ms']:6.0f} ms  "
              f"frames {m['frames']:5d}  RSS {m['rss_mib'] or 0:.0f} MiB")
    save_results(results, args.out, f"{results['date'][:10]}-live-latency-{args.minutes:g}min.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

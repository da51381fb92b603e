"""Latency and memory of long live runs: a timestamped synthetic stream over loopback, through streamseg.

    python -m benchmarks.live [--minutes 5] [--models b0,demo] [--fps 25] [--out benchmarks/results]

A generator process draws each frame's send time (ms since the epoch, 48 bits) as black and
white 12x12 blocks along the top edge of a synthetic street scene, encodes it with PyAV
(H.264, zero latency) and sends it in real time as MPEG-TS on ``tcp://127.0.0.1:PORT`` (no
ffmpeg CLI needed). streamseg reads that URL as a user's run would (the reconnecting live
source, the live queue no deeper than the batch being formed, the adaptive live batch,
render), and a sink reads the code back from every annotated frame: latency = the moment the
frame is written minus the moment it was generated (network, decode, queueing, inference,
render: all of it). Before each run the model's batch-1 forward (pre-processing included) is
timed at the stream's size, in the same process, so the goals are ratios of one run:
p95 latency <= 2 x that time + 0.3 s, and output frames/s >= 0.8 x its rate. Reported per
minute: p50/p95/max latency, frames written and dropped, and RSS.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import save_results, with_machine

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
    from fractions import Fraction

    import av

    from streamseg.testing.scenes import StreetScene

    scene = StreetScene(7, width, height)
    frames = [scene.render(float(i))[0] for i in range(100)]
    # Each packet leaves at once (no 32 KB I/O buffer): the latency measured is streamseg's, not the sender's.
    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts", container_options={"flush_packets": "1"})
    stream = out.add_stream("libx264", rate=int(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(int(2 * fps))}
    print("ready", flush=True)  # the first frame opens the socket and waits for the reader
    start = time.time()
    i = 0
    try:
        while time.time() - start < seconds:
            due = start + i / fps
            time.sleep(max(0.0, due - time.time()))
            image = frames[i % len(frames)].copy()
            stamp(image, int(time.time() * 1000))
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, int(fps))
            out.mux(stream.encode(vf))
            i += 1
    except (OSError, av.FFmpegError):  # the reader went away
        pass
    finally:
        try:
            out.close()
        except (OSError, av.FFmpegError):
            pass


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


def forward_seconds(seg, width: int, height: int, repeats: int = 15) -> float:
    """The median time of one batch-1 step at the stream's size: pre-processing and forward."""
    from streamseg.testing.scenes import StreetScene

    image = StreetScene(7, width, height).render(0.0)[0]
    seg.forward(seg.preprocess([image]))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg.forward(seg.preprocess([image]))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one(name: str, model_dir: str, seconds: float, args) -> dict:
    from streamseg.config import ModelConfig, RenderConfig
    from streamseg.models.segmenter import Segmenter
    from streamseg.pipeline.pipeline import Pipeline, Route
    from streamseg.pipeline.threads import ThreadTuner
    from streamseg.render.renderer import Renderer
    from streamseg.sources.open import open_source

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seg = Segmenter.load(ModelConfig(name=model_dir, device=args.device))
    fwd = forward_seconds(seg, 640, 360)
    server = subprocess.Popen([sys.executable, "-c", f"import benchmarks.live as b; b.generate({port}, {args.fps}, "
                               f"{seconds + 30})"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server.stdout.readline()  # "ready": about to listen
    time.sleep(0.5)
    sink = LatencySink()
    rss: list[tuple[float, float]] = []
    try:
        with open_source(f"tcp://127.0.0.1:{port}", reconnect=3, decode_threads=args.budget.decode) as source:
            route = Route(source, Renderer(RenderConfig(), seg.id2label, seg.num_labels), sink)
            counts = args.budget.tuned_counts  # as a user's run: the forward's threads tuned while running
            segment = ThreadTuner(seg.segment, counts) if counts else seg.segment
            pipeline = Pipeline([route], segment, batch_size=args.batch_size, duration=seconds,
                                max_latency=args.max_latency)
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
    span = sink.samples[-1][0] - t0
    out_fps = len(sink.samples) / span if span else 0.0
    p95 = float(np.percentile(all_lat, 95))
    return {
        "model": name, "forward_b1_ms": 1000 * fwd,
        "latency_ms": {"p50": float(np.percentile(all_lat, 50)), "p95": p95, "max": float(max(all_lat))},
        "output_fps": out_fps, "forward_b1_fps": 1 / fwd,
        "goals": {"p95 <= 2 x forward_b1 + 0.3 s": {"value_ms": p95, "limit_ms": 2000 * fwd + 300,
                                                     "met": p95 <= 2000 * fwd + 300},
                  "output fps >= 0.8 x forward_b1 fps": {"ratio": out_fps * fwd, "met": out_fps * fwd >= 0.8}},
        "live_batches": pipeline.live_batches[-20:],
        "threads": args.budget.describe(segment if isinstance(segment, ThreadTuner) else None),
        "per_minute": minutes,
        "frames_read": stats.frames_read, "frames_written": stats.frames_written,
        "frames_dropped": stats.frames_dropped, "unreadable_stamps": sink.bad, "reconnects": stats.reconnects,
        "rss_mib": {"start": rss[0][1], "end": rss[-1][1], "max": max(r for _, r in rss)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="per model (default 5)")
    p.add_argument("--models", default="b0,demo",
                   help="b0 (SegFormer-B0's architecture, random weights, slower than the stream), demo, or a folder")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--batch-size", type=int, default=4, help="the largest live batch (default 4)")
    p.add_argument("--max-latency", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import streamseg  # noqa: F401  (OpenCV before PyAV)
    from benchmarks.bench import make_segformer_b0
    from streamseg.pipeline.threads import apply, plan

    budget = args.budget = plan()
    apply(budget)
    work = Path(tempfile.mkdtemp(prefix="streamseg-live-"))
    runs = []
    for name in args.models.split(","):
        model_dir = {"b0": lambda: str(make_segformer_b0(work / "b0")), "demo": lambda: str(DEMO_MODEL)}.get(
            name, lambda: name)()
        result = run_one(name, model_dir, args.minutes * 60, args)
        runs.append(result)
        lat = result["latency_ms"]
        print(f"{name}: forward batch 1 {result['forward_b1_ms']:.0f} ms; latency p50 {lat['p50']:.0f} ms, "
              f"p95 {lat['p95']:.0f} ms (goal <= {2 * result['forward_b1_ms'] + 300:.0f}), max {lat['max']:.0f} ms; "
              f"output {result['output_fps']:.2f} fps = {result['output_fps'] * result['forward_b1_ms'] / 1000:.2f}x "
              f"the batch-1 forward rate (goal >= 0.8); {result['frames_written']} written, "
              f"{result['frames_dropped']} dropped; live batch sizes {result['live_batches']}; RSS {result['rss_mib']['start']:.0f} -> "
              f"{result['rss_mib']['end']:.0f} MiB")
        for m in result["per_minute"]:
            print(f"  minute {m['minute']:>2}: p50 {m['latency_p50_ms']:6.0f} ms  p95 {m['latency_p95_ms']:6.0f} ms  "
                  f"frames {m['frames']:5d}  RSS {m['rss_mib'] or 0:.0f} MiB")
    results = with_machine({"runs": runs, "workload": {
        "stream": "640x360 H.264 MPEG-TS over TCP loopback, served with PyAV", "fps": args.fps, "minutes": args.minutes,
        "max_batch": args.batch_size, "max_latency_s": args.max_latency, "device": args.device,
        "threads": budget.describe()}})
    save_results(results, args.out, f"{results['date'][:10]}-live-latency-{args.minutes:g}min.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

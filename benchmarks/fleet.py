"""``streamseg fleet`` with 1 vs 2 (or more) workers on the same live synthetic cameras, side by side in one run.

    python -m benchmarks.fleet [--sources 8] [--workers 1,2] [--size 320x180] [--fps 10] [--seconds 30]
                               [--model DIR] [--cpus N] [--busy] [--out benchmarks/results]

The cameras are live MPEG-TS streams served by PyAV from this process
(``streamseg.testing.streams``); each row runs the fleet's driver (``streamseg.cluster.fleet.Fleet``, the
code behind the command) on a fresh local Ray, with the machine's CPUs split evenly between the
workers (``--cpus``, default all: 1 worker x 2 CPUs vs 2 workers x 1 CPU on this machine), waits
until every source is recording, then measures a window of ``--seconds``: frames written per
second over the fleet, frames dropped (live sources drop the oldest when the model falls
behind), and each source's p95 capture-to-output latency. ``--busy`` repeats every row beside a
busy process (one core spinning), as a shared machine would be.

On a GPU cluster, the same script, sized up (``--ray auto`` joins the cluster)::

    python -m benchmarks.fleet --sources 64 --workers 1,2,4,8 --gpus-per-worker 1 --cpus 8 \\
        --size 1280x720 --fps 25 --seconds 120 --model nvidia/segformer-b0-finetuned-ade-512-512 --ray auto
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import save_results, with_machine

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "sample_media" / "demo-segformer"


def measure(urls: list[str], *, workers: int, cpus: float, gpus: float, model: str, seconds: float,
            ray_address: str | None, warmup_timeout: float = 180.0) -> dict:
    """One row: a fleet of ``workers`` on ``urls``; figures over a window of ``seconds`` once all record."""
    import threading

    from streamseg.cluster.fleet import Fleet
    from streamseg.cluster.fleet_plan import FleetConfig
    from streamseg.config import ModelConfig, OutputConfig

    with tempfile.TemporaryDirectory(prefix="streamseg-fleet-bench-") as tmp:
        config = FleetConfig(sources=tuple(urls), outdir=Path(tmp) / "out", workers=workers,
                             cpus_per_worker=cpus / workers, gpus_per_worker=gpus, ray_address=ray_address,
                             model=ModelConfig(name=model, device="cuda" if gpus else "cpu"), batch_size=8,
                             outputs=OutputConfig(output=Path("rec.mp4"), segment_time=60.0))
        t_start = time.monotonic()
        with Fleet(config, on_event=lambda text: print(f"  {text}", flush=True)) as fleet:
            fleet.open()
            runner = threading.Thread(target=fleet.run, daemon=True)
            runner.start()

            def rows() -> dict[str, dict]:
                return {s["source"]: s for s in fleet.snapshot()["sources"]}

            deadline = time.monotonic() + warmup_timeout
            while time.monotonic() < deadline and not all(r["frames_written"] > 0 for r in rows().values()):
                time.sleep(0.5)
            ready = time.monotonic() - t_start
            time.sleep(3.0)  # past the first batches
            first, t1 = rows(), time.monotonic()
            time.sleep(seconds)
            last, t2 = rows(), time.monotonic()
            fleet.request_stop()
            runner.join(timeout=120)
        window = t2 - t1
        written = sum(last[n]["frames_written"] - first[n]["frames_written"] for n in last)
        read = sum(last[n]["frames_read"] - first[n]["frames_read"] for n in last)
        dropped = sum(last[n]["frames_dropped"] - first[n]["frames_dropped"] for n in last)
        p95 = [r["latency_ms"]["p95"] for r in last.values() if r["frames_written"]]
        return {"workers": workers, "cpus_per_worker": cpus / workers, "gpus_per_worker": gpus,
                "seconds_to_all_recording": round(ready, 1), "window_s": round(window, 1),
                "frames_out_per_s": round(written / window, 2), "frames_read_per_s": round(read / window, 2),
                "dropped_fraction": round(dropped / read, 3) if read else None,
                "p95_latency_ms_median": round(statistics.median(p95), 1) if p95 else None,
                "p95_latency_ms_max": round(max(p95), 1) if p95 else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=int, default=8)
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4")
    p.add_argument("--size", default="320x180", help="the cameras' WxH")
    p.add_argument("--fps", type=float, default=10.0, help="each camera's frame rate")
    p.add_argument("--seconds", type=float, default=30.0, help="the measured window per row")
    p.add_argument("--model", default=str(DEMO_MODEL), help="model id or folder (default: the offline demo model)")
    p.add_argument("--cpus", type=float, default=float(os.cpu_count() or 1), help="CPUs split between the workers")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--ray", metavar="ADDRESS", help="join this Ray cluster (default: a local Ray per row)")
    p.add_argument("--busy", action="store_true", help="also run every row beside a busy process")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throw-away local Ray per row
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    from streamseg.testing.streams import SyntheticStreams

    width, height = (int(v) for v in args.size.lower().split("x"))
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    with SyntheticStreams(args.sources, width=width, height=height, fps=args.fps) as cams:
        for load in (("idle", "busy") if args.busy else ("idle",)):
            busy = None
            if load == "busy":
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for workers in counts:
                    print(f"{workers} worker(s), {load}:", flush=True)
                    row = measure(cams.urls, workers=workers, cpus=args.cpus, gpus=args.gpus_per_worker,
                                  model=args.model, seconds=args.seconds, ray_address=args.ray)
                    rows.append({**row, "load": load})
                    print(f"  {row}", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    by = {(r["load"], r["workers"]): r for r in rows}
    ratios = {}
    for load in {r["load"] for r in rows}:
        base = by.get((load, counts[0]))
        for workers in counts[1:]:
            row = by.get((load, workers))
            if base and row and base["frames_out_per_s"]:
                ratios[f"{load}: {workers} vs {counts[0]} workers, frames out/s"] = round(
                    row["frames_out_per_s"] / base["frames_out_per_s"], 2)
    results = with_machine({"benchmark": "fleet", "sources": args.sources, "size": args.size, "fps": args.fps,
                            "offered_frames_per_s": args.sources * args.fps, "model": args.model,
                            "rows": rows, "ratios": ratios})
    print("\n| load | workers | CPUs each | frames out/s | read/s | dropped | p95 latency (median / max) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['workers']} | {r['cpus_per_worker']:g} | {r['frames_out_per_s']} | "
              f"{r['frames_read_per_s']} | {r['dropped_fraction']} | {r['p95_latency_ms_median']} / "
              f"{r['p95_latency_ms_max']} ms |")
    for name, value in ratios.items():
        print(f"{name}: {value}")
    stamp = time.strftime("%Y-%m-%d")
    save_results(results, args.out, f"{stamp}-fleet-cpu-{args.sources}x{args.size}.json" if not args.gpus_per_worker
                 else f"{stamp}-fleet-gpu-{args.sources}x{args.size}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

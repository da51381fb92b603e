"""Point tracking's memory over a long stream: a pruned streaming session against an unpruned one.

    python -m benchmarks.session_memory [--frames 3000] [--unpruned-frames 1000] [--objects 2]

A tiny SAM 2 video model (the tests' 128x128 model, random weights) follows ``--objects`` objects
through a synthetic street, one frame at a time as a live run feeds it. At frames 100, 1,000 and
3,000 it records the session's tensor bytes (frames, outputs, clicks, cached features) and the
process's RSS. streamseg prunes the session to what the model reads next; the unpruned session
(what the model's own streaming session does) keeps every frame and output, so it grows without
bound: an hour of 25 frames/s is 90,000 frames.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import save_results, with_machine

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = (100, 1000, 3000, 10000)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def follow(model: str, frames: int, objects: int, prune: bool) -> list[dict]:
    import numpy as np

    from streamseg.config import ModelConfig
    from streamseg.frames import Frame
    from streamseg.models.heads.point_tracking import session_bytes
    from streamseg.models.segmenter import Segmenter
    from streamseg.testing.scenes import StreetScene

    points = tuple(((k + 0.5) * 160 / objects, 48.0) for k in range(objects))
    seg = Segmenter.load(ModelConfig(name=model, device="cpu", points=points))
    seg.head.prune = prune
    scene = StreetScene(5, 160, 96)
    rows, t0 = [], time.perf_counter()
    for k in range(frames):
        image = scene.render(k % 500)[0]
        seg.segment([Frame(image=np.ascontiguousarray(image), index=k)])
        if k + 1 in CHECKPOINTS:
            gc.collect()
            session = seg.head._streams[0].session
            rows.append({"pruned": prune, "frame": k + 1, "session_mib": round(session_bytes(session) / 2**20, 3),
                         "rss_mib": round(rss_mib(), 1), "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.session_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--unpruned-frames", type=int, default=1000)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import save_tiny_sam2  # the tests' model: one definition

    with tempfile.TemporaryDirectory() as tmp:
        model = str(save_tiny_sam2(Path(tmp) / "sam2"))
        rows = follow(model, args.frames, args.objects, prune=True)
        rows += follow(model, args.unpruned_frames, args.objects, prune=False)
    pruned = {r["frame"]: r for r in rows if r["pruned"]}
    print("\n| session | frame | session tensors MiB | process RSS MiB |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {'pruned' if r['pruned'] else 'unpruned'} | {r['frame']:,} | {r['session_mib']} | {r['rss_mib']} |")
    last = max(pruned)
    if 100 in pruned:
        print(f"pruned: frame {last:,} / frame 100 session bytes: {pruned[last]['session_mib'] / pruned[100]['session_mib']:.2f}")
    results = with_machine({"benchmark": "session_memory", "model": "tiny SAM 2 video (tests), random weights",
                            "objects": args.objects, "rows": rows})
    save_results(results, args.out, f"{time.strftime('%Y-%m-%d')}-session-memory.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
